"""Packing vs padding to max length: non-padding tokens per second, measured in one run on one tiny model.

Both sides train LoRA for one epoch over the same examples of varied length (most short, a few long, as
in real instruction data) with the same Trainer settings:

- llmlab train: examples packed into sequence_len rows (block-diagonal attention through position_ids);
- baseline: the common pipeline, `tokenizer(..., padding="max_length", truncation=True)` with
  `DataCollatorForLanguageModeling(mlm=False)` and no packing.

The figure compared is tokens that are not padding, per second of training (the Trainer's own
`num_input_tokens_seen="non_padding"` count over its `train_runtime`). Goal: packing >= 3x.

    .venv/bin/python benchmarks/train_packing.py [--examples 256] [--sequence-len 512]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

WORDS = (
    "model",
    "train",
    "token",
    "GPU",
    "server",
    "data",
    "loss",
    "step",
    "batch",
    "memory",
    "fast",
    "small",
)


def write_varied_dataset(path: Path, examples: int, seed: int = 0) -> Path:
    """Lengths from a log-normal: median ~25 words, a long tail up to ~250."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(examples):
            words = min(250, max(3, int(rng.lognormvariate(3.2, 0.8))))
            fh.write(json.dumps({"text": " ".join(rng.choices(WORDS, k=words))}) + "\n")
    return path


def run_llmlab(model_dir: Path, data: Path, work: Path, sequence_len: int, micro_batch: int) -> dict:
    from llmlab.train.run import train
    from llmlab.train.schema import validate_train_config

    cfg = validate_train_config(
        {
            "base_model": str(model_dir),
            "method": "lora",
            "datasets": [{"path": str(data), "format": "text"}],
            "sequence_len": sequence_len,
            "micro_batch_size": micro_batch,
            "epochs": 1,
            "logging_steps": 1000,
            "save_steps": 100000,
            "output_dir": str(work / "llmlab"),
        },
        "benchmark",
    )
    return train(cfg).metrics


def run_padded_baseline(model_dir: Path, data: Path, work: Path, sequence_len: int, micro_batch: int) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [json.loads(line)["text"] + tokenizer.eos_token for line in data.read_text().splitlines()]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=sequence_len)
    rows = [{"input_ids": ids, "attention_mask": mask} for ids, mask in zip(*encoded.values(), strict=False)]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.use_cache = False
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    args = TrainingArguments(
        output_dir=str(work / "baseline"),
        per_device_train_batch_size=micro_batch,
        num_train_epochs=1,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        use_cpu=True,
        save_strategy="no",
        logging_steps=1000,
        report_to=[],
        include_num_input_tokens_seen="non_padding",
        seed=42,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    runtime = trainer.train().metrics["train_runtime"]
    tokens = trainer.state.num_input_tokens_seen
    return {"tokens_per_second": tokens / runtime, "trained_tokens": tokens, "train_runtime_seconds": runtime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--sequence-len", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=4)
    args = parser.parse_args()

    from llmlab.train.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = build_tiny_model(work / "tiny-llama", "llama")
        data = write_varied_dataset(work / "varied.jsonl", args.examples)
        baseline = run_padded_baseline(model_dir, data, work, args.sequence_len, args.micro_batch)
        packed = run_llmlab(model_dir, data, work, args.sequence_len, args.micro_batch)

    ratio = packed["tokens_per_second"] / baseline["tokens_per_second"]
    print(
        f"examples: {args.examples}, sequence_len {args.sequence_len}, micro-batch {args.micro_batch}, LoRA"
    )
    print(
        f"padded to max length: {baseline['tokens_per_second']:9.0f} non-padding tokens/s "
        f"({baseline['trained_tokens']} tokens in {baseline['train_runtime_seconds']:.1f}s)"
    )
    print(
        f"llmlab train, packed: {packed['tokens_per_second']:9.0f} non-padding tokens/s "
        f"({packed['trained_tokens']} tokens in {packed['train_runtime_seconds']:.1f}s, "
        f"padding efficiency {packed['padding_efficiency']:.1%})"
    )
    print(f"ratio packed / padded: {ratio:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
