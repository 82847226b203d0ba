"""The answers of the lab python's slow commands, reused while the lab environment is unchanged.

The probe imports torch in the lab python (seconds) and `pip check` reads every installed distribution (about
a second); their answers change only when what the environment holds changes. So each is kept under a key made
of what it depends on: the lab python binary, the distributions installed next to it (a `pip install`,
upgrade or uninstall adds, renames or removes a `*.dist-info` directory), the command itself (the probe's
source and arguments), the NVIDIA driver and the GPUs the process may see. An environment whose site-packages
cannot be listed is asked every time. GPU health is not cached: the NVML checks read it on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlab.atomic import atomic_write
from llmlab.verify.sources import CommandResult

DRIVER_VERSION = Path("/proc/driver/nvidia/version")
KEPT = 8  # answers kept: the few commands verify asks, for the last environment or two
_INSTALLED = (".dist-info", ".egg-info", ".egg-link", ".pth")


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmlab" / "lab-answers.json"


def _installed(python: Path) -> list[str] | None:
    """The names of what is installed in the python's environment (`PREFIX/lib/python*/site-packages`)."""
    site_dirs = sorted((python.parent.parent / "lib").glob("python3*/site-packages"))
    if not site_dirs:
        return None
    try:
        return sorted(
            f"{site.parent.name}/{entry.name}"
            for site in site_dirs
            for entry in site.iterdir()
            if entry.name.endswith(_INSTALLED)
        )
    except OSError:
        return None


@dataclass(frozen=True)
class LabAnswers:
    """Answers on disk: `real_sources` gives verify one; a test gives its own."""

    path: Path = field(default_factory=cache_path)
    driver: Path = DRIVER_VERSION

    def key(self, argv: Sequence[str]) -> str | None:
        """A digest of all the command's answer depends on; None when the environment cannot be listed."""
        binary = Path(argv[0])
        installed = _installed(binary)
        if installed is None:
            return None
        try:
            resolved = binary.resolve()
            stat = resolved.stat()
        except OSError:
            return None
        driver_text = ""
        with suppress(OSError):
            driver_text = self.driver.read_text(encoding="utf-8", errors="replace")
        parts = {
            "python": [str(resolved), stat.st_size, stat.st_mtime_ns],
            "installed": installed,
            "argv": list(argv[1:]),
            "driver": driver_text,
            "devices": sorted(path.name for path in Path("/dev").glob("nvidia[0-9]*")),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()

    def _read(self) -> dict[str, Any]:
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return stored if isinstance(stored, dict) else {}

    def load(self, key: str) -> CommandResult | None:
        """The answer kept under `key`, or None (no cache, not kept, an unreadable file)."""
        try:
            return CommandResult(**self._read()[key])
        except (KeyError, TypeError):
            return None

    def store(self, key: str, result: CommandResult) -> None:
        """Keep the answer for later runs; a cache that cannot be written costs the next run the command."""
        kept = {k: v for k, v in self._read().items() if k != key}
        kept[key] = {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
        with suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(dict(list(kept.items())[-KEPT:])), mode=0o600)
