"""End-to-end training on tiny offline models: LoRA, QLoRA and full fine-tuning memorise a small dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from train_helpers import FACTS, base_config, write_jsonl

from llmlab.train.run import train
from llmlab.train.schema import validate_train_config

# method -> config overrides; together they cover instruction and chat data, packing on and off, eval split.
RUNS: dict[str, dict[str, Any]] = {
    "lora": {"eval_split": 0.25},
    "qlora": {"packing": False, "chat": True},
    "full": {"learning_rate": 0.01, "tracking": "tensorboard"},
}


@pytest.fixture(scope="module")
def trained(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Train each method once per module; returns method -> (output_dir, metrics)."""
    cache: dict[str, tuple[Path, dict[str, Any]]] = {}

    def run(method: str) -> tuple[Path, dict[str, Any]]:
        if method not in cache:
            work = tmp_path_factory.mktemp(f"train-{method}")
            overrides = dict(RUNS[method])
            data = write_jsonl(work / "facts.jsonl", [{"instruction": q, "output": a} for q, a in FACTS])
            datasets = [{"path": str(data), "format": "instruction"}]
            if overrides.pop("chat", False):
                chat = [
                    {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                    for q, a in FACTS
                ]
                datasets = [{"path": str(write_jsonl(work / "chat.jsonl", chat)), "format": "chat"}]
            config = base_config(
                tiny_llama_dir, data, work / "out", method=method, datasets=datasets, **overrides
            )
            result = train(validate_train_config(config, "test"))
            cache[method] = (work / "out", result.metrics)
        return cache[method]

    return run


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_training_drives_the_loss_down(method: str, trained) -> None:
    output_dir, metrics = trained(method)
    assert metrics["status"] == "completed" and metrics["global_step"] == 30
    assert metrics["final_loss"] < 0.3 * metrics["initial_loss"], metrics["loss_curve"]
    on_disk = json.loads((output_dir / "metrics.json").read_text())
    assert on_disk["final_loss"] == metrics["final_loss"] and on_disk["schema_version"] == 1
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    for name in (weights, "tokenizer.json", "train_config.yaml"):
        assert (output_dir / name).is_file(), name
    assert yaml.safe_load((output_dir / "train_config.yaml").read_text())["method"] == method
    assert 0 < metrics["padding_efficiency"] <= 1 and metrics["tokens_per_second"] > 0
    assert metrics["memory"]["peak_rss_bytes"] > metrics["memory"]["rss_before_model_bytes"] > 0
    if method == "full":
        assert metrics["trainable_parameters"] == metrics["total_parameters"]
        assert list(output_dir.glob("runs/*/events.out.tfevents.*")), "tensorboard logs missing"
    else:
        assert 0 < metrics["trainable_parameters"] < 0.5 * metrics["total_parameters"]


def test_eval_split_reports_loss_and_perplexity(trained) -> None:
    _, metrics = trained("lora")
    assert metrics["examples"]["eval"] == 2 and metrics["examples"]["train"] == 6
    assert math.isclose(metrics["eval_perplexity"], math.exp(metrics["eval_loss"]))


def test_qlora_base_is_nf4_with_double_quant(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    import bitsandbytes as bnb

    from llmlab.train.modeling import choose_precision, load_model, load_tokenizer

    cfg = validate_train_config(
        base_config(tiny_llama_dir, instruction_data, tmp_path, method="qlora"), "test"
    )
    tokenizer = load_tokenizer(tiny_llama_dir)
    model = load_model(cfg, tiny_llama_dir, tokenizer, choose_precision("auto"))
    four_bit = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 14  # 7 linear layers x 2 decoder layers
    assert all(m.weight.quant_type == "nf4" and m.weight.quant_state.nested for m in four_bit)


def test_fine_tuned_model_answers_and_stops_with_eos(trained) -> None:
    """The most common fine-tuning bug is a model that never stops: EOS must be learned."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output_dir, _ = trained("full")
    model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    from llmlab.train.data import ALPACA_PROMPT

    for question, answer in FACTS[:4]:
        prompt = tokenizer(ALPACA_PROMPT.format(instruction=question), return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=20, do_sample=False)[
                0, prompt["input_ids"].shape[1] :
            ]
        assert out[-1].item() == tokenizer.eos_token_id, tokenizer.decode(out)
        assert tokenizer.decode(out, skip_special_tokens=True) == answer


def test_merge_round_trips(trained, tmp_path: Path) -> None:
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from llmlab.cli import main

    output_dir, _ = trained("lora")
    assert main(["train", "merge", str(output_dir), "--to", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    adapted = AutoPeftModelForCausalLM.from_pretrained(output_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(adapted.peft_config["default"].base_model_name_or_path).eval()
    ids = torch.tensor([[5, 42, 77, 100, 250, 17]])
    with torch.no_grad():
        merged_logits, adapted_logits = merged(ids).logits, adapted(input_ids=ids).logits
        base_logits = base(ids).logits
    torch.testing.assert_close(merged_logits, adapted_logits, atol=1e-4, rtol=1e-4)
    assert (merged_logits - base_logits).abs().max() > 0.1, "the adapter changed nothing"
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_base_model_and_merge_registration_go_through_the_model_store(
    trained, tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmlab.cli import main
    from llmlab.config import ConfigError, load_config
    from llmlab.models.store import ModelStore
    from llmlab.train.modeling import resolve_base_model

    store_root = tmp_path / "store"
    monkeypatch.setenv("LLMLAB_MODEL_STORE", str(store_root))
    (tmp_path / "host.yaml").write_text("{}\n")
    monkeypatch.setenv("LLMLAB_CONFIG", str(tmp_path / "host.yaml"))
    store = ModelStore(store_root, group=None)
    snapshot = store.import_model(tiny_llama_dir, name="tiny/llama")
    host = load_config()
    resolved = resolve_base_model("tiny/llama", host)
    assert resolved.path == snapshot and resolved.store_commit == snapshot.name
    with pytest.raises(ConfigError, match=r"not in the model store at .*store \(got 'tiny/absent'\)"):
        resolve_base_model("tiny/absent", host)

    output_dir, _ = trained("lora")
    assert (
        main(["train", "merge", str(output_dir), "--to", str(tmp_path / "m"), "--register", "tiny/merged"])
        == 0
    )
    assert (store.resolve("tiny/merged") / "config.json").is_file()
