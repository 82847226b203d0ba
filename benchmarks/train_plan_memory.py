"""How close is `llmlab plan`'s memory estimate to a real run? Planned vs measured peak memory on this CPU.

Each case trains a tiny random-init Llama for a few steps in its own `llmlab train` process and compares
the plan's total (weights + gradients + optimizer + activations, fp32, no GPU runtime overhead) with the
measured growth of the process's peak RSS from just before the model loads. Each case runs twice: with
glibc's default malloc, whose dynamic mmap threshold keeps freed activation buffers in the heap (RSS then
holds allocator slack, as a GPU's reserved memory does), and with MALLOC_MMAP_THRESHOLD_=65536, where
large buffers go back to the OS when freed and RSS follows live memory (a GPU's allocated memory).

With `--optimizers`, one case (full fine-tuning of the 512x4 model, where optimizer state is large) runs
once per optimizer that trains on a CPU, with MALLOC_MMAP_THRESHOLD_=65536; the optimizer's share is
checked as the measured difference to `sgd` (which keeps no state) against the plan's optimizer term.

    .venv/bin/python benchmarks/train_plan_memory.py [--quick | --optimizers]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from llmlab.train.optimizers import OPTIMIZERS
from llmlab.train.plan import architecture_from_config, estimate_memory, read_model_config
from llmlab.train.schema import validate_train_config
from llmlab.train.tiny import build_tiny_model

MIB = 1024**2
SENTENCE = "the quick brown fox jumps over a lazy dog while GPU servers train small models all day"
WORDS = SENTENCE.split(" ")


def write_dataset(path: Path, examples: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(examples):
            fh.write(json.dumps({"text": " ".join(rng.choices(WORDS, k=rng.randint(20, 60)))}) + "\n")
    return path


# Every optimizer of llmlab/train/optimizers.py, sgd first (the baseline): all run on a CPU, bitsandbytes'
# 8-bit states too, and its paged ones fall back to ordinary (unpaged) memory with a warning.
CPU_OPTIMIZERS = ("sgd", *(name for name in OPTIMIZERS if name != "sgd"))


def case_config(
    work: Path, hidden: int, layers: int, method: str, checkpointing: bool, optimizer: str = "adamw_torch"
) -> dict:
    model_dir = work / f"llama-{hidden}x{layers}"
    if not model_dir.exists():
        build_tiny_model(model_dir, "llama", hidden_size=hidden, num_layers=layers)
    data = work / "data.jsonl"
    if not data.exists():
        write_dataset(data, 64)
    return {
        "base_model": str(model_dir),
        "method": method,
        "datasets": [{"path": str(data), "format": "text"}],
        "sequence_len": 512,
        "micro_batch_size": 4,
        "max_steps": 2,  # optimizer states exist from step 1 on, so step 2 reaches the peak
        "gradient_checkpointing": checkpointing,
        "output_dir": str(work / "run"),
        "save_steps": 1000,
        "lora_dropout": 0.0,
        "optimizer": optimizer,
    }


def measured_mib(work: Path, config: dict, mmap_threshold: bool) -> float:
    """Peak RSS growth from just before the model loads, in a fresh `llmlab train` process."""
    config_path = work / "case.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.rmtree(config["output_dir"], ignore_errors=True)
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    run = subprocess.run(
        [sys.executable, "-m", "llmlab.cli", "train", str(config_path), "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    memory = json.loads(run.stdout)["memory"]
    return (memory["peak_rss_bytes"] - memory["rss_before_model_bytes"]) / MIB


def planned(config: dict):
    cfg = validate_train_config(config, "benchmark")
    arch = architecture_from_config(read_model_config(Path(config["base_model"])))
    return estimate_memory(arch, cfg, cfg.method, cfg.gradient_checkpointing, compute_bytes=4, overhead_gib=0)


def planned_mib(config: dict) -> float:
    return planned(config).total_gib * 1024


def compare_optimizers(work: Path) -> None:
    print("full fine-tuning, h512x4, no checkpointing, MALLOC_MMAP_THRESHOLD_=65536")
    header = ("optimizer", "planned", "measured", "error", "states planned", "measured - sgd")
    print("{:>18} {:>8} {:>9} {:>6} {:>15} {:>15}".format(*header))
    baseline = None
    for optimizer in CPU_OPTIMIZERS:
        config = case_config(work, 512, 4, "full", False, optimizer)
        estimate = planned(config)
        measured = measured_mib(work, config, mmap_threshold=True)
        baseline = measured if optimizer == "sgd" else baseline
        total = estimate.total_gib * 1024
        print(
            f"{optimizer:>18} {total:8.1f} {measured:9.1f} {(total - measured) / measured:+6.0%} "
            f"{estimate.optimizer_gib * 1024:15.1f} {measured - baseline:15.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the default tiny model and one larger one")
    parser.add_argument("--optimizers", action="store_true", help="one case per optimizer that runs on CPU")
    args = parser.parse_args()
    if args.optimizers:
        with tempfile.TemporaryDirectory() as tmp:
            compare_optimizers(Path(tmp))
        return
    sizes = [(64, 2), (512, 4)] if args.quick else [(64, 2), (256, 4), (512, 4), (768, 6)]
    header = ("model", "method", "ckpt", "planned", "RSS, glibc default", "RSS, mmap 64K")
    print("{:>9} {:>6} {:>4} {:>8} {:>19} {:>14}".format(*header))
    print(f"{'':>9} {'':>6} {'':>4} {'MiB':>8} {'MiB (error)':>19} {'MiB (error)':>14}")
    errors: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for hidden, layers in sizes:
            for method in ("full", "lora", "qlora"):
                for checkpointing in (False, True):
                    config = case_config(Path(tmp), hidden, layers, method, checkpointing)
                    planned = planned_mib(config)
                    cells = []
                    for mmap_threshold in (False, True):
                        measured = measured_mib(Path(tmp), config, mmap_threshold)
                        error = (planned - measured) / measured
                        errors[mmap_threshold].append(abs(error))
                        cells.append(f"{measured:7.1f} ({error:+4.0%})")
                    print(
                        f"{f'h{hidden}x{layers}':>9} {method:>6} {'yes' if checkpointing else 'no':>4} "
                        f"{planned:8.1f} {cells[0]:>19} {cells[1]:>14}",
                        flush=True,
                    )
    for mmap_threshold, label in ((False, "glibc default"), (True, "mmap threshold 64K")):
        values = errors[mmap_threshold]
        print(f"mean |error| vs RSS ({label}): {sum(values) / len(values):.0%}")


if __name__ == "__main__":
    main()
