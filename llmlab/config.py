"""Host configuration: the one place that knows llmlab's paths and where the host config lives.

Ansible (the `llmlab` role) writes /etc/llmlab/config.yaml and the other roles their contracts in
/etc/llmlab/config.d/<role>.yaml, merged over it in name order; `LLMLAB_CONFIG` or `--config` point
elsewhere (DIR/config.yaml reads DIR/config.d/), and `LLMLAB_MODEL_STORE` overrides the store path. Every
sub-command reads its settings from here, and every schema in the package reports bad input through
`ConfigError`, which names the file, the key, the value and what is valid.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

DEFAULT_CONFIG_PATH = Path("/etc/llmlab/config.yaml")
CONFIG_ENV = "LLMLAB_CONFIG"
MODEL_STORE_ENV = "LLMLAB_MODEL_STORE"


class ConfigError(ValueError):
    """Bad configuration: the message names the key, the bad value and what would be valid."""


class StrictModel(BaseModel):
    """Base for every llmlab schema: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


LOOPBACK_ADDRESSES = ("127.0.0.1", "::1", "localhost")


class ServiceListener(StrictModel):
    """A port a role's service listens on, published in its contract (config.d/<role>.yaml).

    verify allows it in services.listening_ports; the firewall opens it, off loopback, to its audience.
    """

    port: int = Field(ge=1, le=65535)
    address: str = Field("127.0.0.1", description="Bind address; 0.0.0.0 or :: mean every interface.")
    proto: Literal["tcp", "udp"] = "tcp"
    audience: Literal["users", "monitoring", "cluster"] = Field(
        "users",
        description="Who the firewall admits: users (firewall_allowed_cidrs), monitoring "
        "(firewall_monitoring_cidrs) or cluster (the firewall_cluster_group peers).",
    )

    @property
    def on_loopback(self) -> bool:
        return self.address in LOOPBACK_ADDRESSES or self.address.startswith("127.")


class HostConfig(StrictModel):
    """What this host is and where llmlab keeps things: config.yaml merged with the contracts in config.d/."""

    model_store: Path = Field(Path("/models"), description="Shared model store (HF cache layout).")
    lab_group: str = Field("llmlab", description="Group that owns the model store and shared directories.")
    lab_env: Path | None = Field(None, description="The lab environment's prefix (the python_env role).")
    reports_dir: Path = Field(Path("/var/lib/llmlab/reports"), description="Where verify keeps JSON reports.")
    textfile_dir: Path = Field(
        Path("/var/lib/prometheus/node-exporter"),
        description="node_exporter textfile collector directory for verify's metrics.",
    )
    tracking_uri: str | None = Field(None, description="MLflow tracking URI for `llmlab train`.")
    listeners: dict[str, ServiceListener] = Field(
        default_factory=dict, description="Services' ports by name, as their roles' contracts declare them."
    )
    # Validated by llmlab.verify.settings (the section's schema lives with verify).
    verify: dict[str, Any] = Field(default_factory=dict, description="Settings of `llmlab verify`.")

    # Which file set each key (a key path -> the file), for errors that name the file.
    _origins: dict[tuple[str, ...], Path] = PrivateAttr(default_factory=dict)
    _files: list[Path] = PrivateAttr(default_factory=list)

    @property
    def origins(self) -> dict[tuple[str, ...], Path]:
        """Each key path that a file set, and that file."""
        return dict(self._origins)

    @property
    def files(self) -> list[Path]:
        """The files this config was merged from, in order (config.yaml first, if it exists)."""
        return list(self._files)

    def source_of(self, key: tuple[str, ...]) -> str:
        """The file that set `key` (or the nearest enclosing key), for error messages."""
        for end in range(len(key), 0, -1):
            if key[:end] in self._origins:
                return str(self._origins[key[:end]])
        return " + ".join(map(str, self._files)) or "(defaults)"


def describe_validation_error(
    exc: ValidationError,
    source: str | Callable[[tuple[str, ...]], str],
    prefix: tuple[str, ...] = (),
) -> str:
    """Render pydantic errors as one line per bad key: `source: key.path: problem (got value)`.

    `source` is a file name, or a function from the key's path (under `prefix`) to the file that set it.
    """
    lines = []
    for err in exc.errors():
        loc = (*prefix, *(str(part) for part in err["loc"]))
        key = ".".join(loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
        where = source(loc) if callable(source) else source
        lines.append(f"{where}: {key}: {msg}{got}")
    return "\n".join(lines)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; a missing or malformed file is a ConfigError."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def config_path(explicit: Path | None = None) -> Path:
    """The config file in force: `--config`, then $LLMLAB_CONFIG, then /etc/llmlab/config.yaml."""
    if explicit is not None:
        return explicit
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_PATH))


def fragments_dir(path: Path) -> Path:
    """The contracts directory beside a config file: DIR/config.yaml -> DIR/config.d."""
    return path.parent / f"{path.stem}.d"


def _merge(
    into: dict[str, Any],
    overlay: dict[str, Any],
    origin: Path,
    origins: dict,
    at: tuple = (),
) -> None:
    """Mappings merge recursively; a scalar or a list replaces what was there. Records who set each key."""
    for key, value in overlay.items():
        here = (*at, str(key))
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, origins, here)
            continue
        into[key] = copy.deepcopy(value)
        for known in [k for k in origins if k[: len(here)] == here]:
            del origins[known]
        origins[here] = origin


def load_config(explicit: Path | None = None) -> HostConfig:
    """Load config.yaml, merge every config.d/*.yaml beside it in name order, and validate the result.

    A missing default file means defaults (plus any contracts); a missing file named by --config or
    $LLMLAB_CONFIG is an error. $LLMLAB_MODEL_STORE overrides the store path last.
    """
    path = config_path(explicit)
    explicit_given = explicit is not None or CONFIG_ENV in os.environ
    files = [path] if (explicit_given or path.exists()) else []
    directory = fragments_dir(path)
    if directory.is_dir():
        files += sorted(directory.glob("*.yaml"))
    data: dict[str, Any] = {}
    origins: dict[tuple[str, ...], Path] = {}
    for file in files:
        _merge(data, read_yaml_mapping(file), file, origins)
    if store := os.environ.get(MODEL_STORE_ENV):
        data["model_store"] = store
        origins[("model_store",)] = Path(f"${MODEL_STORE_ENV}")
    config = HostConfig.model_construct()  # only to attribute errors to files
    config._origins, config._files = origins, files
    try:
        validated = HostConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, config.source_of)) from None
    validated._origins, validated._files = origins, files
    return validated
