"""`llmlab models verify` throughput against `sha256sum`; `import` of a 1 GiB model (hardlink, copy, cp).

All measured in the same run on the same files, in a temp dir on the filesystem of --dir (default /tmp),
deleted at the end. The files are read once before timing so every contender hashes from the page cache;
each import run starts after `sync`, so no run pays for the write-back of the one before. Each figure is the
best of --runs. Goals (issue 4): verify's hashing >= 0.8x sha256sum per core, and faster than a single
sha256sum when the files can be hashed in parallel; import near-instant with hardlinks, bounded by one copy
without.
Usage: .venv/bin/python benchmarks/models_verify.py [--size-mib 1024] [--shards 4] [--runs 3] [--dir PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llmlab.models.hashing import default_workers, hash_file
from llmlab.models.store import ModelStore

BLOCK = os.urandom(16 << 20)  # random, so nothing on the way can compress or deduplicate it


def make_model(directory: Path, size_mib: int, shards: int) -> list[Path]:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    files = []
    for i in range(shards):
        path = directory / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        with open(path, "wb") as handle:
            for j in range(size_mib // shards // 16):  # every 16 MiB block differs, so no blob is shared
                handle.write(i.to_bytes(8, "little") + j.to_bytes(8, "little") + BLOCK[16:])
        files.append(path)
    return files


def best(runs: int, action: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="model size (default 1024 = 1 GiB)")
    parser.add_argument("--shards", type=int, default=4, help="weight files the model is split into")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp dir goes"
    )
    args = parser.parse_args()
    cores = default_workers()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="llmlab-bench-") as tmp:
        root = Path(tmp)
        source = root / "model"
        shards = make_model(source, args.size_mib, args.shards)
        nbytes = sum(p.stat().st_size for p in shards)
        mib = nbytes / (1 << 20)
        for path in shards:  # warm the page cache
            hash_file(path)

        # --- verify throughput ---------------------------------------------------------------------------
        names = [str(p) for p in shards]
        t_sum = best(
            args.runs, lambda: subprocess.run(["sha256sum", *names], check=True, capture_output=True)
        )
        xargs = ["xargs", "-P", str(cores), "-n", "1", "sha256sum"]
        listing = "\n".join(names)
        t_sum_par = best(
            args.runs,
            lambda: subprocess.run(xargs, input=listing, text=True, check=True, capture_output=True),
        )
        openssl = shutil.which("openssl")  # uses the CPU's SHA extensions, which coreutils' sha256sum may not
        ssl_command = [openssl, "dgst", "-sha256", *names]
        t_ssl = (
            best(args.runs, lambda: subprocess.run(ssl_command, check=True, capture_output=True))
            if openssl
            else None
        )
        t_py_one = best(args.runs, lambda: [hash_file(p) for p in shards])
        store = ModelStore(root / "store", group=None)
        store.import_model(source, "bench/model", link="hardlink")
        t_verify = best(args.runs, lambda: store.verify("bench/model"))
        t_verify_one = best(args.runs, lambda: store.verify("bench/model", workers=1))

        # --- import of the model --------------------------------------------------------------------------
        def fresh() -> None:
            shutil.rmtree(root / "store", ignore_errors=True)
            shutil.rmtree(root / "cp", ignore_errors=True)
            os.sync()  # each run starts without a write-back backlog from the one before

        t_cp = best(args.runs, lambda: shutil.copytree(source, root / "cp"), fresh)
        cp_command = ["cp", "-r", str(source), str(root / "cp")]
        t_cp_cli = best(args.runs, lambda: subprocess.run(cp_command, check=True), fresh)
        t_hardlink = best(
            args.runs, lambda: store.import_model(source, "bench/model", link="hardlink"), fresh
        )
        copies = []
        t_copy = best(
            args.runs, lambda: copies.append(store.add_local(source, "bench/model", link="copy")), fresh
        )
        assert copies[-1].bytes_copied >= nbytes, copies[-1]  # really copied, not deduplicated
        t_noop = best(args.runs, lambda: store.import_model(source, "bench/model", link="copy"))

    rate = lambda seconds: f"{mib / seconds:8.0f} MiB/s"  # noqa: E731
    print(
        f"{args.size_mib} MiB in {args.shards} files, {cores} cores, best of {args.runs}, from page cache\n"
    )
    print("hashing (verify)")
    print(f"  sha256sum, one process                 {t_sum:7.3f} s {rate(t_sum)}   (baseline)")
    print(f"  sha256sum, {cores} processes (xargs -P)     {t_sum_par:7.3f} s {rate(t_sum_par)}")
    if t_ssl:
        print(f"  openssl dgst -sha256, one process      {t_ssl:7.3f} s {rate(t_ssl)}")
    print(f"  llmlab hash_file, one thread           {t_py_one:7.3f} s {rate(t_py_one)}")
    print(f"  llmlab models verify, 1 worker         {t_verify_one:7.3f} s {rate(t_verify_one)}")
    print(f"  llmlab models verify, {cores} workers        {t_verify:7.3f} s {rate(t_verify)}")
    print(f"  ratio per core (sha256sum / 1 thread):     {t_sum / t_py_one:5.2f}x   goal >= 0.8x")
    print(f"  ratio parallel (sha256sum / verify):       {t_sum / t_verify:5.2f}x   goal > 1x")
    print(f"  ratio vs parallel sha256sum:               {t_sum_par / t_verify:5.2f}x")
    if t_ssl:
        print(f"  ratio per core vs openssl (same SHA code):  {t_ssl / t_py_one:5.2f}x")
    print("\nimport of the model (same filesystem)")
    print(f"  cp -r                                  {t_cp_cli:7.3f} s")
    print(f"  shutil.copytree                        {t_cp:7.3f} s")
    print(
        f"  llmlab models import --hardlink        {t_hardlink:7.3f} s   (hashes every byte, copies no byte)"
    )
    print(f"  llmlab models import (copy)            {t_copy:7.3f} s   (hashes, then copies)")
    print(f"  llmlab models import, already present  {t_noop:7.3f} s   (hashes, finds it unchanged)")
    print(f"  ratio hardlink import / cp -r:             {t_hardlink / t_cp_cli:5.2f}x")
    print(f"  ratio copy import / cp -r:                 {t_copy / t_cp_cli:5.2f}x")
    print(f"  ratio copy import / (cp -r + verify):      {t_copy / (t_cp_cli + t_verify):5.2f}x")


if __name__ == "__main__":
    sys.exit(main())
