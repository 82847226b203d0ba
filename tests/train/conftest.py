"""Fixtures for the training tests: memorisable datasets on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import FACTS, write_jsonl


@pytest.fixture
def instruction_data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "facts.jsonl", [{"instruction": q, "output": a} for q, a in FACTS])


@pytest.fixture
def chat_data(tmp_path: Path) -> Path:
    records = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS
    ]
    return write_jsonl(tmp_path / "chat.jsonl", records)
