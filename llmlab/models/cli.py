"""`llmlab models`: the shared model store's verbs. At import time only the standard library and llmlab.config
load; huggingface_hub, rich and the store code load inside the handler.

Every verb takes --json and then prints one JSON object with `schema: llmlab.models.<verb>/1` and `ok`
(docs/models.md). Exit codes: 0 success, 1 the operation failed or found damage, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmlab.config import ConfigError, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
JSON_VERSION = 1

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def size_arg(text: str) -> int:
    """'500G', '1.5T', '800M', '1048576' -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 500G, 1.5T or 800M")
    return int(float(match[1]) * _UNITS[match[2]])


def age_arg(text: str) -> float:
    """'30d', '12h', '90m', '3600s' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 30d, 12h, 90m or 3600s")
    return float(match[1]) * _SECONDS[match[2]]


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models",
        help="the shared model store (Hugging Face cache layout): pull, import, verify, gc, sync, resolve",
        description="Manage the host's shared model store. Exit 0: success; 1: failed or damage found; "
        "2: bad arguments or config. With HF_HUB_OFFLINE=1 HF_HUB_CACHE=<store>, plain transformers loads "
        "every stored model by name.",
    )
    verbs = models.add_subparsers(dest="models_verb", metavar="VERB", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", type=Path, help="the store directory (default: model_store of the config)")
    common.add_argument(
        "--json", action="store_true", help="print the versioned JSON result (docs/models.md)"
    )
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    def verb(
        name: str, help_text: str, func: Callable, *extra: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, parents=[common, *extra], help=help_text, description=help_text)
        parser.set_defaults(handler=_handler(name, func), config_error_exit=EXIT_USAGE)
        return parser

    token = argparse.ArgumentParser(add_help=False)
    token.add_argument(
        "--token-file",
        type=Path,
        default=Path("/etc/llmlab/hf_token"),
        help="file with a Hub token, mode 600 (default /etc/llmlab/hf_token if present; else $HF_TOKEN)",
    )

    p = verb("pull", "download NAME[@REVISION] from the Hub into the store", _pull, token)
    p.add_argument("--endpoint", help="Hub or mirror URL (default: $HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("spec", metavar="NAME[@REVISION]")
    p.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="file pattern to download (repeatable); default: safetensors, json, tokenizer files",
    )

    p = verb("import", "add a model directory or tarball (e.g. from `export`) to the store", _import)
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--name", help="ORG/NAME to store it as (a tarball from `export` knows its name)")
    p.add_argument("--revision", help="branch/tag to record (default main) or a 40-hex commit id")
    p.add_argument(
        "--hardlink",
        action="store_true",
        help="link files instead of copying them (same filesystem only); the source files become "
        "read-only store blobs and must never be modified in place",
    )

    p = verb("export", "write NAME[@REVISION] with its manifest to a tarball", _export)
    p.add_argument("spec", metavar="NAME[@REVISION]")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help=".tar, or .tar.gz/.tgz")

    verb("list", "models in the store: revision, size, last used, pinned", _list)
    verb("du", "store totals: models, partial downloads, orphaned blobs, free space", _du)

    p = verb("verify", "re-hash models against their manifests; name corrupt and missing files", _verify)
    p.add_argument("specs", nargs="*", metavar="NAME[@REVISION]")
    p.add_argument("--all", action="store_true", help="every model in the store")
    p.add_argument("--workers", type=int, default=None, help="files hashed in parallel (default: cores)")
    p.add_argument("--quick", action="store_true", help="compare file sizes only, hash nothing")

    p = verb("rm", "remove a model (or one revision with NAME@REVISION)", _rm)
    p.add_argument("spec", metavar="NAME[@REVISION]")
    p.add_argument("--force", action="store_true", help="remove it even if it is pinned")

    p = verb("gc", "remove partial downloads, orphaned blobs, and LRU unpinned models over the limits", _gc)
    p.add_argument("--max-size", type=size_arg, metavar="SIZE", help="evict until the store is under this")
    p.add_argument("--max-age", type=age_arg, metavar="AGE", help="evict models unused for longer than this")
    p.add_argument(
        "--partial-age",
        type=age_arg,
        default=None,
        metavar="AGE",
        help="temp work of other hosts (shared store) counts as abandoned after this long (default 1h)",
    )
    p.add_argument("--dry-run", action="store_true", help="report what would be removed")

    for name, pinned in (("pin", True), ("unpin", False)):
        effect = "protect it from" if pinned else "expose it to"
        p = verb(name, f"{name} a model ({effect} gc and rm)", _pinner(pinned))
        p.add_argument("spec", metavar="NAME")

    p = verb(
        "resolve",
        "the commit, snapshot and transfer names (ORG--NAME--COMMIT[.tar]) of each NAME[@REVISION] held",
        _resolve,
    )
    p.add_argument("specs", nargs="+", metavar="NAME[@REVISION]")

    p = verb("missing", "the models of a `resolve` result whose commit this store lacks", _missing)
    p.add_argument(
        "--from", dest="source", required=True, metavar="FILE", help="the `resolve` JSON; - reads stdin"
    )

    p = verb(
        "sync", "make the store hold exactly the models of MANIFEST.yaml; report what changed", _sync, token
    )
    p.add_argument("manifest", type=Path, metavar="MANIFEST.yaml")


def _handler(verb: str, func: Callable) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from llmlab.models.manifest import ManifestError
        from llmlab.models.store import ModelNotFound, StoreError, open_store

        store = open_store(load_config(args.config), args.store)
        try:
            payload, ok, text = func(store, args)
        except ConfigError:
            raise  # bad input file: reported by llmlab.cli, exit 2
        except (StoreError, ModelNotFound, ManifestError, ValueError, OSError) as exc:
            payload, ok, text = {"error": str(exc)}, False, f"llmlab models {verb}: {exc}"
        if args.json:
            document = {"schema": f"llmlab.models.{verb}/{JSON_VERSION}", "ok": ok, **payload}
            print(json.dumps(document, indent=2, default=str))
        elif text:
            _print(text, sys.stdout if ok else sys.stderr)
        return EXIT_OK if ok else EXIT_FAILED

    return run


def _print(text: Any, stream: Any) -> None:
    from rich.console import Console

    Console(file=stream, soft_wrap=True).print(text, highlight=False)


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _added(result: Any, verb: str) -> tuple[dict, bool, str]:
    state = "added" if result.changed else "already present, unchanged"
    return result.to_dict(), True, f"{verb} {result.name} {result.commit[:12]}: {state}\n{result.path}"


def _pull(store, args) -> tuple[dict, bool, str]:
    from llmlab.models.pull import pull, read_token

    result = pull(store, args.spec, args.endpoint, read_token(args.token_file), args.include, _progress(args))
    return _added(result, "pull")


def _import(store, args) -> tuple[dict, bool, str]:
    link = "hardlink" if args.hardlink else "copy"
    result = store.add_local(args.path, args.name, args.revision, link=link, progress=_progress(args))
    return _added(result, "import")


def _export(store, args) -> tuple[dict, bool, str]:
    from llmlab.models.ingest import export_model

    path = export_model(store, args.spec, args.output, _progress(args))
    manifest = store.manifest(args.spec)
    payload = {
        "name": manifest.name,
        "commit": manifest.commit,
        "output": str(path),
        "bytes": path.stat().st_size,
    }
    return payload, True, f"exported {manifest.name} {manifest.commit[:12]} to {path}"


def _list(store, args) -> tuple[dict, bool, Any]:
    from rich.table import Table

    models = store.list_models()
    table = Table("name", "revision", "commit", "size", "last used", "pinned", box=None)
    for m in models:
        row = m.to_dict()
        table.add_row(
            m.name,
            ",".join(m.refs) or "-",
            m.commit[:12],
            _gib(m.size),
            row["last_used"],
            "yes" if m.pinned else "",
        )
    return {"store": str(store.root), "models": [m.to_dict() for m in models]}, True, table


def _du(store, args) -> tuple[dict, bool, str]:
    from llmlab.models.gc import usage

    u = usage(store)
    text = (
        f"{store.root}: {u.models} models ({u.revisions} revisions) {_gib(u.model_bytes)}; "
        f"partial {_gib(u.partial_bytes)}; orphaned blobs {_gib(u.orphan_bytes)}; "
        f"not managed by llmlab {_gib(u.foreign_bytes)}; "
        f"total {_gib(u.total_bytes)}; free {_gib(u.free_bytes)}"
    )
    return {"store": str(store.root), **u.to_dict()}, True, text


def _verify(store, args) -> tuple[dict, bool, str]:
    from llmlab.models.store import ModelNotFound

    if args.all == bool(args.specs):
        raise ValueError("name the models to verify, or pass --all (not both)")
    specs = [f"{m.name}@{m.commit}" for m in store.list_models()] if args.all else args.specs
    results, lines = [], []
    for spec in specs:
        try:
            r = store.verify(spec, workers=args.workers, progress=_progress(args), quick=args.quick)
        except ModelNotFound as exc:
            results.append({"name": spec, "ok": False, "error": str(exc)})
            lines.append(f"MISSING  {spec}: {exc}")
            continue
        results.append(r.to_dict())
        state = "OK      " if r.ok else "DAMAGED "
        problems = f": {'; '.join(r.problems)}" if r.problems else ""
        speed = f"{_gib(r.bytes_hashed)} at {r.mib_per_second:.0f} MiB/s"
        lines.append(f"{state} {r.name} {r.commit[:12]} {speed}{problems}")
    ok = all(r["ok"] for r in results)
    return {"models": results}, ok, "\n".join(lines) or "the store holds no models"


def _rm(store, args) -> tuple[dict, bool, str]:
    name = args.spec.partition("@")[0]
    commits = store.remove(args.spec, force=args.force)
    return {"name": name, "removed": commits}, True, f"removed {name}: {', '.join(c[:12] for c in commits)}"


def _gc(store, args) -> tuple[dict, bool, str]:
    from llmlab.models.gc import DEFAULT_PARTIAL_AGE, collect

    partial_age = DEFAULT_PARTIAL_AGE if args.partial_age is None else args.partial_age
    report = collect(store, args.max_size, args.max_age, partial_age, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    text = (
        f"{verb}: {len(report.partial)} partial, {len(report.orphan_blobs)} orphaned blobs, "
        f"{len(report.evicted)} models ({', '.join(report.evicted) or 'none'}); "
        f"store {_gib(report.bytes_before)} -> {_gib(report.bytes_after)}"
        + (f"; busy, skipped: {', '.join(report.busy)}" if report.busy else "")
    )
    return report.to_dict(), True, text


def _pinner(pinned: bool) -> Callable:
    def run(store, args) -> tuple[dict, bool, str]:
        changed = store.set_pinned(args.spec, pinned)
        state = "pinned" if pinned else "unpinned"
        return {"name": args.spec, "pinned": pinned, "changed": changed}, True, f"{args.spec}: {state}"

    return run


def _resolve(store, args) -> tuple[dict, bool, str]:
    from llmlab.models.distribute import resolve

    plan = resolve(store, args.specs)
    lines = [f"{m['spec']}: {m['commit']} {m['path']}" for m in plan["models"]]
    lines += [f"{spec}: not in {store.root}" for spec in plan["missing"]]
    return plan, True, "\n".join(lines)


def _missing(store, args) -> tuple[dict, bool, str]:
    from llmlab.models.distribute import missing, read_wanted

    result = missing(store, read_wanted(args.source))
    lines = [f"{m['name']}@{m['commit']}" for m in result["models"]]
    return result, True, "\n".join(lines) or f"{store.root} holds every model"


def _sync(store, args) -> tuple[dict, bool, str]:
    from llmlab.models.pull import read_token
    from llmlab.models.sync import load_sync_manifest, sync

    manifest = load_sync_manifest(args.manifest)
    report = sync(store, manifest, read_token(args.token_file), _progress(args))
    lines = [f"{a.action:9} {a.name}" + (f": {a.detail}" if a.detail else "") for a in report.actions]
    payload = report.to_dict()
    payload.pop("schema")
    return payload, report.ok, "\n".join(lines) + f"\nchanged: {str(report.changed).lower()}"
