"""What a run measured, in the terms people compare runs by: tokens/s, padding efficiency, memory, MFU."""

from __future__ import annotations

import math
import resource
import sys
from typing import Any

from llmlab.gpus import find_sku

# Forward + backward FLOPs per token and parameter: full fine-tuning computes gradients for activations and
# weights (2 + 4 = 6); LoRA skips the frozen weights' gradients (2 + 2 = 4, adapters are negligible).
# DPO (per token of the chosen and the rejected rows) adds the reference's forward pass (2) for LoRA/QLoRA;
# full DPO computes the reference log-probabilities before training, outside the timed steps.
FLOPS_PER_TOKEN_PER_PARAM = {"full": 6, "lora": 4, "qlora": 4, "dpo-lora": 6, "dpo-qlora": 6, "dpo-full": 6}


def flops_key(method: str, weights: str) -> str:
    """The FLOPS_PER_TOKEN_PER_PARAM entry of a run: its weights, or dpo-<weights>."""
    return f"dpo-{weights}" if method == "dpo" else weights


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (the kernel's high-water mark)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_memory(device: str) -> dict[str, int]:
    """On GPU: torch's peak allocated and reserved bytes on this process's device; always: peak RSS."""
    memory = {"peak_rss_bytes": peak_rss_bytes()}
    if device == "cuda":
        import torch

        memory["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        memory["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
    return memory


def mfu_estimate(
    method: str, base_params: int, tokens_per_second: float, world_size: int, precision: str, device_name: str
) -> dict[str, Any]:
    """Model FLOPs utilisation, with the accounting spelled out; `mfu` is None where no peak is known."""
    per_token = FLOPS_PER_TOKEN_PER_PARAM[method] * base_params
    sku = find_sku(device_name)
    peak_tflops = None
    if sku is not None and precision in ("bf16", "fp16"):
        peak_tflops = sku.bf16_tflops if precision == "bf16" else sku.fp16_tflops
    achieved = tokens_per_second * per_token
    return {
        "mfu": achieved / (peak_tflops * 1e12 * world_size) if peak_tflops else None,
        "flops_per_token": per_token,
        "accounting": f"{FLOPS_PER_TOKEN_PER_PARAM[method]}N per token ({method}), N = {base_params} base "
        "parameters; attention FLOPs not counted",
        "peak_tflops_per_device": peak_tflops,
        "peak_source": f"{sku.name} {precision} dense peak ({sku.source})" if peak_tflops and sku else None,
        "devices": world_size,
    }


def loss_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{"step": entry["step"], "loss": entry["loss"]} for entry in log_history if "loss" in entry]


def eval_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every evaluation the Trainer logged: step, loss, perplexity, (with eval_generate) exact match and (DPO)
    the reward margin and accuracy."""
    return [
        {
            "step": entry["step"],
            "loss": entry["eval_loss"],
            # DPO's eval loss is its preference loss, of which a perplexity would mean nothing.
            "perplexity": None if "eval_rewards/margins" in entry else perplexity(entry["eval_loss"]),
            "exact_match": entry.get("eval_exact_match"),
            "reward_margin": entry.get("eval_rewards/margins"),
            "reward_accuracy": entry.get("eval_rewards/accuracies"),
        }
        for entry in log_history
        if "eval_loss" in entry
    ]


def reward_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """DPO's training logs: the mean reward margin (chosen minus rejected) and accuracy per logging step."""
    return [
        {"step": e["step"], "margin": e["rewards/margins"], "accuracy": e["rewards/accuracies"]}
        for e in log_history
        if "rewards/margins" in e
    ]


def run_cost(device_name: str, devices: int, wall_seconds: float, prices: dict[str, float]) -> dict[str, Any]:
    """Device-hours of the run times the price of its device (by catalogue SKU name, else by the device's
    own name, e.g. `cpu`); `total` is None when no price is configured for it."""
    sku = find_sku(device_name) if device_name != "cpu" else None
    name = sku.name if sku else device_name
    price = prices.get(name, prices.get(device_name))
    hours = wall_seconds / 3600 * devices
    return {
        "device": name,
        "device_hours": hours,
        "price_per_device_hour": price,
        "total": hours * price if price is not None else None,
    }


def perplexity(loss: float | None) -> float | None:
    return None if loss is None else math.exp(min(loss, 700.0))  # capped: JSON has no infinity
