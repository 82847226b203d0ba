from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
from train_helpers import write_jsonl

from llmlab.config import ConfigError
from llmlab.train.data import (
    IGNORE,
    PackedCollator,
    encode_chat,
    encode_datasets,
    encode_instruction,
    encode_text,
    pack,
    split_eval,
)
from llmlab.train.modeling import load_tokenizer
from llmlab.train.schema import DatasetSpec


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir: Path):
    return load_tokenizer(tiny_llama_dir)


def labelled_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example["labels"] if t != IGNORE])


def test_instruction_loss_is_on_the_response_and_eos_only(tokenizer) -> None:
    example = encode_instruction(tokenizer, "What is the capital of France?", "", "Paris.")
    assert labelled_text(tokenizer, example) == "Paris." + tokenizer.eos_token
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert example["labels"][-1] == tokenizer.eos_token_id
    prompt = tokenizer.decode(
        example["input_ids"][: example["labels"].index(next(t for t in example["labels"] if t != IGNORE))]
    )
    assert prompt.endswith("### Response:\n") and "France" in prompt


def test_instruction_input_section_is_prompt(tokenizer) -> None:
    example = encode_instruction(tokenizer, "Translate to French.", "good morning", "bonjour")
    assert "good morning" in tokenizer.decode(example["input_ids"])
    assert labelled_text(tokenizer, example) == "bonjour" + tokenizer.eos_token


def test_chat_loss_covers_every_assistant_turn_and_nothing_else(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
    example = encode_chat(tokenizer, messages)
    eos = tokenizer.eos_token
    assert labelled_text(tokenizer, example) == f"Paris.{eos}Rome.{eos}"
    assert tokenizer.decode(example["input_ids"]) == tokenizer.apply_chat_template(messages, tokenize=False)
    masked = tokenizer.decode(
        [t for t, lab in zip(example["input_ids"], example["labels"], strict=True) if lab == IGNORE]
    )
    for unseen in ("Be brief.", "Capital of France?", "And Italy?", "<|user|>", "<|assistant|>"):
        assert unseen in masked


def test_text_learns_every_token_and_ends_with_eos(tokenizer) -> None:
    example = encode_text(tokenizer, "The quick brown fox.")
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert example["labels"][0] == IGNORE
    assert example["labels"][1:] == example["input_ids"][1:]


def test_pad_token_is_added_when_it_equals_eos(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    copy = tmp_path / "pad-is-eos"
    shutil.copytree(tiny_llama_dir, copy)
    tok = AutoTokenizer.from_pretrained(copy)
    tok.pad_token = tok.eos_token
    tok.save_pretrained(copy)
    fixed = load_tokenizer(copy)
    assert fixed.pad_token_id is not None and fixed.pad_token_id != fixed.eos_token_id


def test_packing_fills_rows_without_losing_or_splitting_examples(tokenizer) -> None:
    texts = [" ".join(["word"] * n) for n in (1, 3, 5, 8, 13, 2, 21, 4, 6, 9)]
    examples = [encode_text(tokenizer, t) for t in texts]
    rows = pack(examples, sequence_len=64)
    assert len(rows) < len(examples)
    assert all(len(row["input_ids"]) <= 64 for row in rows)
    recovered = []
    for row in rows:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        recovered += [tuple(row["input_ids"][a:b]) for a, b in itertools.pairwise(starts)]
        assert all(row["labels"][s] == IGNORE for s in starts[:-1]), "no loss across an example boundary"
    assert sorted(recovered) == sorted(tuple(e["input_ids"]) for e in examples)


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_packed_examples_do_not_attend_to_each_other(
    fixture: str, request: pytest.FixtureRequest, tokenizer
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(fixture)).eval()
    texts = ("The quick brown fox.", "Hello! How can I help you today?")
    examples = [encode_text(tokenizer, t) for t in texts]
    rows = pack(examples, sequence_len=128)
    assert len(rows) == 1
    short_row = {"input_ids": [5], "labels": [IGNORE], "position_ids": [0]}
    batch = PackedCollator(tokenizer.pad_token_id)([*rows, short_row])
    with torch.no_grad():
        # use_cache=False, as in training: with a cache, transformers does not look for packed sequences.
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        packed = model(**inputs, use_cache=False).logits[0]
        offset = 0
        for example in sorted(examples, key=lambda e: -len(e["input_ids"])):
            alone = model(input_ids=torch.tensor([example["input_ids"]])).logits[0]
            n = len(example["input_ids"])
            torch.testing.assert_close(packed[offset : offset + n], alone, atol=1e-4, rtol=1e-4)
            offset += n


def test_collator_pads_with_pad_token_and_ignored_labels(tokenizer) -> None:
    rows = [
        {"input_ids": [7, 8, 9], "labels": [IGNORE, 8, 9], "position_ids": [0, 1, 2]},
        {"input_ids": [4], "labels": [IGNORE], "position_ids": [0]},
    ]
    batch = PackedCollator(tokenizer.pad_token_id)(rows)
    assert batch["input_ids"][1].tolist() == [4, tokenizer.pad_token_id, tokenizer.pad_token_id]
    assert batch["labels"][1].tolist() == [IGNORE, IGNORE, IGNORE]
    assert batch["position_ids"][1].tolist() == [0, 0, 1]
    assert "attention_mask" not in batch


def test_bad_jsonl_names_file_and_line(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: not valid JSON"):
        encode_datasets(tokenizer, [DatasetSpec(path=path, format="text")], 64)


def test_missing_field_names_the_format_and_keys(tokenizer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "inst.jsonl", [{"instruction": "Hi", "answer": "Hello"}])
    with pytest.raises(ConfigError, match=r"inst\.jsonl:1: format 'instruction' needs .*'output'.*answer"):
        encode_datasets(tokenizer, [DatasetSpec(path=path, format="instruction")], 64)


def test_too_long_examples_are_dropped_and_counted(tokenizer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "short"}, {"text": "long " * 40}])
    data = encode_datasets(tokenizer, [DatasetSpec(path=path, format="text")], 32)
    assert (len(data.examples), data.dropped_too_long) == (1, 1)
    with pytest.raises(ConfigError, match="no example fits sequence_len=4"):
        encode_datasets(tokenizer, [DatasetSpec(path=path, format="text")], 4)


def test_eval_split_holds_out_a_seeded_fraction() -> None:
    examples = [{"input_ids": [i], "labels": [i]} for i in range(20)]
    train, held = split_eval(examples, 0.2, seed=1)
    assert len(held) == 4 and len(train) == 16
    assert split_eval(examples, 0.2, seed=1) == (train, held)
    assert {e["input_ids"][0] for e in train} | {e["input_ids"][0] for e in held} == set(range(20))
