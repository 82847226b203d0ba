"""Host configuration: the one place that knows llmlab's paths and where the host config lives.

Ansible (the `llmlab` role) writes /etc/llmlab/config.yaml; `LLMLAB_CONFIG` or `--config` point elsewhere,
and `LLMLAB_MODEL_STORE` overrides the store path. Every sub-command reads its settings from here, and every
schema in the package reports bad input through `ConfigError`, which names the key, the value and what is valid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_CONFIG_PATH = Path("/etc/llmlab/config.yaml")
CONFIG_ENV = "LLMLAB_CONFIG"
MODEL_STORE_ENV = "LLMLAB_MODEL_STORE"


class ConfigError(ValueError):
    """Bad configuration: the message names the key, the bad value and what would be valid."""


class StrictModel(BaseModel):
    """Base for every llmlab schema: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HostConfig(StrictModel):
    """What this host is and where llmlab keeps things. Sections for sub-commands are added beside these."""

    model_store: Path = Field(Path("/srv/models"), description="Shared model store (Hugging Face cache layout).")
    lab_group: str = Field("llmlab", description="Group that owns the model store and shared directories.")
    reports_dir: Path = Field(Path("/var/lib/llmlab/reports"), description="Where verify keeps JSON reports.")
    textfile_dir: Path = Field(
        Path("/var/lib/prometheus/node-exporter"),
        description="node_exporter textfile collector directory for verify's metrics.",
    )
    tracking_uri: str | None = Field(None, description="MLflow tracking URI for `llmlab train`.")


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """Render pydantic errors as one line per bad key: `source: key.path: problem (got value)`."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
        lines.append(f"{source}: {key}: {msg}{got}")
    return "\n".join(lines)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; a missing or malformed file is a ConfigError."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
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


def load_config(explicit: Path | None = None) -> HostConfig:
    """Load and validate the host config. A missing default file means defaults; a missing explicit one is an error."""
    path = config_path(explicit)
    explicit_given = explicit is not None or CONFIG_ENV in os.environ
    data = read_yaml_mapping(path) if (explicit_given or path.exists()) else {}
    if store := os.environ.get(MODEL_STORE_ENV):
        data["model_store"] = store
    try:
        return HostConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path))) from None
