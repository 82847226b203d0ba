"""Fixtures for the model store tests: a store in tmp, small model-shaped directories, a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmlab.cli import main
from llmlab.models.store import ModelStore

from .helpers import make_model_dir


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store", group=None)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model_dir(tmp_path / "src-model")


@pytest.fixture
def cli(store: ModelStore, capsys: pytest.CaptureFixture):
    """Run `llmlab models VERB ... --json --store <store>` in-process; returns (exit code, parsed JSON)."""

    def run(*args: str) -> tuple[int, dict]:
        code = main(["models", *args, "--json", "--quiet", "--store", str(store.root)])
        return code, json.loads(capsys.readouterr().out)

    return run
