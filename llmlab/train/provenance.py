"""What it takes to reproduce a run: the data's hashes, the base model's commit, the software and the host.

`metrics.json` carries this as `provenance`; a later run that matches it on every line trained on the same
bytes, from the same weights, with the same libraries.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import socket
from pathlib import Path
from typing import Any

from llmlab.train.schema import TrainConfig

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "llmlab")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed versions (None where a package is absent), python's included."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cuda_versions() -> dict[str, str | None]:
    """The CUDA runtime torch was built with and the driver NVML reports (None where NVML is unavailable)."""
    import torch

    return {"runtime": torch.version.cuda, "driver": _driver_version()}


def _driver_version() -> str | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
    finally:
        pynvml.nvmlShutdown()
    return version.decode() if isinstance(version, bytes) else version


def data_hashes(cfg: TrainConfig) -> dict[str, str]:
    """path -> sha256 of every file of `datasets` and `eval_datasets`."""
    return {str(spec.path): sha256_file(spec.path) for spec in (*cfg.datasets, *cfg.eval_datasets)}


def provenance(cfg: TrainConfig, model_path: Path, store_commit: str | None, device: str) -> dict[str, Any]:
    return {
        "data_files": data_hashes(cfg),
        "base_model": {"name": cfg.base_model, "path": str(model_path), "store_commit": store_commit},
        "versions": package_versions(),
        "cuda": cuda_versions() if device == "cuda" else None,
        "hostname": socket.gethostname(),
        "config": cfg.model_dump(mode="json"),
    }
