"""`llmlab generate MODEL`: answers of a store model, a model directory or a training run, as a table or JSON.

Imports only the standard library and llmlab.config at import time; torch and transformers load in the
handler. Exit codes: 0 done; 2 bad usage or input (the message names the option or the `file:line`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from llmlab.config import ConfigError, load_config

SCHEMA = "llmlab.generate/1"
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="try a model: a store name, a model directory, or a training run's output_dir",
        description="Generate answers for prompts, formatted as the run's data format formatted its training "
        "examples. MODEL: org/name[@rev] in the model store, a model directory, or a run's output_dir "
        "(its adapter on its base, or its full weights).",
    )
    p.add_argument("model", metavar="MODEL", help="store name, model directory or training output_dir")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT", help="a prompt (repeatable)")
    p.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE.jsonl",
        help='prompts, one JSON object a line: {"prompt": TEXT} or a record of the data format',
    )
    p.add_argument(
        "--format",
        choices=("instruction", "chat", "text"),
        default=None,
        help="how prompts are rendered (default: the run's data format; chat or text for other models)",
    )
    p.add_argument(
        "--compare", metavar="OTHER", help="also answer with OTHER (e.g. the base model), side by side"
    )
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (64)")
    p.add_argument(
        "--temperature", type=float, default=0.0, help="0 (the default): greedy; above 0: sampling"
    )
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (with --temperature > 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling (0)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (8)")
    p.add_argument("--json", action="store_true", help=f"machine-readable output (schema {SCHEMA})")
    p.set_defaults(handler=run_generate, config_error_exit=EXIT_USAGE)


def _records(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) for every prompt: --prompt texts first, then the lines of --prompts."""
    records = [(f"--prompt {i + 1}", {"prompt": text}) for i, text in enumerate(args.prompt)]
    if args.prompts is not None:
        from llmlab.train.data import read_records

        if not args.prompts.is_file():
            raise ConfigError(f"--prompts: file not found (got {str(args.prompts)!r})")
        records += list(read_records(args.prompts))
    if not records:
        raise ConfigError("generate: give at least one --prompt TEXT or --prompts FILE.jsonl")
    return records


def _shown_prompt(record: dict[str, Any]) -> str:
    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    if isinstance(record.get("prompt"), list):  # preference_chat: the prompt's messages
        record = {"messages": record["prompt"]}
    if "instruction" in record:
        return "\n".join(str(record[k]) for k in ("instruction", "input") if record.get(k))
    users = [m.get("content", "") for m in record.get("messages") or [] if m.get("role") == "user"]
    return str(users[-1]) if users else str(record.get("text", ""))


def _check_sampling(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens: must be at least 1 (got {args.max_new_tokens})")
    if args.temperature < 0:
        raise ConfigError(f"--temperature: must be 0 (greedy) or more (got {args.temperature})")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p: must be in (0, 1] (got {args.top_p})")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1 (got {args.batch_size})")


def run_generate(args: argparse.Namespace) -> int:
    _check_sampling(args)
    records = _records(args)
    host = load_config(args.config)

    from transformers import set_seed

    from llmlab.train.data import encode_prompt
    from llmlab.train.generate import Sampling, exact_match, generate, load_for_generation, run_format

    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.batch_size)
    primary = load_for_generation(args.model, host)
    fmt = args.format or run_format(primary.run_config, primary.tokenizer)
    loaded = [primary] + ([load_for_generation(args.compare, host)] if args.compare else [])
    answers = []
    expected: list[str | None] = []
    # On a terminal, answers appear as they are generated; the final table replaces them.
    partial = [[""] * len(records) for _ in loaded]
    shown = [_shown_prompt(record) for _, record in records]
    stream = sys.stdout.isatty() and not args.json
    with _live(stream, lambda: _partial_table(shown, [_short(m.label) for m in loaded], partial)):
        for column, model in enumerate(loaded):
            encoded = [encode_prompt(model.tokenizer, fmt, record, where) for where, record in records]
            expected = [answer for _, answer in encoded]

            def show(i: int, ids: list[int], column=column, tokenizer=model.tokenizer) -> None:
                partial[column][i] = tokenizer.decode(ids, skip_special_tokens=True)

            set_seed(args.seed)  # each model samples from the same random stream
            prompts = [ids for ids, _ in encoded]
            on_tokens = show if stream else None
            answers.append(generate(model.model, model.tokenizer, prompts, sampling, on_tokens))

    def entry(generation, answer: str | None) -> dict[str, Any]:
        return {
            "output": generation.text,
            "tokens": len(generation.ids),
            "seconds": generation.seconds,
            "exact_match": None if answer is None else exact_match(generation.text, answer),
        }

    results = []
    for i, prompt in enumerate(shown):
        result = {"prompt": prompt, "expected": expected[i], **entry(answers[0][i], expected[i])}
        result["compare"] = entry(answers[1][i], expected[i]) if args.compare else None
        results.append(result)
    document = {
        "schema": SCHEMA,
        "model": _describe(primary),
        "compare": _describe(loaded[1]) if args.compare else None,
        "format": fmt,
        "sampling": {
            "max_new_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": args.seed,
            "batch_size": sampling.batch_size,
        },
        "results": results,
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        _print_table(document)
    return 0


def _live(enabled: bool, view):
    """A rich Live display re-rendering `view()` while generating, when enabled; else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    from rich.live import Live

    return Live(get_renderable=view, transient=True, refresh_per_second=8)


def _partial_table(prompts: list[str], labels: list[str], partial: list[list[str]]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="generating…")
    for column in ("prompt", *labels):
        table.add_column(column)
    for i, prompt in enumerate(prompts):
        table.add_row(escape(prompt), *(escape(answers[i]) for answers in partial))
    return table


def _describe(model) -> dict[str, Any]:
    return {
        "name": model.label,
        "path": str(model.path),
        "device": str(next(model.model.parameters()).device),
        "precision": model.precision,
    }


def _print_table(document: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    compare = document["compare"]
    how = "sampled" if document["sampling"]["temperature"] else "greedy"
    table = Table(title=f"{document['format']} prompts, {how}")
    table.add_column("prompt")
    table.add_column(_short(document["model"]["name"]))
    if compare:
        table.add_column(_short(compare["name"]))
    for result in document["results"]:
        cells = [escape(result["prompt"]), _cell(result)]
        if compare:
            cells.append(_cell(result["compare"]))
        table.add_row(*cells)
    Console(file=sys.stdout).print(table)


def _short(name: str) -> str:
    """A directory by its last component (a column is narrow); a store name as given."""
    return Path(name).name if Path(name).is_dir() else name


def _cell(entry: dict[str, Any]) -> str:
    from rich.markup import escape

    mark = {True: " [green](exact)[/]", False: " [red](differs)[/]", None: ""}[entry["exact_match"]]
    return f"{escape(entry['output'])}{mark}\n[dim]{entry['tokens']} tokens, {entry['seconds']:.2f}s[/]"
