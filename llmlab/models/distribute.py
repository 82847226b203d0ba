"""Planning a distribution between stores: which commit each model is in a seed store, and which of those a
host's store lacks. Both only read their store; the copying is left to the caller (the model_distribution
role, over the Ansible connection), which acts on these lists instead of computing them itself.

A model travels as `transfer_name(name, commit)`: an `export` tarball with `.tar`, a snapshot directory as is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from llmlab.config import ConfigError
from llmlab.models import layout
from llmlab.models.store import ModelNotFound, ModelStore


def resolve(store: ModelStore, specs: list[str]) -> dict[str, Any]:
    """Each NAME[@REVISION] that `store` holds, with its commit, snapshot path and transfer names; the specs
    it does not hold under `missing` (not an error: in check mode the seed store is not filled yet)."""
    models: list[dict[str, Any]] = []
    missing: list[str] = []
    for spec in specs:
        try:
            manifest = store.manifest(spec)  # read only: unlike store.resolve, last_used is not touched
        except ModelNotFound:
            missing.append(spec)
            continue
        transfer = layout.transfer_name(manifest.name, manifest.commit)
        models.append(
            {
                "spec": spec,
                "name": manifest.name,
                "commit": manifest.commit,
                "path": str(store.snapshot_dir(manifest.name, manifest.commit)),
                "tarball": f"{transfer}.tar",
                "directory": transfer,
            }
        )
    return {"store": str(store.root), "models": models, "missing": missing}


def missing(store: ModelStore, wanted: list[dict[str, Any]]) -> dict[str, Any]:
    """The entries of `wanted` (each with `name` and `commit`; other keys are kept) whose commit `store` does
    not hold, in their order."""
    lacking = [entry for entry in wanted if not _present(store, entry["name"], entry["commit"])]
    return {"store": str(store.root), "models": lacking}


def _present(store: ModelStore, name: str, commit: str) -> bool:
    try:
        store.manifest(f"{name}@{commit}")
    except ModelNotFound:
        return False
    return True


def read_wanted(source: str) -> list[dict[str, Any]]:
    """The `models` list of a JSON document (a `resolve` result) from a file, or stdin for `-`."""
    where = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        document = json.loads(text)
    except OSError as exc:
        raise ConfigError(f"--from {where}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--from {where}: not JSON: {exc}") from None
    entries = document.get("models") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"--from {where}: expected an object with a `models` list (a `resolve` result)")
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        commit = entry.get("commit") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(commit, str) or not layout.COMMIT_RE.fullmatch(commit):
            raise ConfigError(
                f"--from {where}: models[{index}]: {json.dumps(entry)} needs `name` and a 40-hex `commit`"
            )
    return entries
