"""The training smoke `llmlab verify --level 2` runs: offline, seconds, and the loss must fall."""

from __future__ import annotations

from pathlib import Path

from llmlab.train.smoke import run_smoke


def test_smoke_trains_a_tiny_model_and_reports(tmp_path: Path) -> None:
    first = run_smoke(tmp_path, steps=8)
    assert first["device"] == "cpu" and first["steps"] == 8
    assert first["final_loss"] < 0.8 * first["initial_loss"]
    assert first["seconds"] < 60 and first["tokens_per_second"] > 0
    again = run_smoke(tmp_path, steps=8)  # reruns in the same directory start fresh, same seed, same result
    assert again["final_loss"] == first["final_loss"]
