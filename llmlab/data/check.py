"""`llmlab data check`: what the datasets of a training config hold, measured as training would see them.

Per file and in total: rows, format errors (`file:line`), empty or whitespace-only answers, exact and
normalised duplicates, token lengths (min, p50, p95, max) with the config's tokenizer, how many exceed
`sequence_len` (and what `too_long` does with them), and over the training split: tokens per epoch, the
packing efficiency to expect, and how many evaluation examples (the `eval_split` rows and the
`eval_datasets` files) also occur in training (`leaked`).

It is fast because the per-row work is only parsing, validation and two hashes per example: tokenization
goes through the tokenizer's batch encoder (Rust, on every core) per file, and duplicates and leakage are
sets of 64-bit hashes, not of texts. Lengths are those `llmlab.train.data` produces: the same templates, the
same special tokens, EOS appended; the held-out split is the one `split_eval` draws for the same seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmlab.config import ConfigError
from llmlab.data.files import BadRow, read_rows
from llmlab.train.data import (
    ALPACA_PROMPT,
    ALPACA_PROMPT_WITH_INPUT,
    IGNORE,
    encode_preference,
    pack_lengths,
    preference_fields,
    record_fields,
    split_eval,
)
from llmlab.train.schema import PREFERENCE_FORMATS, DatasetSpec, TrainConfig

SCHEMA = "llmlab.data.check/1"
MAX_LISTED_ERRORS = 50  # per file; the count is always complete
ENCODE_BATCH = 2048
# Normalised duplicates: case-folded, punctuation and runs of whitespace as one space. The field
# separators (\x1f between fields, \x1e between chat turns) survive, so text cannot move between fields.
_NOT_WORD = re.compile(r"[^\w\x1e\x1f]+")


@dataclass
class FileScan:
    """One file, column by column: a hash pair and token counts per valid example."""

    spec: DatasetSpec
    role: str  # train | eval
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    empty: int = 0
    exact: list[int] = field(default_factory=list)
    normalised: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    # Where the first token with a label sits: a truncated example keeps an answer only if it is before
    # sequence_len (text: 1, instruction: the prompt's length, chat: 0, i.e. assumed kept).
    label_start: list[int] = field(default_factory=list)
    # Preference pairs: the token counts of prompt + chosen and prompt + rejected (`lengths`: the longer).
    sides: list[tuple[int, int]] = field(default_factory=list)


def _normalise(key: str) -> str:
    folded = _NOT_WORD.sub(" ", key.casefold())
    return folded.replace(" \x1f", "\x1f").replace("\x1f ", "\x1f").replace(" \x1e", "\x1e").strip()


def token_lengths(tokenizer, texts: list[str], add_special_tokens: bool) -> list[int]:
    """Token counts of `texts`, encoded in batches (in parallel, in Rust, for a fast tokenizer).

    Batches of ENCODE_BATCH keep memory flat: every encoding holds its tokens and offsets until counted.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    lengths: list[int] = []
    for start in range(0, len(texts), ENCODE_BATCH):
        batch = texts[start : start + ENCODE_BATCH]
        if backend is not None:
            lengths += [
                len(e) for e in backend.encode_batch_fast(batch, add_special_tokens=add_special_tokens)
            ]
        else:
            lengths += [
                len(ids) for ids in tokenizer(batch, add_special_tokens=add_special_tokens)["input_ids"]
            ]
    return lengths


def scan_preference_file(tokenizer, spec: DatasetSpec, role: str) -> FileScan:
    """A preference file: identical chosen and rejected answers are format errors (the pair teaches
    nothing); a pair is a duplicate when prompt and both answers repeat; lengths as DPO scores them."""
    scan = FileScan(spec=spec, role=role)
    for where, record in read_rows(spec.path):
        scan.rows += 1
        if isinstance(record, BadRow):
            scan.errors.append(f"{where}: {record.reason}")
            continue
        try:
            pair = preference_fields(record, spec.format, where)
        except ConfigError as exc:
            scan.errors.append(str(exc))
            continue
        prompt = (
            pair.prompt
            if isinstance(pair.prompt, str)
            else "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in pair.prompt)
        )
        key = f"{prompt}\x1f{pair.chosen}\x1f{pair.rejected}"
        scan.empty += not pair.chosen.strip() or not pair.rejected.strip()
        scan.exact.append(hash(key))
        scan.normalised.append(hash(_normalise(key)))
        chosen, rejected = encode_preference(tokenizer, spec.format, pair)
        sides = (len(chosen["input_ids"]), len(rejected["input_ids"]))
        scan.sides.append(sides)
        scan.lengths.append(max(sides))
        scan.label_start.append(next(i for i, label in enumerate(chosen["labels"]) if i and label != IGNORE))
    return scan


def scan_file(tokenizer, spec: DatasetSpec, role: str) -> FileScan:
    if spec.format in PREFERENCE_FORMATS:
        return scan_preference_file(tokenizer, spec, role)
    scan = FileScan(spec=spec, role=role)
    first: list[str] = []  # text, instruction prompt or rendered chat
    second: list[str] = []  # instruction outputs (tokenized apart from the prompt, as in training)
    eos_missing: list[int] = []  # chat: 1 when the rendering does not end with EOS (training appends it)
    fmt = spec.format
    for where, record in read_rows(spec.path):
        scan.rows += 1
        if isinstance(record, BadRow):
            scan.errors.append(f"{where}: {record.reason}")
            continue
        try:
            fields = record_fields(record, fmt, where)
        except ConfigError as exc:
            scan.errors.append(str(exc))
            continue
        if fmt == "text":
            key, empty = fields, not fields.strip()
            first.append(fields)
        elif fmt == "instruction":
            instruction, input_text, output = fields
            key, empty = f"{instruction}\x1f{input_text}\x1f{output}", not output.strip()
            template = ALPACA_PROMPT_WITH_INPUT if input_text else ALPACA_PROMPT
            first.append(template.format(instruction=instruction, input=input_text))
            second.append(output)
        else:
            key = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in fields)
            empty = any(m["role"] == "assistant" and not str(m["content"]).strip() for m in fields)
            text = tokenizer.apply_chat_template(fields, tokenize=False)
            first.append(text)
            eos_missing.append(0 if text.rstrip().endswith(tokenizer.eos_token) else 1)
        scan.empty += empty
        scan.exact.append(hash(key))
        scan.normalised.append(hash(_normalise(key)))
    if fmt == "text":
        starts = token_lengths(tokenizer, first, add_special_tokens=True)
        scan.lengths = [n + 1 for n in starts]  # + EOS
        scan.label_start = [1] * len(starts)
    elif fmt == "instruction":
        prompts = token_lengths(tokenizer, first, add_special_tokens=True)
        outputs = token_lengths(tokenizer, second, add_special_tokens=False)
        scan.lengths = [p + o + 1 for p, o in zip(prompts, outputs, strict=True)]
        scan.label_start = prompts
    else:
        rendered = token_lengths(tokenizer, first, add_special_tokens=False)
        scan.lengths = [n + extra for n, extra in zip(rendered, eos_missing, strict=True)]
        scan.label_start = [0] * len(rendered)
    return scan


def percentile(ordered: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


def token_stats(lengths: Sequence[int]) -> dict[str, int | None]:
    if not lengths:
        return {"min": None, "p50": None, "p95": None, "max": None, "total": 0}
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "max": ordered[-1],
        "total": sum(ordered),
    }


def _summary(
    exact: list[int], normalised: list[int], lengths: list[int], sequence_len: int
) -> dict[str, Any]:
    return {
        "examples": len(exact),
        "duplicates": len(exact) - len(set(exact)),
        "normalised_duplicates": len(normalised) - len(set(normalised)),
        "too_long": sum(1 for n in lengths if n > sequence_len),
        "tokens": token_stats(lengths),
    }


def _file_report(scan: FileScan, sequence_len: int) -> dict[str, Any]:
    return {
        "path": str(scan.spec.path),
        "format": scan.spec.format,
        "role": scan.role,
        "rows": scan.rows,
        "format_errors": len(scan.errors),
        "errors": scan.errors[:MAX_LISTED_ERRORS],
        "empty": scan.empty,
        **_summary(scan.exact, scan.normalised, scan.lengths, sequence_len),
    }


def expected_padding_efficiency(row_lengths: list[int], micro_batch_size: int, seed: int) -> float | None:
    """Real tokens over token slots when shuffled rows are padded to the longest of each micro-batch."""
    if not row_lengths:
        return None
    order = list(row_lengths)
    random.Random(seed).shuffle(order)
    slots = sum(
        max(order[i : i + micro_batch_size]) * len(order[i : i + micro_batch_size])
        for i in range(0, len(order), micro_batch_size)
    )
    return sum(order) / slots


def check_datasets(cfg: TrainConfig, tokenizer) -> dict[str, Any]:
    """The whole report as a JSON-ready mapping (`schema: llmlab.data.check/1`)."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("base_model: the tokenizer has no EOS token; a fine-tuned model could never stop")
    specs = [*cfg.datasets, *cfg.eval_datasets]
    for chat in ("chat", "preference_chat"):
        if any(spec.format == chat for spec in specs) and not tokenizer.chat_template:
            raise ConfigError(
                f"datasets: format {chat!r} needs a tokenizer with a chat template; this one has none"
            )
    seq = cfg.sequence_len
    train_scans = [scan_file(tokenizer, spec, "train") for spec in cfg.datasets]
    eval_scans = [scan_file(tokenizer, spec, "eval") for spec in cfg.eval_datasets]

    exact = [h for s in train_scans for h in s.exact]
    normalised = [h for s in train_scans for h in s.normalised]
    lengths = [n for s in train_scans for n in s.lengths]
    starts = [n for s in train_scans for n in s.label_start]
    # The examples training keeps, in its order; then the same held-out split it draws.
    truncating = cfg.too_long == "truncate"
    kept = [i for i, n in enumerate(lengths) if n <= seq or (truncating and starts[i] < seq)]
    train_idx, eval_idx = split_eval(kept, cfg.eval_split, cfg.seed) if kept else ([], [])

    train_exact = {exact[i] for i in train_idx}
    train_normalised = {normalised[i] for i in train_idx}
    eval_exact = [exact[i] for i in eval_idx] + [h for s in eval_scans for h in s.exact]
    eval_normalised = [normalised[i] for i in eval_idx] + [h for s in eval_scans for h in s.normalised]
    leaked = sum(1 for h in eval_exact if h in train_exact)
    leaked_normalised = sum(1 for h in eval_normalised if h in train_normalised)

    trained = [min(lengths[i], seq) for i in train_idx]
    rows = trained
    sides = [side for s in train_scans for side in s.sides]
    if cfg.method == "dpo":  # both rows of a pair are trained, padded per batch (no packing)
        rows = [min(side, seq) for i in train_idx for side in sides[i]]
        trained = rows
    elif cfg.packing:
        rows = [sum(trained[i] for i in members) for members in pack_lengths(trained, seq)]
    total = {
        "rows": sum(s.rows for s in train_scans),
        "format_errors": sum(len(s.errors) for s in train_scans),
        "empty": sum(s.empty for s in train_scans),
        **_summary(exact, normalised, lengths, seq),
    }
    files = [_file_report(s, seq) for s in (*train_scans, *eval_scans)]
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "base_model": cfg.base_model,
        "sequence_len": seq,
        "too_long_action": cfg.too_long,
        "packing": cfg.packing and cfg.method != "dpo",
        "datasets": files,
        "total": total,
        "split": {
            "train": len(train_idx),
            "eval": len(eval_idx) + sum(len(s.exact) for s in eval_scans),
            "eval_split": len(eval_idx),
            "eval_datasets": sum(len(s.exact) for s in eval_scans),
            "dropped_too_long": len(lengths) - len(kept),
            "truncated": sum(1 for i in kept if lengths[i] > seq),
        },
        "leaked": leaked,
        "leaked_normalised": leaked_normalised,
        "train_tokens": sum(trained),
        "packing_efficiency": expected_padding_efficiency(
            rows, cfg.micro_batch_size * (2 if cfg.method == "dpo" else 1), cfg.seed
        ),
    }
    report["problems"] = problems(report)
    return report


def problems(report: dict[str, Any]) -> dict[str, int]:
    """What `--strict` fails on (and format errors, which fail training itself), as counts."""
    files = report["datasets"]
    eval_files = [f for f in files if f["role"] == "eval"]
    return {
        "format_errors": sum(f["format_errors"] for f in files),
        # Across all training files together, plus within each evaluation file.
        "duplicates": report["total"]["duplicates"] + sum(f["duplicates"] for f in eval_files),
        "empty": sum(f["empty"] for f in files),
        "leaked": report["leaked"],
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for `llmlab train`'s preflight: the counts that matter, and what happens to long rows."""
    total, split, found = report["total"], report["split"], report["problems"]
    tokens = total["tokens"]
    action = "truncated" if report["too_long_action"] == "truncate" else "dropped"
    efficiency = report["packing_efficiency"]
    lines = [
        f"data: {total['rows']:,} rows in {sum(f['role'] == 'train' for f in report['datasets'])} file(s); "
        f"{split['train']:,} train / {split['eval']:,} eval examples; {report['train_tokens']:,} tokens per "
        f"epoch" + (f", expected padding efficiency {efficiency:.1%}" if efficiency is not None else ""),
        f"data: tokens per example p50 {tokens['p50']} / p95 {tokens['p95']} / max {tokens['max']}; "
        f"{total['too_long']:,} longer than sequence_len={report['sequence_len']} ({action}, too_long: "
        f"{report['too_long_action']})",
    ]
    flagged = [f"{count:,} {name.replace('_', ' ')}" for name, count in found.items() if count]
    if flagged:
        lines.append(f"data: found {', '.join(flagged)}; details: llmlab data check CONFIG.yaml")
    return lines
