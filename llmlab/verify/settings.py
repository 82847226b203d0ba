"""The `verify:` section of the host config: what this host is expected to be, and the thresholds.

Documented key by key in docs/verify.md. llmlab.config loads and merges the files; this module validates
the section, naming the file (config.yaml or a role's contract in config.d/) that set a bad key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from llmlab.config import ConfigError, HostConfig, StrictModel, describe_validation_error
from llmlab.gpus import CATALOG

GPU_SKU_NAMES: tuple[str, ...] = tuple(sku.name for sku in CATALOG)


def _known_sku(name: str) -> str:
    if name not in GPU_SKU_NAMES:
        raise ValueError(f"unknown GPU model; valid: {', '.join(GPU_SKU_NAMES)}")
    return name


class UpperLimits(StrictModel):
    """Limits on a value where higher is worse (e.g. percent used): WARN at `warn`, FAIL at `fail`."""

    warn: float = Field(ge=0)
    fail: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> UpperLimits:
        if self.warn > self.fail:
            raise ValueError(f"warn ({self.warn}) must not be above fail ({self.fail})")
        return self


class FractionOfPeak(StrictModel):
    """Limits on a measured fraction of the SKU's peak (lower is worse): WARN below warn, FAIL below fail."""

    warn: float = Field(gt=0, le=1)
    fail: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> FractionOfPeak:
        if self.fail > self.warn:
            raise ValueError(f"fail ({self.fail}) must not be above warn ({self.warn})")
        return self


class ProbeLimits(StrictModel):
    """Performance probes, as fractions of the catalogue peak (llmlab/gpus.py, overridable per SKU)."""

    # Dense GEMM rarely exceeds ~70 % of datasheet peak even on a healthy GPU; memory copies reach ~85-90 %.
    gemm: FractionOfPeak = Field(default_factory=lambda: FractionOfPeak(warn=0.55, fail=0.40))
    memory_bandwidth: FractionOfPeak = Field(default_factory=lambda: FractionOfPeak(warn=0.70, fail=0.55))
    host_copy: FractionOfPeak = Field(default_factory=lambda: FractionOfPeak(warn=0.60, fail=0.40))
    p2p: FractionOfPeak = Field(default_factory=lambda: FractionOfPeak(warn=0.60, fail=0.40))
    all_reduce: FractionOfPeak = Field(default_factory=lambda: FractionOfPeak(warn=0.50, fail=0.30))
    retries: int = Field(2, ge=0, le=10, description="Re-measure before a FAIL (busy is not broken).")
    seconds_level2: float = Field(2.0, gt=0, le=60, description="Time budget of each probe at --level 2.")
    seconds_level3: float = Field(15.0, gt=0, le=600, description="Time budget of each probe at --level 3.")


class VerifyThresholds(StrictModel):
    disk_used_percent: UpperLimits = Field(default_factory=lambda: UpperLimits(warn=70, fail=83))
    inodes_used_percent: UpperLimits = Field(default_factory=lambda: UpperLimits(warn=70, fail=83))
    swap_used_percent: UpperLimits = Field(default_factory=lambda: UpperLimits(warn=50, fail=90))
    resource_tolerance_percent: float = Field(
        5, ge=0, le=50, description="CPU count and RAM may differ this much from expect.cpu_count/memory_gib."
    )
    gpu_temperature_c: UpperLimits | None = Field(
        None, description="None: FAIL at the GPU's own slowdown temperature (NVML), WARN 10 degrees below it."
    )
    xid_window_hours: float | None = Field(None, gt=0, description="Look back this far for XIDs; None: boot.")
    probes: ProbeLimits = Field(default_factory=ProbeLimits)
    command_timeout_seconds: float = Field(30, gt=0, le=600)


class VerifyExpect(StrictModel):
    """What the inventory says this host is. Absent things that are expected FAIL; unexpected ones SKIP."""

    gpu_count: int = Field(0, ge=0, le=64)
    gpu_model: str | None = Field(None, description="A catalogue name from llmlab/gpus.py, e.g. 'H100 SXM'.")
    driver_version: str | None = Field(None, description="Pinned NVIDIA driver: '535.183.01' or a prefix.")
    cuda_version: str | None = Field(None, description="CUDA runtime torch is built for: '12.4' (a prefix).")
    cuda_toolkits: list[str] = Field(
        default_factory=list, description="CUDA toolkit versions whose runtime library must load: ['12.8']."
    )
    cpu_count: int | None = Field(None, ge=1)
    memory_gib: float | None = Field(None, gt=0)
    os: str | None = Field(None, description="'<ID> <VERSION_ID>' from /etc/os-release, e.g. 'debian 12'.")
    swap: bool | None = Field(None, description="True: swap must be on; False: must be off; None: either.")
    time_synchronized: bool = True
    persistence_mode: bool = True
    mig_mode: bool | None = None
    nvlink_active_links: int | None = Field(None, ge=0, description="Active NVLink links per GPU; None: any.")
    docker: bool = False
    nvidia_runtime: bool | None = Field(None, description="None: expected when docker and gpu_count > 0.")
    jupyter: bool = False
    firewall: bool = False
    ml_stack: bool = Field(True, description="torch & co. in the lab environment (python_env's contract).")
    model_store: bool = True

    @field_validator("gpu_model")
    @classmethod
    def _sku(cls, v: str | None) -> str | None:
        return v if v is None else _known_sku(v)

    @field_validator("os")
    @classmethod
    def _lower(cls, v: str | None) -> str | None:
        return v.strip().lower() if v else v


class SkuOverride(StrictModel):
    """Per-host corrections of the catalogue's peaks (a lab's measured figures beat a datasheet)."""

    bf16_tflops: float | None = Field(None, gt=0)
    fp16_tflops: float | None = Field(None, gt=0)
    memory_bandwidth_gbs: float | None = Field(None, gt=0)
    nvlink_bandwidth_gbs: float | None = Field(None, ge=0)
    pcie_gen: int | None = Field(None, ge=1, le=6)
    pcie_width: int | None = Field(None, ge=1, le=32)


DEFAULT_MIN_VERSIONS = {
    "torch": "2.4",
    "transformers": "5.0",
    "peft": "0.21",
    "bitsandbytes": "0.50",
    "accelerate": "1.10",
}


class VerifySettings(StrictModel):
    expect: VerifyExpect = Field(default_factory=VerifyExpect)
    thresholds: VerifyThresholds = Field(default_factory=VerifyThresholds)
    min_versions: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MIN_VERSIONS))
    allowed_ports: list[int] = Field(
        default_factory=lambda: [22],
        description="TCP ports allowed beyond loopback, besides the listeners the contracts declare.",
    )
    allowed_gpu_processes: list[str] = Field(
        default_factory=list, description="Process names allowed to hold GPU memory while verify runs."
    )
    jupyter_url: str = Field("http://127.0.0.1:8888/", description="Where JupyterLab answers.")
    jupyter_tls_verify: bool = True
    jupyter_ca_file: Path | None = Field(
        None, description="CA bundle that verifies Jupyter's certificate; None: the system's trust store."
    )
    jupyter_service: str = Field("jupyter", description="Jupyter's systemd unit, named in hints.")
    jupyter_kind: Literal["single", "hub"] = Field(
        "single", description="What answers at jupyter_url: one JupyterLab (single) or JupyterHub (hub)."
    )
    jupyter_tls_certfile: Path | None = Field(
        None, description="The certificate Jupyter must serve (PEM); None: not compared."
    )
    lab_python: Path | None = Field(
        None, description="The lab environment's python; None: <lab_env>/bin/python, else llmlab's own."
    )
    model_pins: list[str] = Field(default_factory=list, description="Repo ids the store must hold intact.")
    sku_overrides: dict[str, SkuOverride] = Field(default_factory=dict)

    @field_validator("allowed_ports")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        bad = [p for p in ports if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"ports must be 1-65535, got {bad}")
        return ports

    @field_validator("min_versions")
    @classmethod
    def _versions(cls, pins: dict[str, str]) -> dict[str, str]:
        for name, version in pins.items():
            if not re.fullmatch(r"\d+(\.\d+)*", str(version)):
                raise ValueError(f"{name}: {version!r} is not a version like '2.4' or '0.21.0'")
        return pins

    @field_validator("jupyter_url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
            raise ValueError("must be an http:// or https:// URL, e.g. 'http://127.0.0.1:8888/'")
        return url

    @field_validator("sku_overrides")
    @classmethod
    def _override_names(cls, overrides: dict[str, SkuOverride]) -> dict[str, SkuOverride]:
        for name in overrides:
            _known_sku(name)
        return overrides


def verify_settings(config: HostConfig) -> VerifySettings:
    """Validate the host config's `verify:` section; a bad key is named with the file that set it."""
    try:
        return VerifySettings.model_validate(config.verify)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, config.source_of, prefix=("verify",))) from None
