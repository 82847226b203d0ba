"""`llmlab train` and `llmlab plan`. Imports only the standard library and llmlab.config at import time.

Exit codes: 0 done; 2 bad config or usage (message names the key, the value and what is valid);
128+N stopped by signal N after saving a checkpoint (130 SIGINT, 143 SIGTERM) — rerun with --resume.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from llmlab.config import ConfigError, load_config

EXIT_USAGE = 2


class _AnyWord:
    """argparse's choices for `llmlab train`: any word passes, since a word that is no verb is the
    CONFIG.yaml of the default verb `run` (see _ConfigOrVerb)."""

    def __init__(self, verbs: dict[str, argparse.ArgumentParser]) -> None:
        self.verbs = verbs

    def __contains__(self, word: object) -> bool:
        return True

    def __iter__(self):
        return iter(self.verbs)


class _ConfigOrVerb(argparse._SubParsersAction):
    """`llmlab train merge ...` names a verb; anything else (`llmlab train CONFIG.yaml ...`) means `run`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.choices = _AnyWord(self._name_parser_map)

    def __call__(self, parser, namespace, values, option_string=None):
        if values and values[0] not in self._name_parser_map:
            values = ["run", *values]
        super().__call__(parser, namespace, values, option_string)


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="fine-tune a model (full, LoRA, QLoRA) from one YAML config",
        description="`llmlab train CONFIG.yaml [key=value ...]` fine-tunes as CONFIG.yaml says (`key=value` "
        "overrides a config key); `llmlab train merge OUTPUT_DIR` merges a trained adapter into its base; "
        "`llmlab train submit CONFIG.yaml` runs it as a Slurm job, `llmlab train status JOB` reports on it.",
    )
    train.add_argument("--print-schema", action="store_true", help="print the config's JSON schema and exit")
    train.set_defaults(handler=_schema_or_usage, config_error_exit=EXIT_USAGE)
    verbs = train.add_subparsers(
        dest="train_verb", metavar="{CONFIG.yaml,merge,submit,status}", action=_ConfigOrVerb
    )

    run = verbs.add_parser("run", help="train from CONFIG.yaml (`run` may be left out)")
    run.add_argument("config_file", metavar="CONFIG.yaml", help="training config")
    run.add_argument("overrides", metavar="key=value", nargs="*", help="override a config key")
    run.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in output_dir"
    )
    run.add_argument("--json", action="store_true", help="print metrics.json to stdout (progress on stderr)")
    launch = run.add_argument_group("multi-process launch (prints the command, runs nothing)")
    launch.add_argument(
        "--launch-command", action="store_true", help="print the torchrun command for this run"
    )
    launch.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per node")
    launch.add_argument("--nnodes", type=int, default=1, help="number of nodes")
    launch.add_argument("--node-rank", type=int, default=0, help="this node's rank (0 = the master)")
    launch.add_argument("--master-addr", default="127.0.0.1", help="address of the rank-0 node")
    launch.add_argument("--master-port", type=int, default=29500, help="rendezvous port on the rank-0 node")
    run.set_defaults(handler=run_train)

    merge = verbs.add_parser("merge", help="merge a trained LoRA/QLoRA adapter into its base model")
    merge.add_argument("run_dir", type=Path, metavar="OUTPUT_DIR", help="the output_dir of a lora/qlora run")
    merge.add_argument(
        "--to", type=Path, default=None, help="where to write the merged model (OUTPUT_DIR/merged)"
    )
    merge.add_argument("--register", metavar="NAME", default=None, help="also import it into the model store")
    merge.set_defaults(handler=run_merge)

    from llmlab.train import submit  # standard library only at import time

    submit.register(verbs)

    plan = subparsers.add_parser(
        "plan",
        help="estimate memory, fit per GPU, speed and cost of a training config (no weights loaded)",
        description="Estimate training memory for full / LoRA / QLoRA, fit per GPU SKU, tokens/s and cost.",
    )
    plan.add_argument("config_file", metavar="CONFIG.yaml", help="training config")
    plan.add_argument("overrides", metavar="key=value", nargs="*", help="override a config key")
    plan.add_argument("--json", action="store_true", help="machine-readable output (schema_version 1)")
    plan.set_defaults(handler=run_plan, config_error_exit=EXIT_USAGE)


def _schema_or_usage(args: argparse.Namespace) -> int:
    if not args.print_schema:
        raise ConfigError("train: a CONFIG.yaml is required (or --print-schema, or `merge OUTPUT_DIR`)")
    from llmlab.train.schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from llmlab.train.schema import load_train_config

    config_path = Path(args.config_file)
    cfg = load_train_config(config_path, args.overrides)
    if args.launch_command:
        from llmlab.train.launch import format_command, launch_command

        command = launch_command(
            config_path,
            args.overrides,
            args.nproc,
            args.nnodes,
            args.node_rank,
            args.master_addr,
            args.master_port,
            args.resume,
            host_config=args.config,
        )
        print(format_command(command))
        return 0

    from llmlab.train.run import is_main_process, train

    host = load_config(args.config)
    progress = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with progress:
        result = train(cfg, host, resume=args.resume)
    metrics = result.metrics
    if not is_main_process():
        return result.exit_code
    if args.json:
        print(json.dumps(metrics, indent=2))
    elif result.interrupted_by:
        print(
            f"llmlab train: {metrics['status']}; checkpoint {metrics['checkpoint']}; continue with --resume"
        )
    else:
        print(
            f"llmlab train: done in {metrics['wall_time_seconds']:.1f}s: "
            f"loss {metrics['initial_loss']:.4f} -> {metrics['final_loss']:.4f}, "
            f"{metrics['tokens_per_second']:.0f} tokens/s, results in {cfg.output_dir}"
        )
    return result.exit_code


def run_merge(args: argparse.Namespace) -> int:
    from llmlab.train.merge import merge_adapter, register_merged

    host = load_config(args.config) if args.register else None
    merged = merge_adapter(args.run_dir, args.to)
    print(f"llmlab train merge: merged model in {merged}")
    if host is not None:
        from llmlab.models.store import StoreError

        try:
            stored = register_merged(merged, args.register, host)
        except (StoreError, ValueError) as exc:
            print(f"llmlab train merge: could not register {args.register!r}: {exc}", file=sys.stderr)
            return 1
        print(f"llmlab train merge: registered as {args.register!r} in the model store ({stored})")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from llmlab.train.modeling import resolve_base_model
    from llmlab.train.plan import make_plan
    from llmlab.train.schema import load_train_config

    cfg = load_train_config(Path(args.config_file), args.overrides)
    plan = make_plan(cfg, resolve_base_model(cfg.base_model, load_config(args.config)).path)
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        _print_plan(plan)
    return 0


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _print_plan(plan: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    params = plan["parameters"]
    console.print(
        f"[bold]{plan['base_model']}[/]: {params['total']:,} parameters "
        f"({plan['architecture']['model_type']}), LoRA trainable {params['lora_trainable']:,}; "
        f"{plan['tokens_per_micro_batch']:,} tokens per micro-batch"
    )
    memory = Table(
        title="Memory per GPU (GiB)" + (", DPO (chosen and rejected rows)" if plan["method"] == "dpo" else "")
    )
    for column in (
        "method",
        "checkpointing",
        "weights",
        "gradients",
        "optimizer",
        "activations",
        "overhead",
        "total",
    ):
        memory.add_column(column, justify="left" if column in ("method", "checkpointing") else "right")
    for row in plan["memory"]:
        chosen = (
            row["method"] == plan["weights"]
            and row["gradient_checkpointing"] == plan["gradient_checkpointing"]
        )
        memory.add_row(
            ("* " if chosen else "") + row["method"],
            "yes" if row["gradient_checkpointing"] else "no",
            *(
                f"{row[key]:.2f}"
                for key in ("weights_gib", "gradients_gib", "optimizer_gib", "activations_gib")
            ),
            f"{row['overhead_gib']:.2f}",
            f"{row['total_gib']:.2f}",
        )
    console.print(memory)
    assumptions = plan["assumptions"]
    fits = Table(
        title=f"{plan['method']} on {assumptions['num_gpus']} GPU(s), {assumptions['distributed']}, "
        f"{assumptions['optimizer']}, MFU {assumptions['mfu']:.0%}, "
        f"{_fmt(plan['epoch_tokens'], ',')} tokens per epoch"
    )
    run = plan["run"]
    columns = ("GPU", "memory GiB", "fits", "headroom GiB", "tokens/s", "hours/epoch", "cost/epoch")
    for column in (*columns, "hours/run", "cost/run"):
        fits.add_column(column, justify="left" if column in ("GPU", "fits") else "right")
    for row in plan["gpus"]:
        fits.add_row(
            row["sku"],
            f"{row['memory_gib']:.1f}" + (" (here)" if row["memory_source"] != "catalogue" else ""),
            "[green]yes[/]" if row["fits"] else "[red]no[/]",
            f"{row['headroom_gib']:.1f}",
            _fmt(row["tokens_per_second"], ",.0f"),
            _fmt(row["hours_per_epoch"], ".2f"),
            _fmt(row["cost_per_epoch"], ",.2f"),
            _fmt(row["hours_per_run"], ".2f"),
            _fmt(row["cost_per_run"], ",.2f"),
        )
    console.print(fits)
    if run["steps"] is not None:
        console.print(
            f"the run: {run['steps']:,} optimizer steps"
            + (f" ({run['epochs']:.2f} epochs of {run['steps_per_epoch']:,} steps)" if run["epochs"] else "")
        )
    cheapest = plan["cheapest"]
    if cheapest:
        console.print(
            f"cheapest that fits: [bold]{cheapest['sku']}[/] x {assumptions['num_gpus']}, "
            f"{cheapest['hours']:.2f} h, {cheapest['cost']:,.2f} for the run"
        )
    else:
        console.print("cheapest that fits: no fitting GPU has a price in plan.gpu_hour_prices")
