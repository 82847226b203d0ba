"""Evaluation while training: the best checkpoint survives a rising eval loss, early stopping stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from train_helpers import FACTS, base_config, write_jsonl

from llmlab.config import ConfigError
from llmlab.train.run import train
from llmlab.train.schema import validate_train_config


def diverging_config(model_dir: Path, work: Path, **overrides: Any) -> dict[str, Any]:
    """Train on FACTS, evaluate on the same questions with other answers: as the model learns the format,
    the eval loss falls; as it memorises the training answers, it rises (from step 9 on, here)."""
    answers = [a for _, a in FACTS]
    data = write_jsonl(work / "facts.jsonl", [{"instruction": q, "output": a} for q, a in FACTS])
    wrong = [{"instruction": q, "output": answers[(i + 3) % len(answers)]} for i, (q, _) in enumerate(FACTS)]
    held = write_jsonl(work / "wrong.jsonl", wrong)
    return base_config(
        model_dir,
        data,
        work / "run",
        eval_datasets=[{"path": str(held), "format": "instruction"}],
        eval_steps=3,
        **overrides,
    )


@pytest.fixture(scope="module")
def diverged(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run with save_best and early stopping (patience 2) of at most 30 steps, evaluated every 3."""
    work = tmp_path_factory.mktemp("diverging")
    config = diverging_config(
        tiny_llama_dir, work, save_best=True, save_steps=3, early_stopping_patience=2, max_steps=30
    )
    return train(validate_train_config(config, "test")).metrics


@pytest.mark.slow
def test_save_best_keeps_the_lowest_eval_loss_checkpoint_not_the_last(diverged: dict[str, Any]) -> None:
    history = diverged["eval_history"]
    lowest = min(history, key=lambda entry: entry["loss"])
    best = diverged["best_checkpoint"]
    assert best["step"] == lowest["step"] < diverged["global_step"], history
    assert history[-1]["loss"] > lowest["loss"]  # it did rise
    assert Path(best["path"]).is_dir() and Path(best["path"]).name == f"checkpoint-{best['step']}"
    assert best["eval_loss"] == pytest.approx(lowest["loss"])
    # The run ends with the best weights: evaluating them again gives the best loss, not the last.
    assert diverged["eval_loss"] == pytest.approx(lowest["loss"], rel=1e-4)


@pytest.mark.slow
def test_early_stopping_stops_when_eval_loss_stops_improving(diverged: dict[str, Any]) -> None:
    history = diverged["eval_history"]
    assert diverged["stopped_early"] and diverged["global_step"] < 30
    best = min(entry["loss"] for entry in history)
    assert [entry["loss"] > best for entry in history[-2:]] == [True, True], history
    assert history[-1]["step"] == diverged["global_step"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"save_best": True}, "save_best: needs evaluation data; set eval_split or eval_datasets"),
        ({"eval_split": 0.25, "early_stopping_patience": 2}, "early_stopping_patience: needs eval_steps"),
        (
            {"eval_split": 0.25, "save_best": True, "eval_steps": 3, "save_steps": 10},
            "save_best: save_steps (10) must be a multiple of eval_steps (3)",
        ),
        ({"eval_split": 0.25, "eval_generate": 2, "text": True}, "eval_generate: needs instruction or chat"),
    ],
)
def test_evaluation_keys_are_checked_together(
    tiny_llama_dir: Path, tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    fmt = "text" if overrides.pop("text", False) else "instruction"
    config = base_config(tiny_llama_dir, data, tmp_path / "run", **overrides)
    config["datasets"] = [{"path": str(data), "format": fmt}]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_train_config(config, "test")
