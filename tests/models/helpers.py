"""Helpers shared by the model store tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def make_model_dir(path: Path, seed: int = 0, weight_bytes: int = 256 << 10) -> Path:
    """A directory shaped like a saved model (config, safetensors, tokenizer, a nested file); random bytes,
    so that different seeds give different content. Tests that load with transformers use tiny_llama_dir."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "seed": seed}))
    (path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "seed": seed}))
    (path / "model.safetensors").write_bytes(os.urandom(weight_bytes))
    (path / "extra").mkdir(exist_ok=True)
    (path / "extra" / "notes.txt").write_text(f"seed {seed}\n")
    return path


def llmlab_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`llmlab ...` in a separate process (for concurrency and kill -9 tests)."""
    return subprocess.Popen(
        [sys.executable, "-m", "llmlab.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
