"""Shared fixtures: tiny offline models, built once per session (the Hugging Face Hub is not reachable)."""

from __future__ import annotations

from pathlib import Path

import pytest

# torch._dynamo before anything imports Ansible (tests/deploys reads inventories with Ansible's API): Ansible
# replaces sys.intern with a callable class on import, and torch._dynamo, imported later, refuses to load
# ("substitute_in_graph expects a function"). llmlab itself never imports Ansible; only this test process
# holds both.
import torch._dynamo  # noqa: F401


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own XDG cache: verify's lab-probe cache must not carry one test's answer into another."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer Llama with a BPE tokenizer, chat template, EOS and a separate pad token."""
    from llmlab.train.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer GPT-2 with the same tokenizer as tiny_llama_dir."""
    from llmlab.train.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")
