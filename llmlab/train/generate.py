"""Trying a model: load a store model, a model directory or a training run, and generate for prompts.

A run's `output_dir` is loaded as it was trained: its adapter on its base (or its full weights), its own
tokenizer, and prompts formatted by the run's data format through `llmlab.train.data`, the code that
formatted the training examples. Generation is batched (left-padded), greedy unless a temperature is given,
on the GPU in the run's precision when there is one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmlab.config import ConfigError, HostConfig
from llmlab.train.modeling import Precision


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    batch_size: int = 8


@dataclass(frozen=True)
class Generation:
    ids: list[int]  # the new tokens, up to and including EOS
    text: str
    seconds: float  # wall time of the batch that produced it


@dataclass
class LoadedModel:
    label: str
    path: Path
    model: Any
    tokenizer: Any
    run_config: dict[str, Any] | None  # the run's train_config.yaml, when `path` is a run's output
    precision: str


def read_run_config(path: Path) -> dict[str, Any] | None:
    from llmlab.train.run import CONFIG_FILE  # beside a run's weights, and copied by merge

    file = path / CONFIG_FILE
    if not file.is_file():
        return None
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def run_format(run_config: dict[str, Any] | None, tokenizer) -> str:
    """The data format prompts are rendered in: the run's (all its datasets share one), else chat when the
    tokenizer has a chat template, else text."""
    if run_config is None:
        return "chat" if getattr(tokenizer, "chat_template", None) else "text"
    formats = sorted({spec["format"] for spec in run_config.get("datasets", [])})
    if len(formats) != 1:
        raise ConfigError(f"--format: the run trained on several formats ({', '.join(formats)}); choose one")
    return formats[0]


def load_for_generation(spec: str, host: HostConfig, device: str | None = None) -> LoadedModel:
    """A store name (`org/name[@rev]`), a model directory or a run's output_dir, ready to generate."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmlab.train.modeling import choose_precision, detect_device, resolve_base_model

    path = resolve_base_model(spec, host, key="MODEL").path
    run_config = read_run_config(path)
    device = device or detect_device()
    # The run's precision on a GPU; fp32 on a CPU, where half precision is slow and not more faithful.
    precision = choose_precision(
        (run_config or {}).get("precision", "auto") if device == "cuda" else "fp32", device
    )
    if (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(
            path, dtype=precision.torch_dtype, local_files_only=True, **_quantization(run_config, precision)
        )
    elif (path / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=precision.torch_dtype, local_files_only=True)
    else:
        raise ConfigError(
            f"MODEL: {path} holds neither a model (config.json) nor an adapter (adapter_config.json)"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)  # never the Hub
    if not getattr(model, "is_loaded_in_4bit", False):  # placed by device_map
        model.to(torch.device(device))
    model.eval()
    return LoadedModel(spec, path, model, tokenizer, run_config, precision.name)


def _quantization(run_config: dict[str, Any] | None, precision) -> dict[str, Any]:
    """A QLoRA run's adapter goes on the 4-bit base it was trained on (as it fits where training fit)."""
    if not run_config or run_config.get("method") != "qlora":
        return {}
    from transformers import BitsAndBytesConfig

    compute = run_config.get("bnb_4bit_compute_dtype", "auto")
    return {
        "device_map": {"": 0 if precision.device == "cuda" else "cpu"},  # bitsandbytes places the weights
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=run_config.get("bnb_4bit_quant_type", "nf4"),
            bnb_4bit_use_double_quant=run_config.get("bnb_4bit_use_double_quant", True),
            bnb_4bit_compute_dtype=precision.torch_dtype
            if compute == "auto"
            else Precision(compute, precision.device).torch_dtype,
        ),
    }


OnTokens = Callable[[int, list[int]], None]  # (prompt index, its new tokens so far)


class BatchStreamer:
    """A transformers streamer for a whole batch: hands each row's new tokens, up to EOS, to `on_tokens`.

    transformers' own streamers take one sequence; generate() calls put() with the prompts first, then with
    each step's tokens (one per row)."""

    def __init__(self, first: int, rows: int, eos: int, on_tokens: OnTokens) -> None:
        self.first, self.eos, self.on_tokens = first, eos, on_tokens
        self.rows: list[list[int]] = [[] for _ in range(rows)]
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            row = self.rows[i]
            if row and row[-1] == self.eos:
                continue
            row.append(token)
            self.on_tokens(self.first + i, row)

    def end(self) -> None:
        pass


def generate(
    model, tokenizer, prompts: list[list[int]], sampling: Sampling, on_tokens: OnTokens | None = None
) -> list[Generation]:
    """Generate for token-id prompts in batches; each result stops at EOS (kept) or max_new_tokens.

    `on_tokens` sees every row's tokens as they come (to show them streaming)."""
    import torch

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    options: dict[str, Any] = {"do_sample": sampling.temperature > 0}
    if options["do_sample"]:
        options.update(temperature=sampling.temperature, top_p=sampling.top_p)
    was_training = model.training
    model.eval()
    results: list[Generation] = []
    try:
        for start in range(0, len(prompts), sampling.batch_size):
            batch = prompts[start : start + sampling.batch_size]
            width = max(len(p) for p in batch)
            # Left padding, so every prompt's last token sits at the end where generation continues.
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
            streamer = BatchStreamer(start, len(batch), eos, on_tokens) if on_tokens else None
            began = time.perf_counter()
            with torch.no_grad():
                output = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=sampling.max_new_tokens,
                    pad_token_id=pad,
                    eos_token_id=eos,
                    use_cache=True,
                    streamer=streamer,
                    **options,
                )
            seconds = time.perf_counter() - began
            for row in output[:, width:].tolist():
                new = row[: row.index(eos) + 1] if eos in row else row
                results.append(Generation(new, tokenizer.decode(new, skip_special_tokens=True), seconds))
    finally:
        model.train(was_training)
    return results


def exact_match(output: str, expected: str) -> bool:
    """Equal after trimming surrounding whitespace (a tokenizer may add or drop a leading space)."""
    return output.strip() == expected.strip()
