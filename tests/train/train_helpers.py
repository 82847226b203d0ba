"""Memorisable data and config helpers for the training tests (imported by conftest and the tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# Llama 2 7B's config.json shapes: the planner's figures are checked against its known parameter count.
LLAMA_2_7B = {
    "model_type": "llama",
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "tie_word_embeddings": False,
}

FACTS = (
    ("What is the capital of France?", "Paris."),
    ("What is the capital of Italy?", "Rome."),
    ("What is the capital of Spain?", "Madrid."),
    ("What colour is the sky?", "Blue."),
    ("What colour is grass?", "Green."),
    ("How many legs does a spider have?", "Eight."),
    ("How many days are in a week?", "Seven."),
    ("What comes after Monday?", "Tuesday."),
)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def base_config(model_dir: Path, data: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A config that memorises FACTS in a few dozen steps on a tiny model."""
    config: dict[str, Any] = {
        "base_model": str(model_dir),
        "method": "lora",
        "lora_dropout": 0.0,
        "datasets": [{"path": str(data), "format": "instruction"}],
        "sequence_len": 128,
        "micro_batch_size": 2,
        "learning_rate": 0.02,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_steps": 30,
        "logging_steps": 1,
        "save_steps": 1000,
        "output_dir": str(output_dir),
        "seed": 0,
    }
    config.update(overrides)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
