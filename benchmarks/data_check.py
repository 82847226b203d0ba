"""`llmlab data check` against the common per-row checker: rows per second on 100,000 examples, one run.

Both sides read the same JSONL file of instruction examples with the same tokenizer (the tiny model's
byte-level BPE, built here) and report token lengths, exact duplicates and empty answers:

- per-row baseline, as the course material's DataQualityChecker does it: `json.loads` per line, the
  prompt rendered, one `tokenizer.encode` per example in a Python loop, a set of texts for duplicates;
- `check_datasets` (what `llmlab data check` runs), which also finds format errors, normalised
  duplicates, leakage, over-long rows and the packing efficiency.

Goal: >= 5x.

    .venv/bin/python benchmarks/data_check.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

WORDS = [
    *("model", "train", "token", "GPU", "server", "data", "loss", "step", "batch", "memory", "fast"),
    *("small", "large", "question", "answer", "capital", "France", "river", "mountain", "city"),
    *("number", "seven", "eight", "blue", "green", "sky", "grass", "week", "day"),
]


def write_rows(path: Path, rows: int, seed: int = 0) -> Path:
    """Instruction examples of varied length; about 1% exact duplicates and 0.5% empty answers."""
    rng = random.Random(seed)
    written: list[str] = []
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(rows):
            if written and rng.random() < 0.01:
                line = rng.choice(written)
            else:
                record = {
                    "instruction": " ".join(rng.choices(WORDS, k=rng.randint(5, 25))) + "?",
                    "output": ""
                    if rng.random() < 0.005
                    else " ".join(rng.choices(WORDS, k=rng.randint(3, 60))),
                }
                line = json.dumps(record)
                written.append(line)
            fh.write(line + "\n")
    return path


def per_row_baseline(path: Path, tokenizer) -> dict:
    from llmlab.train.data import ALPACA_PROMPT

    lengths, seen = [], set()
    duplicates = empty = 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            example = json.loads(line)
            text = ALPACA_PROMPT.format(instruction=example["instruction"]) + example["output"]
            lengths.append(len(tokenizer.encode(text)))
            duplicates += text in seen
            seen.add(text)
            empty += not example["output"].strip()
    lengths.sort()
    return {
        "rows": len(lengths),
        "duplicates": duplicates,
        "empty": empty,
        "p95": lengths[len(lengths) * 95 // 100],
    }


def tokenizer_only(path: Path, tokenizer) -> float:
    """Seconds the batch encoder alone needs for the texts the check encodes (prompts, then answers)."""
    from llmlab.train.data import ALPACA_PROMPT

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [ALPACA_PROMPT.format(instruction=r["instruction"]) for r in records]
    answers = [r["output"] for r in records]
    started = time.perf_counter()
    for start in range(0, len(records), 2048):
        tokenizer.backend_tokenizer.encode_batch_fast(prompts[start : start + 2048])
        tokenizer.backend_tokenizer.encode_batch_fast(answers[start : start + 2048], add_special_tokens=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    from llmlab.data.check import check_datasets
    from llmlab.train.modeling import load_tokenizer
    from llmlab.train.schema import validate_train_config
    from llmlab.train.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokenizer = load_tokenizer(build_tiny_model(work / "tiny-llama"))
        data = write_rows(work / "rows.jsonl", args.rows)
        cfg = validate_train_config(
            {
                "base_model": str(work / "tiny-llama"),
                "datasets": [{"path": str(data), "format": "instruction"}],
                "sequence_len": 512,
                "eval_split": 0.01,
            },
            "benchmark",
        )
        started = time.perf_counter()
        base = per_row_baseline(data, tokenizer)
        base_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = check_datasets(cfg, tokenizer)
        check_seconds = time.perf_counter() - started
        tokenizer_seconds = tokenizer_only(data, tokenizer)

    total = report["total"]
    print(
        f"rows: {args.rows:,} instruction examples, tokenizer: tiny byte-level BPE ({len(tokenizer)} tokens)"
    )
    print(
        f"per-row baseline:   {args.rows / base_seconds:9,.0f} rows/s ({base_seconds:.2f}s; "
        f"{base['duplicates']} duplicates, {base['empty']} empty, p95 {base['p95']} tokens)"
    )
    print(
        f"llmlab data check:  {args.rows / check_seconds:9,.0f} rows/s ({check_seconds:.2f}s; "
        f"{total['duplicates']} duplicates, {total['normalised_duplicates']} normalised, "
        f"{total['empty']} empty, p95 {total['tokens']['p95']} tokens, {report['leaked']} leaked)"
    )
    print(
        f"tokenizer alone:    {args.rows / tokenizer_seconds:9,.0f} rows/s ({tokenizer_seconds:.2f}s: "
        "encode_batch_fast over the same prompts and answers, nothing else; the check's ceiling)"
    )
    print(f"ratio check / baseline: {base_seconds / check_seconds:.2f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
