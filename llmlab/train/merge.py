"""`llmlab train merge`: fold a LoRA / QLoRA adapter into its base weights, optionally into the store."""

from __future__ import annotations

import shutil
from pathlib import Path

from llmlab.config import ConfigError, HostConfig
from llmlab.train.run import CONFIG_FILE


def merge_adapter(run_dir: Path, destination: Path | None = None) -> Path:
    """Merge the adapter saved in `run_dir` into its base model; returns the directory of the merged model.

    The base is loaded unquantised in its own dtype (merging into 4-bit weights would round the update away),
    so a QLoRA adapter yields an ordinary full-precision model.
    """
    if not (run_dir / "adapter_config.json").is_file():
        raise ConfigError(
            f"merge: {run_dir} holds no adapter_config.json; "
            "merge needs the output_dir of a lora or qlora run"
        )
    destination = destination or run_dir / "merged"
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(run_dir, dtype="auto")
    merged = model.merge_and_unload()
    merged.save_pretrained(destination)
    AutoTokenizer.from_pretrained(run_dir).save_pretrained(destination)
    if (run_dir / CONFIG_FILE).is_file():  # so `llmlab generate` formats prompts as the run was trained
        shutil.copyfile(run_dir / CONFIG_FILE, destination / CONFIG_FILE)
    return destination


def register_merged(model_dir: Path, name: str, host: HostConfig) -> Path:
    """Import a merged model into the host's model store under `name`; returns its path in the store."""
    from llmlab.models.store import open_store

    return Path(open_store(host).import_model(model_dir, name=name))
