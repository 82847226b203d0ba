"""The store as transformers sees it: tiny random-init models (tests/conftest.py) loaded by name, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from llmlab.cli import main
from llmlab.models.loading import count_parameters, release
from llmlab.models.store import ModelStore

# Only transformers, the store as the hub cache, offline: what a lab user's notebook does.
PLAIN_LOAD = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
for name in sys.argv[1:]:
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForCausalLM.from_pretrained(name)
    ids = tokenizer("Hello, how can I help", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    print(name, type(model).__name__, out.shape[1] - ids.shape[1], sum(p.numel() for p in model.parameters()))
"""


def _plain_transformers(store_root: Path, *names: str) -> dict[str, tuple[str, int, int]]:
    """Load each model by name in a fresh process; returns {name: (class, new tokens, parameters)}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLMLAB_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(store_root), HF_HOME=str(store_root.parent / "hf-home"))
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, *names], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    return {name: (arch, int(new), int(params)) for name, arch, new, params in rows}


def test_imported_models_load_by_name_with_plain_transformers_offline(
    store: ModelStore, tiny_llama_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path, capsys
) -> None:
    from llmlab.models.ingest import export_model

    argv = ["models", "import", str(tiny_llama_dir), "--name", "lab/tiny-llama", "--store", str(store.root)]
    assert main([*argv, "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True
    # GPT-2 arrives as an air-gapped host gets it: exported elsewhere, imported from the tarball.
    elsewhere = ModelStore(tmp_path / "elsewhere", group=None)
    elsewhere.import_model(tiny_gpt2_dir, "lab/tiny-gpt2", revision="v1")
    store.import_model(export_model(elsewhere, "lab/tiny-gpt2", tmp_path / "gpt2.tar", False), None)

    loaded = _plain_transformers(store.root, "lab/tiny-llama", "lab/tiny-gpt2")
    assert loaded["lab/tiny-llama"][:2] == ("LlamaForCausalLM", 3)
    assert loaded["lab/tiny-gpt2"][:2] == ("GPT2LMHeadModel", 3)
    assert store.verify("lab/tiny-gpt2@v1").ok

    model, tokenizer = store.load("lab/tiny-llama", dtype="bfloat16")
    counted = count_parameters(model)
    assert counted.total == loaded["lab/tiny-llama"][2] == counted.trainable
    assert str(next(model.parameters()).dtype) == "torch.bfloat16"
    assert tokenizer.pad_token != tokenizer.eos_token
    model.requires_grad_(False)
    assert count_parameters(model).trainable == 0
    assert release(model, tokenizer) == [None, None]
