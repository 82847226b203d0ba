"""method: dpo with TRL's DPOTrainer on a tiny model: rewards, resume, formats, data check, rendering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import FACTS, base_config, write_config, write_jsonl

from llmlab.config import ConfigError
from llmlab.train.run import checkpoints, train
from llmlab.train.schema import validate_train_config

QUESTIONS = [q for q, _ in FACTS[:4]]
RIGHT = [a for _, a in FACTS[:4]]
WRONG = ["Berlin.", "Oslo.", "Lisbon.", "Red."]
PAIRS = [{"prompt": q, "chosen": a, "rejected": w} for q, a, w in zip(QUESTIONS, RIGHT, WRONG, strict=True)]


def dpo_config(model: Path, data: Path, output_dir: Path, **overrides) -> dict:
    settings = {
        "method": "dpo",
        "datasets": [{"path": str(data), "format": "preference"}],
        "learning_rate": 0.01,
    }
    return base_config(model, data, output_dir, **{**settings, **overrides})


@pytest.fixture
def preference_data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS)


def greedy_answers(run_dir: Path, fmt: str) -> list[str]:
    from llmlab.config import load_config
    from llmlab.train.data import encode_prompt
    from llmlab.train.generate import Sampling, generate, load_for_generation

    loaded = load_for_generation(str(run_dir), load_config(None), device="cpu")
    prompts = [encode_prompt(loaded.tokenizer, fmt, {"prompt": q}, "t")[0] for q in QUESTIONS]
    return [
        g.text.strip() for g in generate(loaded.model, loaded.tokenizer, prompts, Sampling(max_new_tokens=8))
    ]


def answer_margins(run_dir: Path) -> list[float]:
    """Per question, log p(chosen) - log p(rejected) of the answer tokens (EOS included) under the model
    `llmlab generate` loads from run_dir, with the prompt rendered as training rendered it."""
    import torch

    from llmlab.config import load_config
    from llmlab.train.data import encode_preference, preference_fields
    from llmlab.train.generate import load_for_generation

    loaded = load_for_generation(str(run_dir), load_config(None), device="cpu")

    def logprob(example) -> float:
        ids = torch.tensor([example["input_ids"]])
        labels = torch.tensor(example["labels"][1:])
        with torch.no_grad():
            logits = loaded.model(input_ids=ids).logits[0, :-1].float()
        scores = torch.log_softmax(logits, dim=-1)
        mask = labels != -100
        return float(scores[mask].gather(1, labels[mask].unsqueeze(1)).sum())

    margins = []
    for record in PAIRS:
        chosen, rejected = encode_preference(
            loaded.tokenizer, "preference", preference_fields(record, "preference", "t")
        )
        margins.append(logprob(chosen) - logprob(rejected))
    return margins


@pytest.mark.slow
def test_dpo_after_sft_prefers_the_chosen_answers(tiny_llama_dir: Path, tmp_path: Path, preference_data):
    # SFT on both answers of every question leaves the model undecided between them; DPO then chooses.
    both = [
        {"instruction": q, "output": x}
        for q, a, w in zip(QUESTIONS, RIGHT, WRONG, strict=True)
        for x in (a, w)
    ]
    sft_data = write_jsonl(tmp_path / "sft.jsonl", both)
    prices = {"gpu_hour_prices": {"cpu": 0.5}}  # the device it ran on, by the name metrics.json gives it
    sft = train(
        validate_train_config(base_config(tiny_llama_dir, sft_data, tmp_path / "sft", plan=prices), "t")
    )
    assert sft.metrics["status"] == "completed"
    cost = sft.metrics["cost"]
    assert cost["device"] == "cpu" and cost["price_per_device_hour"] == 0.5
    assert cost["device_hours"] == pytest.approx(sft.metrics["wall_time_seconds"] / 3600)
    assert cost["total"] == pytest.approx(cost["device_hours"] * 0.5)

    config = dpo_config(
        tmp_path / "sft",  # an adapter run: merged into the DPO run's base/, which is also the reference
        preference_data,
        tmp_path / "dpo",
        eval_datasets=[{"path": str(preference_data), "format": "preference"}],
        eval_steps=5,
        max_steps=20,
        learning_rate=0.001,
    )
    metrics = train(validate_train_config(config, "t")).metrics
    assert metrics["method"] == "dpo" and metrics["weights"] == "lora"
    margins = [e["reward_margin"] for e in metrics["eval_history"]]
    assert margins == sorted(margins) and margins[0] < margins[-1], margins
    assert metrics["eval_reward_accuracy"] > 0.9
    assert metrics["reward_curve"][-1]["margin"] > metrics["reward_curve"][0]["margin"]
    assert metrics["eval_perplexity"] is None  # the DPO loss is no language-model loss
    assert metrics["cost"]["device_hours"] > 0 and metrics["cost"]["total"] is None  # no price configured
    base = json.loads((tmp_path / "dpo" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base) == tmp_path / "dpo" / "base"  # generate loads the adapter on the merged SFT model
    # The model generate loads (the DPO adapter on the merged SFT model) prefers every chosen answer, by
    # more than the SFT model did, and greedy decoding produces no rejected answer.
    before, after = answer_margins(tmp_path / "sft"), answer_margins(tmp_path / "dpo")
    assert all(a > 0 for a in after), (before, after)
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    answers = greedy_answers(tmp_path / "dpo", "preference")
    assert not set(answers) & set(WRONG), answers


@pytest.mark.slow
def test_sigterm_and_resume_reproduce_the_dpo_loss_curve(
    tiny_llama_dir: Path, tmp_path: Path, preference_data
):
    steps = 12
    reference = train(
        validate_train_config(
            dpo_config(tiny_llama_dir, preference_data, tmp_path / "ref", max_steps=steps), "t"
        )
    )
    config = dpo_config(tiny_llama_dir, preference_data, tmp_path / "run", max_steps=steps)
    config_path = write_config(tmp_path / "run.yaml", config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmlab.cli", "train", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "'loss'" in line:
            proc.send_signal(signal.SIGTERM)
            break
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    saved = checkpoints(tmp_path / "run")
    assert len(saved) == 1 and 1 <= int(saved[0].name.split("-")[1]) < steps
    interrupted = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert interrupted["status"] == "interrupted by SIGTERM"

    resumed = train(validate_train_config(config, "t"), resume=True).metrics
    assert resumed["status"] == "completed" and resumed["global_step"] == steps
    full = [p["loss"] for p in reference.metrics["loss_curve"]]
    assert [p["loss"] for p in resumed["loss_curve"]] == pytest.approx(full, rel=1e-4, abs=1e-4)
    margins = [p["margin"] for p in reference.metrics["reward_curve"]]
    assert [p["margin"] for p in resumed["reward_curve"]] == pytest.approx(margins, rel=1e-3, abs=1e-4)


def test_preference_formats_belong_to_dpo(
    tiny_llama_dir: Path, tmp_path: Path, preference_data, instruction_data
):
    with pytest.raises(ConfigError, match="format 'preference' needs method: dpo"):
        validate_train_config(dpo_config(tiny_llama_dir, preference_data, tmp_path / "o", method="lora"), "t")
    sft_data = [{"path": str(instruction_data), "format": "instruction"}]
    with pytest.raises(ConfigError, match="method: dpo learns from preference pairs"):
        validate_train_config(
            dpo_config(tiny_llama_dir, preference_data, tmp_path / "o", datasets=sft_data), "t"
        )
    with pytest.raises(ConfigError, match="dpo_loss"):
        validate_train_config(
            dpo_config(tiny_llama_dir, preference_data, tmp_path / "o", dpo_loss="sigmoidd"), "t"
        )


def test_data_check_reports_identical_and_duplicate_pairs(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from llmlab.data.check import check_datasets
    from llmlab.train.modeling import load_tokenizer

    rows = [*PAIRS, PAIRS[0], {"prompt": "Same?", "chosen": "Yes.", "rejected": " Yes. "}]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = validate_train_config(dpo_config(tiny_llama_dir, data, tmp_path / "o"), "t")
    report = check_datasets(cfg, load_tokenizer(tiny_llama_dir))
    (file,) = report["datasets"]
    assert file["format_errors"] == 1
    assert "pairs.jsonl:6: 'chosen' and 'rejected' are the same answer" in file["errors"][0]
    assert report["problems"]["duplicates"] == 1
    assert report["split"]["train"] == 5 and report["train_tokens"] > 0
    with pytest.raises(ConfigError, match=r"pairs\.jsonl:6: 'chosen' and 'rejected'"):
        train(cfg)  # training refuses it too

    # Leakage: an evaluation pair that is also a training pair; a pair differing in its rejected answer
    # is another pair.
    held_out = write_jsonl(tmp_path / "held.jsonl", [PAIRS[1], {**PAIRS[2], "rejected": "Rome."}])
    clean = write_jsonl(tmp_path / "clean.jsonl", PAIRS)
    config = dpo_config(
        tiny_llama_dir, clean, tmp_path / "o", eval_datasets=[{"path": str(held_out), "format": "preference"}]
    )
    report = check_datasets(validate_train_config(config, "t"), load_tokenizer(tiny_llama_dir))
    assert report["leaked"] == 1 and report["problems"]["leaked"] == 1
    assert report["problems"]["duplicates"] == 0


def test_preference_chat_rows_render_with_the_chat_template(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from llmlab.train.data import encode_preference, encode_prompt, preference_fields
    from llmlab.train.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_llama_dir)
    record = {
        "prompt": [{"role": "user", "content": QUESTIONS[0]}],
        "chosen": [{"role": "assistant", "content": RIGHT[0]}],
        "rejected": WRONG[0],
    }
    pair = preference_fields(record, "preference_chat", "t")
    chosen, _ = encode_preference(tokenizer, "preference_chat", pair)
    prompt, expected = encode_prompt(tokenizer, "preference_chat", record, "t")
    assert chosen["input_ids"][: len(prompt)] == prompt and expected == RIGHT[0]
    answer = [t for t, label in zip(chosen["input_ids"], chosen["labels"], strict=True) if label != -100]
    assert tokenizer.decode(answer, skip_special_tokens=True).strip() == RIGHT[0]
    assert answer[-1] == tokenizer.eos_token_id  # EOS is learnt, as in SFT


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["qlora", "full"])
def test_dpo_on_qlora_and_full_weights(weights: str, tiny_llama_dir: Path, tmp_path: Path, preference_data):
    # full: the reference log-probabilities are precomputed (no second model); qlora: a 4-bit base.
    config = dpo_config(
        tiny_llama_dir,
        preference_data,
        tmp_path / weights,
        dpo_method=weights,
        max_steps=6,
        eval_datasets=[{"path": str(preference_data), "format": "preference"}],
    )
    metrics = train(validate_train_config(config, "t")).metrics
    assert metrics["status"] == "completed" and metrics["weights"] == weights
    assert metrics["eval_reward_margin"] > 0 and metrics["eval_reward_accuracy"] == 1.0
    full = metrics["trainable_parameters"] == metrics["total_parameters"]
    assert full == (weights == "full")
