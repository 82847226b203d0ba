"""A training smoke test for `llmlab verify --level 2`: does this host train at all, offline, in seconds?

A tiny random-init Llama (built here, no Hub access needed) trains a few LoRA steps on a memorisable
dataset on the best device present, through the same code path as `llmlab train`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from llmlab.config import HostConfig
from llmlab.train.schema import validate_train_config

SMOKE_FACTS = (
    ("What is the capital of France?", "Paris."),
    ("What colour is the sky?", "Blue."),
    ("How many legs does a spider have?", "Eight."),
    ("What comes after Monday?", "Tuesday."),
    ("Say hello.", "Hello!"),
    ("What is two plus two?", "Four."),
)


def run_smoke(workdir: Path, steps: int = 8, host: HostConfig | None = None) -> dict[str, Any]:
    """Train `steps` LoRA steps in `workdir`; returns initial/final loss, device, seconds, tokens/s.

    `host`: the calling command's host config (verify's), so it is not loaded a second time."""
    from llmlab.train.run import train
    from llmlab.train.tiny import build_tiny_model

    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(workdir / "run", ignore_errors=True)  # a smoke always starts fresh, never resumes
    model_dir = build_tiny_model(workdir / "tiny-llama")
    data = workdir / "smoke.jsonl"
    data.write_text(
        "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in SMOKE_FACTS), encoding="utf-8"
    )
    cfg = validate_train_config(
        {
            "base_model": str(model_dir),
            "method": "lora",
            "lora_dropout": 0.0,
            "datasets": [{"path": str(data), "format": "instruction"}],
            "sequence_len": 128,
            "micro_batch_size": 2,
            "learning_rate": 0.02,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "max_steps": steps,
            "logging_steps": 1,
            "save_steps": steps,
            "output_dir": str(workdir / "run"),
            "seed": 0,
        },
        source="training smoke",
    )
    metrics = train(cfg, host).metrics
    return {
        "initial_loss": metrics["initial_loss"],
        "final_loss": metrics["final_loss"],
        "device": metrics["device"],
        "seconds": time.monotonic() - started,
        "tokens_per_second": metrics["tokens_per_second"],
        "steps": metrics["global_step"],
    }
