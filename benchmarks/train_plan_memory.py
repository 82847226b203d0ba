"""How close is `llmlab plan`'s memory estimate to a real run? Planned vs measured peak memory on this CPU.

Each case trains a tiny random-init Llama for a few steps in its own `llmlab train` process and compares
the plan's total (weights + gradients + optimizer + activations, fp32, no GPU runtime overhead) with the
measured growth of the process's peak RSS from just before the model loads. On a CPU the measurement also
holds allocator caches and autograd scratch that a GPU plan does not model, so small models overstate
the error; the larger cases show how the per-parameter and per-token terms hold up.

    .venv/bin/python benchmarks/train_plan_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from llmlab.train.plan import architecture_from_config, estimate_memory, read_model_config
from llmlab.train.schema import validate_train_config
from llmlab.train.tiny import build_tiny_model

MIB = 1024**2
SENTENCE = "the quick brown fox jumps over a lazy dog while GPU servers train small models all day"
WORDS = SENTENCE.split(" ")


def write_dataset(path: Path, examples: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(examples):
            fh.write(json.dumps({"text": " ".join(rng.choices(WORDS, k=rng.randint(20, 60)))}) + "\n")
    return path


def measure(work: Path, hidden: int, layers: int, method: str, checkpointing: bool) -> tuple[float, float]:
    model_dir = work / f"llama-{hidden}x{layers}"
    if not model_dir.exists():
        build_tiny_model(model_dir, "llama", hidden_size=hidden, num_layers=layers)
    data = work / "data.jsonl"
    if not data.exists():
        write_dataset(data, 64)
    out = work / f"run-{hidden}-{layers}-{method}-{checkpointing}"
    config = {
        "base_model": str(model_dir),
        "method": method,
        "datasets": [{"path": str(data), "format": "text"}],
        "sequence_len": 512,
        "micro_batch_size": 4,
        "max_steps": 2,  # optimizer states exist from step 1 on, so step 2 reaches the peak
        "gradient_checkpointing": checkpointing,
        "output_dir": str(out),
        "save_steps": 1000,
        "lora_dropout": 0.0,
    }
    config_path = work / f"{out.name}.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "llmlab.cli", "train", str(config_path), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    memory = json.loads(run.stdout)["memory"]
    measured = (memory["peak_rss_bytes"] - memory["rss_before_model_bytes"]) / MIB
    cfg = validate_train_config(config, "benchmark")
    arch = architecture_from_config(read_model_config(model_dir))
    planned = (
        estimate_memory(arch, cfg, method, checkpointing, compute_bytes=4, overhead_gib=0).total_gib * 1024
    )
    return planned, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the default tiny model and one larger one")
    args = parser.parse_args()
    sizes = [(64, 2), (512, 4)] if args.quick else [(64, 2), (256, 4), (512, 4), (768, 6)]
    print(f"{'model':>12} {'method':>6} {'ckpt':>5} {'planned MiB':>12} {'measured MiB':>13} {'error':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for hidden, layers in sizes:
            for method in ("full", "lora", "qlora"):
                for checkpointing in (False, True):
                    planned, measured = measure(Path(tmp), hidden, layers, method, checkpointing)
                    error = (planned - measured) / measured
                    print(
                        f"{f'h{hidden} x{layers}':>12} {method:>6} {'yes' if checkpointing else 'no':>5} "
                        f"{planned:12.1f} {measured:13.1f} {error:+8.0%}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
