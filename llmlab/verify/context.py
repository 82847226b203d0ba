"""What a check gets: the host config, the run's level, the data sources (real ones, or a test's fakes)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llmlab.config import HostConfig
from llmlab.verify.lab_answers import LabAnswers
from llmlab.verify.nvml import NvmlReader, NvmlSnapshot, PynvmlReader
from llmlab.verify.settings import VerifySettings, verify_settings
from llmlab.verify.sources import (
    CommandRunner,
    Docker,
    DockerSdk,
    Filesystem,
    Host,
    LocalFilesystem,
    LocalHost,
    LocalNetwork,
    Network,
    SubprocessRunner,
)

T = TypeVar("T")


@dataclass
class Sources:
    runner: CommandRunner
    fs: Filesystem
    host: Host
    network: Network
    docker: Docker
    nvml: NvmlReader
    # Collaborators from sibling packages, resolved only when a check needs them (their imports are heavy).
    # A provider returning None means "not available in this build", and the check says so.
    models: Callable[[], Any] = lambda: None  # -> llmlab.models.store.ModelStore
    smoke: Callable[[], Callable[..., dict] | None] = lambda: None  # -> llmlab.train.smoke.run_smoke
    bench: Any = None  # llmlab.verify.bench.TorchBench (created on first use) or a test's fake
    lab_answers: LabAnswers | None = None  # the lab python's kept answers; None: ask on every run


def real_sources(config: HostConfig) -> Sources:
    runner = SubprocessRunner()
    return Sources(
        runner=runner,
        fs=LocalFilesystem(),
        host=LocalHost(runner),
        network=LocalNetwork(),
        docker=DockerSdk(),
        nvml=PynvmlReader(),
        models=lambda: _model_store(config),
        smoke=_training_smoke,
        lab_answers=LabAnswers(),
    )


def _model_store(config: HostConfig) -> Any:
    try:
        from llmlab.models.store import open_store  # issue 4's package; absent until it lands
    except ImportError:
        return None
    return open_store(config)


def _training_smoke() -> Callable[..., dict] | None:
    try:
        from llmlab.train.smoke import run_smoke  # issue 5's package; absent until it lands
    except ImportError:
        return None
    return run_smoke


@dataclass
class VerifyContext:
    config: HostConfig
    sources: Sources
    level: int = 1
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def settings(self) -> VerifySettings:
        """The validated `verify:` section (raises ConfigError naming the file of a bad key)."""
        return self.once("settings", lambda: verify_settings(self.config))

    @property
    def timeout(self) -> float:
        return self.settings.thresholds.command_timeout_seconds

    def once(self, key: str, compute: Callable[[], T]) -> T:
        """Compute a shared reading once per run, even when parallel checks ask for it at the same time."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                try:
                    self._memo[key] = ("ok", compute())
                except Exception as exc:
                    self._memo[key] = ("error", exc)
            kind, value = self._memo[key]
        if kind == "error":
            raise value
        return value

    def nvml(self) -> NvmlSnapshot:
        """The GPUs as NVML sees them; raises NvmlUnavailable."""
        return self.once("nvml", self.sources.nvml.snapshot)
