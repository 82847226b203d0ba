"""`llmlab generate` on a tiny LoRA run that memorised four facts; its metrics.json: eval, provenance."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from train_helpers import FACTS, base_config, write_jsonl

from llmlab.cli import main
from llmlab.train.run import train
from llmlab.train.schema import validate_train_config

LEARNT = FACTS[:4]


@pytest.fixture(scope="module")
def run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """LoRA on LEARNT, evaluated (with generation) every 10 steps on a copy of the same facts."""
    work = tmp_path_factory.mktemp("generate")
    records = [{"instruction": q, "output": a} for q, a in LEARNT]
    data = write_jsonl(work / "facts.jsonl", records)
    held = write_jsonl(work / "held.jsonl", records)
    config = base_config(
        tiny_llama_dir,
        data,
        work / "run",
        eval_datasets=[{"path": str(held), "format": "instruction"}],
        eval_steps=10,
        eval_generate=4,
    )
    return work / "run", train(validate_train_config(config, "test")).metrics


def generate_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["generate", *args, "--max-new-tokens", "12", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_the_run_answers_what_it_learnt_and_its_base_does_not(
    run, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = run
    prompts = [arg for question, _ in LEARNT[:2] for arg in ("--prompt", question)]
    document = generate_json(capsys, str(run_dir), *prompts, "--compare", str(tiny_llama_dir))
    assert document["schema"] == "llmlab.generate/1" and document["format"] == "instruction"
    assert document["model"]["path"] == str(run_dir) and document["compare"]["path"] == str(tiny_llama_dir)
    for result, (question, answer) in zip(document["results"], LEARNT[:2], strict=True):
        assert result["prompt"] == question
        assert result["output"] == answer, result
        assert result["compare"]["output"] != answer
        assert result["tokens"] >= 2  # the answer and EOS
        assert result["seconds"] > 0 and result["compare"]["seconds"] > 0


@pytest.mark.slow
def test_compare_prints_both_answers_side_by_side(
    run, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = run
    question, answer = LEARNT[0]
    capsys.readouterr()
    args = ["generate", str(run_dir), "--prompt", question, "--compare", str(tiny_llama_dir)]
    assert main([*args, "--max-new-tokens", "6"]) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if "┃ prompt" in line)
    assert run_dir.name in header and tiny_llama_dir.name in header
    assert answer in table and "tokens," in table


@pytest.mark.slow
def test_adapter_and_merged_model_give_the_same_greedy_answers(
    run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = run
    assert main(["train", "merge", str(run_dir), "--to", str(tmp_path / "merged")]) == 0
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": q, "output": a} for q, a in LEARNT])
    adapter = generate_json(capsys, str(run_dir), "--prompts", str(prompts))
    merged = generate_json(capsys, str(tmp_path / "merged"), "--prompts", str(prompts))
    assert merged["format"] == "instruction"  # merge keeps the run's config, so prompts render alike
    assert [r["output"] for r in merged["results"]] == [r["output"] for r in adapter["results"]]
    assert all(r["exact_match"] for r in adapter["results"]), adapter["results"]


def test_eval_history_records_every_evaluation_with_exact_match(run) -> None:
    _, metrics = run
    history = metrics["eval_history"]
    assert [entry["step"] for entry in history] == [10, 20, 30]
    assert all(entry["perplexity"] > 1 and 0 <= entry["exact_match"] <= 1 for entry in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert metrics["eval_exact_match"] == 1.0 and metrics["examples"]["eval"] == len(LEARNT)
    assert metrics["best_checkpoint"] is None and metrics["stopped_early"] is False


def test_metrics_json_holds_the_provenance_of_the_run(run) -> None:
    run_dir, metrics = run
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk == metrics
    provenance = on_disk["provenance"]
    files = [Path(p) for p in provenance["data_files"]]
    assert [f.name for f in files] == ["facts.jsonl", "held.jsonl"]
    for file in files:
        sha256sum = subprocess.run(["sha256sum", str(file)], capture_output=True, text=True, check=True)
        assert provenance["data_files"][str(file)] == sha256sum.stdout.split()[0]
    versions = provenance["versions"]
    packages = {"python", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "llmlab"}
    assert set(versions) == packages
    assert all(versions.values()), versions
    assert provenance["base_model"]["store_commit"] is None  # a directory, not a store name
    assert provenance["cuda"] is None and provenance["hostname"]
    assert provenance["config"] == yaml.safe_load((run_dir / "train_config.yaml").read_text())
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_generate_refuses_bad_input_naming_the_option(run, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _ = run
    assert main(["generate", str(run_dir)]) == 2
    assert "--prompt TEXT or --prompts FILE.jsonl" in capsys.readouterr().err
    assert main(["generate", str(run_dir), "--prompt", "x", "--top-p", "0"]) == 2
    assert "--top-p: must be in (0, 1] (got 0.0)" in capsys.readouterr().err
    assert main(["generate", "no/such-model", "--prompt", "x"]) == 2
    assert "MODEL: not a directory and not in the model store" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["instruction", "chat"])
def test_prompts_are_tokenized_exactly_as_the_training_examples(tiny_llama_dir: Path, fmt: str) -> None:
    from llmlab.train.data import _encode_record, encode_prompt, prompt_and_answer
    from llmlab.train.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_llama_dir)
    question, answer = LEARNT[0]
    if fmt == "instruction":
        record: dict[str, Any] = {"instruction": question, "input": "Europe", "output": answer}
    else:
        turns = [("system", "Be brief."), ("user", question), ("assistant", answer)]
        record = {"messages": [{"role": role, "content": text} for role, text in turns]}
    trained_prompt, trained_answer = prompt_and_answer(_encode_record(tokenizer, record, fmt, "test"))
    ids, expected = encode_prompt(tokenizer, fmt, record, "test")
    assert ids == trained_prompt and expected == answer
    assert tokenizer.decode(trained_answer, skip_special_tokens=True) == answer
    assert trained_answer[-1] == tokenizer.eos_token_id


def test_generate_loads_a_store_model_offline(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmlab.models.store import ModelStore

    monkeypatch.setenv("LLMLAB_MODEL_STORE", str(tmp_path / "store"))
    (tmp_path / "host.yaml").write_text("{}\n")
    monkeypatch.setenv("LLMLAB_CONFIG", str(tmp_path / "host.yaml"))
    snapshot = ModelStore(tmp_path / "store", group=None).import_model(tiny_llama_dir, name="tiny/llama")
    document = generate_json(capsys, "tiny/llama@main", "--prompt", "hello", "--format", "text")
    assert document["model"]["path"] == str(snapshot) and document["format"] == "text"
    assert 1 <= document["results"][0]["tokens"] <= 12


def test_a_qlora_adapter_is_loaded_on_the_4bit_base_it_was_trained_on(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmlab.config import HostConfig
    from llmlab.train.generate import load_for_generation

    run_dir = tmp_path / "qlora-run"
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(
        run_dir
    )
    (run_dir / "train_config.yaml").write_text(yaml.safe_dump({"method": "qlora", "datasets": []}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (run_dir / name).write_bytes((tiny_llama_dir / name).read_bytes())
    loaded = load_for_generation(str(run_dir), HostConfig())
    four_bit = [m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 14 and all(m.weight.quant_type == "nf4" for m in four_bit)


def test_streamed_tokens_end_as_the_returned_answers(tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmlab.train.generate import Sampling, generate

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = [tokenizer(text)["input_ids"] for text in ("Hello!", "The quick brown fox", "Days:")]
    seen: dict[int, list[list[int]]] = {}
    results = generate(
        model,
        tokenizer,
        prompts,
        Sampling(max_new_tokens=6, batch_size=2),
        lambda i, ids: seen.setdefault(i, []).append(list(ids)),
    )
    assert sorted(seen) == [0, 1, 2]
    for i, result in enumerate(results):
        assert seen[i][-1] == result.ids and len(seen[i]) == len(result.ids)  # one call per new token
