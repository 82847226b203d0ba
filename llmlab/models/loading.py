"""What lab notebooks write around from_pretrained, done once on top of transformers and accelerate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def load_model(path: Path, dtype: str = "auto", device_map: str | dict | None = None, **kwargs: Any):
    """(model, tokenizer) from a model directory. `dtype` is a torch dtype name ('bfloat16') or 'auto' (the
    checkpoint's own); `device_map='auto'` spreads a large model over the GPUs and the CPU (accelerate)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(
                f"dtype {dtype!r} is not a torch dtype; use 'auto', 'bfloat16', 'float16' or 'float32'"
            )
        kwargs["dtype"] = getattr(torch, dtype)
    else:
        kwargs["dtype"] = "auto"
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, device_map=device_map, **kwargs)
    return model, tokenizer


def release(*objects: Any) -> list[None]:
    """Drop these references, collect garbage and return cached GPU memory to the driver (accelerate's
    release_memory). Use as `model, tokenizer = release(model, tokenizer)`; the caller's names must go too."""
    from accelerate.utils import release_memory

    return release_memory(*objects)


@dataclass(frozen=True)
class ParameterCount:
    total: int
    trainable: int

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def count_parameters(model: Any) -> ParameterCount:
    """Total and trainable parameters (transformers' own count, which knows about tied weights)."""
    return ParameterCount(model.num_parameters(), model.num_parameters(only_trainable=True))
