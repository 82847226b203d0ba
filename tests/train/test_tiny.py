from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from llmlab.train.tiny import build_tiny_model


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_tiny_model_loads_offline_with_distinct_pad_and_eos(fixture: str, request: pytest.FixtureRequest):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path: Path = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert (path / "model.safetensors").is_file()
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.vocab_size == len(tokenizer)
    text = "The quick brown fox jumps over the lazy dog."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenize=False
    )
    assert chat.index("hello") < chat.index(tokenizer.eos_token)


def test_build_is_deterministic(tmp_path: Path, tiny_llama_dir: Path) -> None:
    again = build_tiny_model(tmp_path / "again", "llama")

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(again / name) == digest(tiny_llama_dir / name), name


def test_unknown_arch_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gpt2"):
        build_tiny_model(tmp_path, "mamba")  # type: ignore[arg-type]
