"""The first look at a GPU host: verify's probes, then LoRA and full fine-tunes of a ~1B Llama, in one JSON.

Run by benchmarks/gpu_check.sh (which installs llmlab's few missing dependencies from a wheel directory);
see docs/train.md, "A GPU check". Offline: the model is a random-init Llama built here (TinyLlama-1.1B's
shape: hidden 2048, 22 layers, 32 heads, 4 KV heads, intermediate 5632, vocab 32000) with the tiny
in-process tokenizer; the data are synthetic texts of varied length, packed into sequence_len rows.

For each method it records what `llmlab train --json` measured (tokens/s, MFU with the 4N / 6N accounting
against the SKU's peak, peak allocated and reserved memory) next to what `llmlab plan` predicted for the same
config, and verify's performance probes next to the catalogue figures they were judged against. QLoRA runs
only where bitsandbytes is importable; elsewhere the JSON says why it was skipped.

`--size tiny` runs the same steps on a 2-layer model (on a CPU too: the test suite does), `--dry-run` writes
the configs and plans without training.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

SCHEMA = "llmlab.gpu_check/1"
GIB = 1024**3
# TinyLlama-1.1B's shape: about 1.1e9 parameters, so MFU and memory are those of a real 1B run.
ONE_B = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
SIZES = {
    # sequence_len, micro_batch_size per method, steps, examples
    "1b": {"sequence_len": 2048, "micro_batch": {"lora": 8, "qlora": 8, "full": 4}, "steps": 30},
    "tiny": {"sequence_len": 256, "micro_batch": {"lora": 4, "qlora": 4, "full": 4}, "steps": 3},
}
WORDS = ("the", "a", "model", "GPU", "trains", "tokens", "fast", "data", "server", "memory", "loss", "step",
         "batch", "quick", "brown", "fox", "lazy", "dog")  # fmt: skip


def llmlab(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmlab.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def build_model(path: Path, size: str, weights: bool) -> Path:
    """The model directory: tiny (llmlab.train.tiny), or ~1B initialised on the GPU and saved in bf16."""
    from llmlab.train.tiny import build_tiny_model, train_tokenizer

    if size == "tiny":
        return build_tiny_model(path)
    from transformers import LlamaConfig

    tokenizer = train_tokenizer()
    config = LlamaConfig(
        **ONE_B,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    if not weights:  # enough for `llmlab plan`, which reads config.json alone
        config.save_pretrained(path)
        return path
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    return path


def write_data(path: Path, examples: int, seed: int = 0) -> Path:
    """Texts of log-normal length (median ~60 words, a tail to ~600), so packing has work to do."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(examples):
            words = min(600, max(5, int(rng.lognormvariate(4.1, 0.7))))
            fh.write(json.dumps({"text": " ".join(rng.choices(WORDS, k=words))}) + "\n")
    return path


def plan_total_gib(config_path: Path) -> tuple[float | None, str]:
    """`llmlab plan`'s memory figure for the config (in this process: it reads config.json alone)."""
    from llmlab.config import ConfigError
    from llmlab.train.plan import make_plan
    from llmlab.train.schema import load_train_config

    try:
        cfg = load_train_config(config_path)
        return make_plan(cfg, Path(cfg.base_model), count_tokens=False)["chosen_total_gib"], ""
    except ConfigError as exc:
        return None, str(exc)


def fitting_config(
    base: dict[str, Any], path: Path, device_gib: float | None
) -> tuple[dict, float | None, str]:
    """The config as given if plan says it fits; else with checkpointing, then smaller micro-batches."""
    config = dict(base)
    while True:
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        planned, error = plan_total_gib(path)
        if planned is None or device_gib is None or planned <= 0.92 * device_gib:
            return config, planned, error
        if not config["gradient_checkpointing"]:
            config["gradient_checkpointing"] = True
        elif config["micro_batch_size"] > 1:
            config["micro_batch_size"] //= 2
        else:
            return (
                config,
                planned,
                f"plan: {planned:.1f} GiB does not fit {device_gib:.1f} GiB even at micro-batch 1",
            )


def train_one(method: str, work: Path, model_dir: Path, data: Path, size: str, device_gib: float | None,
              dry_run: bool, steps: int | None) -> dict[str, Any]:  # fmt: skip
    settings = SIZES[size]
    base = {
        "base_model": str(model_dir),
        "method": method,
        "datasets": [{"path": str(data), "format": "text"}],
        "sequence_len": settings["sequence_len"],
        "micro_batch_size": settings["micro_batch"][method],
        "gradient_checkpointing": False,
        "max_steps": steps or settings["steps"],
        "warmup_ratio": 0.0,
        "logging_steps": 5,
        "save_steps": 100_000,  # no checkpoint inside the timed run
        "output_dir": str(work / f"run-{method}"),
        "lora_dropout": 0.0,
    }
    config, planned, error = fitting_config(base, work / f"{method}.yaml", device_gib)
    entry: dict[str, Any] = {
        "micro_batch_size": config["micro_batch_size"],
        "sequence_len": config["sequence_len"],
        "gradient_checkpointing": config["gradient_checkpointing"],
        "planned_gib": planned,
    }
    if error:
        return {**entry, "skipped": error}
    if dry_run:
        return {**entry, "skipped": "--dry-run"}
    started = time.monotonic()
    result = llmlab("train", str(work / f"{method}.yaml"), "--json", timeout=300)
    entry["seconds"] = round(time.monotonic() - started, 1)
    if result.returncode != 0:
        return {**entry, "error": result.stderr.strip()[-2000:]}
    metrics = json.loads(result.stdout)
    memory = metrics["memory"]
    peak = memory.get("peak_reserved_bytes")
    return {
        **entry,
        "device": metrics["device"],
        "precision": metrics["precision"],
        "total_parameters": metrics["total_parameters"],
        "trainable_parameters": metrics["trainable_parameters"],
        "tokens_per_second": metrics["tokens_per_second"],
        "padding_efficiency": metrics["padding_efficiency"],
        "initial_loss": metrics["initial_loss"],
        "final_loss": metrics["final_loss"],
        "mfu": metrics.get("mfu"),  # GPU only: 4N (LoRA) or 6N (full) per token against the SKU peak
        "peak_allocated_gib": memory.get("peak_allocated_bytes", 0) / GIB or None,
        "peak_reserved_gib": peak / GIB if peak else None,
        "peak_rss_gib": memory["peak_rss_bytes"] / GIB,
        # plan includes 1 GiB for the CUDA context and allocator slack, which torch does not count.
        "planned_over_reserved": planned / (peak / GIB) if peak and planned else None,
    }


def verify_probes(level: int) -> dict[str, Any]:
    """`llmlab verify --level N --json`, its performance probes set beside the catalogue's figures."""
    from llmlab.gpus import find_sku

    started = time.monotonic()
    try:
        result = llmlab("verify", "--level", str(level), "--json", timeout=240)
    except subprocess.TimeoutExpired:
        return {"error": "verify did not finish in 240 s"}
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        return {"exit_code": result.returncode, "error": result.stderr.strip()[-2000:]}
    gpus = report.get("host", {}).get("gpus") or []
    sku = find_sku(gpus[0]["name"]) if gpus else None
    return {
        "exit_code": result.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "summary": report["summary"],
        "probes": [
            {key: check[key] for key in ("id", "status", "value", "expected", "unit", "message", "items")}
            for check in report["checks"]
            if check["id"].startswith(("perf.", "train."))
        ],
        "failed": [check["id"] for check in report["checks"] if check["status"] == "fail"],
        "sku_table": None
        if sku is None
        else {
            "name": sku.name,
            "bf16_tflops": sku.bf16_tflops,
            "fp16_tflops": sku.fp16_tflops,
            "memory_bandwidth_gbs": sku.memory_bandwidth_gbs,
            "pcie": f"gen{sku.pcie_gen} x{sku.pcie_width}",
            "nvlink_bandwidth_gbs": sku.nvlink_bandwidth_gbs,
            "source": sku.source,
        },
    }


def host_gpu() -> dict[str, Any] | None:
    from llmlab.gpus import NvmlMemoryReader, find_sku

    gpus = NvmlMemoryReader().gpus()
    if not gpus:
        return None
    sku = find_sku(gpus[0].name)
    return {
        "name": gpus[0].name,
        "count": len(gpus),
        "nvml_memory_mib": gpus[0].memory_mib,
        "sku": sku.name if sku else None,
        "catalogue_memory_mib": sku.memory_mib if sku else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch directory (model, data, runs)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON report")
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default per size)")
    parser.add_argument("--verify-level", type=int, default=2, help="0 skips verify")
    parser.add_argument(
        "--dry-run", action="store_true", help="configs and plans only; no weights, no training"
    )
    args = parser.parse_args()

    started = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    gpu = host_gpu()
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "host": socket.gethostname(),
        "size": args.size,
        "gpu": gpu,
        "verify": verify_probes(args.verify_level) if args.verify_level and not args.dry_run else None,
    }
    model_dir = build_model(args.work / f"llama-{args.size}", args.size, weights=not args.dry_run)
    data = write_data(args.work / "data.jsonl", 3000 if args.size == "1b" else 64)
    device_gib = gpu["nvml_memory_mib"] / 1024 if gpu else None
    runs: dict[str, Any] = {}
    for method in ("lora", "full", "qlora"):
        if method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
            runs[method] = {"skipped": "bitsandbytes is not installed here, so QLoRA is not run"}
            print("gpu_check: QLoRA skipped: bitsandbytes is not installed", file=sys.stderr, flush=True)
            continue
        print(f"gpu_check: {method} ...", file=sys.stderr, flush=True)
        runs[method] = train_one(
            method, args.work, model_dir, data, args.size, device_gib, args.dry_run, args.steps
        )
    report["runs"] = runs
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"gpu_check: wrote {args.out} in {report['seconds']:.0f}s", file=sys.stderr)
    failed = [name for name, run in runs.items() if "error" in run]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
