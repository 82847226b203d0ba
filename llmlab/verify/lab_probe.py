"""Run by the lab environment's python (`verify.lab_python`): report torch and package versions as JSON.

Standard library and torch only, because the lab environment need not have llmlab installed. Running it in a
separate process also keeps the torch import (seconds) off verify's process, which runs other checks.
Usage: python lab_probe.py PACKAGE...
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from typing import Any


def torch_facts() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    facts: dict[str, Any] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "device_count": torch.cuda.device_count() if cuda else 0,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": None,
        "bf16": torch.cuda.is_bf16_supported() if cuda else None,
    }
    if cuda:
        try:
            facts["nccl"] = ".".join(str(part) for part in torch.cuda.nccl.version())
        except (AttributeError, RuntimeError):
            facts["nccl"] = None  # a build without NCCL
    return facts


def main(packages: list[str]) -> None:
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "packages": {},
        "torch": None,
        "torch_error": None,
    }
    for name in packages:
        try:
            report["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            report["packages"][name] = None
    try:
        report["torch"] = torch_facts()
    except Exception as exc:  # any import failure (missing libcudart, ABI mismatch) is the finding itself
        report["torch_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
