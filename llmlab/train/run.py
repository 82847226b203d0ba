"""One training run: load, adapt, train with the transformers Trainer, evaluate, and leave results behind.

`output_dir` receives the adapter (or full weights), the tokenizer, `train_config.yaml` (the resolved config)
and `metrics.json`; checkpoints go to `output_dir/checkpoint-N`. SIGINT/SIGTERM finish the current optimizer
step, save a checkpoint and stop; `resume=True` continues from the newest checkpoint with the optimizer,
scheduler, RNG and data position restored, so the resumed run ends where an uninterrupted one would.
`train()` reads as its steps: preflight, resolve the base model, summarise and prepare the data, build the
trainer, train, save, collect the metrics (evaluation and provenance included), write them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmlab.atomic import atomic_write
from llmlab.config import ConfigError, HostConfig, load_config
from llmlab.train.data import Example
from llmlab.train.modeling import ResolvedModel
from llmlab.train.schema import TrainConfig

METRICS_SCHEMA_VERSION = 1
CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.json"


@dataclass
class RunResult:
    metrics: dict[str, Any]
    interrupted_by: int | None  # the signal number, when a signal stopped the run

    @property
    def exit_code(self) -> int:
        return 128 + self.interrupted_by if self.interrupted_by else 0


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def say(message: str) -> None:
    if is_main_process():
        print(f"llmlab train: {message}", flush=True)


def checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def preflight(cfg: TrainConfig, resume: bool) -> None:
    """Cheap checks that would otherwise fail after minutes of loading."""
    existing = checkpoints(cfg.output_dir) if cfg.output_dir.is_dir() else []
    if existing and not resume:
        raise ConfigError(
            f"output_dir: {cfg.output_dir} already holds {existing[-1].name}; "
            "pass --resume to continue that run, or choose a new output_dir"
        )
    if resume and not existing:
        raise ConfigError(
            f"--resume: no checkpoint-N directory in output_dir {cfg.output_dir} to resume from"
        )
    from llmlab.train.modeling import check_memory_knobs

    check_memory_knobs(cfg)
    if cfg.method == "dpo" and importlib.util.find_spec("trl") is None:
        raise ConfigError(
            "method: dpo needs the trl package (pip install 'llmlab[ml]'); valid: lora, qlora, full"
        )
    if cfg.tracking == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "tracking: 'tensorboard' needs the tensorboard package; valid without it: none, mlflow"
        )


@functools.cache
def _make_trainer_classes():
    """Trainer subclass and callback, defined lazily so importing this module does not import transformers."""
    import torch
    from transformers import Trainer, TrainerCallback

    class TokenCounting:
        """Counts real and padding token slots of the training batches (for padding efficiency)."""

        real_tokens = 0
        token_slots = 0

        def training_step(self, model, inputs, num_items_in_batch=None):
            ids = inputs["input_ids"]
            self.token_slots += ids.numel()
            self.real_tokens += int((ids != self.processing_class.pad_token_id).sum())
            return super().training_step(model, inputs, num_items_in_batch)

    class CountingTrainer(TokenCounting, Trainer):
        """Adds `exact_match` to each evaluation's metrics when given a probe (before they are logged,
        compared for the best checkpoint, or seen by early stopping)."""

        probe: ExactMatchProbe | None = None

        def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
            output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
            if self.probe is not None:
                output.metrics[f"{metric_key_prefix}_exact_match"] = self.probe(self.model)
            return output

    class GracefulStop(TrainerCallback):
        """First SIGINT/SIGTERM: finish the step, checkpoint, stop. A second SIGINT aborts at once."""

        def __init__(self) -> None:
            self.received: int | None = None
            self._previous = {}
            # Python delivers signals to the main thread only; a caller that trains in a worker thread
            # keeps its own handling (and training runs to its end).
            if threading.current_thread() is threading.main_thread():
                self._previous = {
                    sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
                }

        def _handle(self, signum: int, frame: Any) -> None:
            if self.received is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.received = signum
            say(f"received {signal.Signals(signum).name}: saving a checkpoint after this step, then stopping")

        def on_step_end(self, args, state, control, **kwargs):
            stop = torch.tensor([self.received or 0], device=args.device)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # Every rank must stop at the same step, or the others wait forever in the next all-reduce.
                torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
            if int(stop.item()):
                self.received = int(stop.item())
                control.should_save = True
                control.should_training_stop = True
            return control

        def restore(self) -> None:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    return CountingTrainer, GracefulStop, TokenCounting


@functools.cache
def _dpo_trainer_class():
    from trl import DPOTrainer

    _, _, TokenCounting = _make_trainer_classes()

    class CountingDPOTrainer(TokenCounting, DPOTrainer):
        """TRL's DPOTrainer, counting token slots as the SFT trainer does (chosen and rejected rows both)."""

    return CountingDPOTrainer


def replica_checksums(model, device) -> list[list[float]]:
    """Per rank (sum, sum of squares) of the trainable weights: DDP replicas that drifted apart show here."""
    import torch

    params = [p.detach().double() for p in model.parameters() if p.requires_grad]
    local = torch.tensor(
        [sum(float(p.sum()) for p in params), sum(float((p * p).sum()) for p in params)],
        dtype=torch.float64,
        device=device,
    )
    gathered = [torch.zeros_like(local) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, local)
    return [t.tolist() for t in gathered]


def training_arguments(cfg: TrainConfig, precision):
    """transformers' TrainingArguments, or for DPO TRL's DPOConfig (the same, plus DPO's settings)."""
    from llmlab.train.launch import distributed_arguments

    gradient_checkpointing = cfg.gradient_checkpointing and cfg.distributed != "fsdp"
    if cfg.method == "dpo":
        from trl import DPOConfig as Arguments

        dpo: dict[str, Any] = {
            "beta": cfg.dpo_beta,
            "loss_type": [cfg.dpo_loss],
            "max_length": cfg.sequence_len,
            # Full DPO keeps no second copy of the weights: the reference log-probabilities are those of
            # the base, computed once before training (LoRA/QLoRA: the base is the adapter disabled).
            "precompute_ref_log_probs": cfg.weights == "full",
        }
    else:
        from transformers import TrainingArguments as Arguments

        dpo = {}
    return Arguments(
        **dpo,
        output_dir=str(cfg.output_dir),
        per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        bf16=precision.name == "bf16",  # autocast, on CPU too
        fp16=precision.name == "fp16",
        use_cpu=precision.device == "cpu",
        activation_checkpointing=gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        optim=cfg.optimizer,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if cfg.eval_steps else "no",
        eval_steps=cfg.eval_steps,
        do_eval=cfg.has_eval,
        # The Trainer's own best-checkpoint machinery: it keeps that checkpoint through save_total_limit's
        # rotation and loads it at the end; early stopping compares the same metric.
        load_best_model_at_end=cfg.save_best,
        metric_for_best_model="eval_loss" if cfg.save_best or cfg.early_stopping_patience else None,
        greater_is_better=False if cfg.save_best or cfg.early_stopping_patience else None,
        report_to=["tensorboard"] if cfg.tracking == "tensorboard" else [],  # mlflow: llmlab.train.tracking
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        ddp_backend="gloo"
        if precision.device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1
        else None,
        **distributed_arguments(cfg),
    )


class ExactMatchProbe:
    """Greedy answers for the first `limit` eval examples against their expected answers (EOS included)."""

    def __init__(self, examples: list[Example], tokenizer, limit: int) -> None:
        from llmlab.train.data import prompt_and_answer

        pairs = [prompt_and_answer(example) for example in examples[:limit]]
        self.prompts = [prompt for prompt, _ in pairs]
        self.answers = [answer for _, answer in pairs]
        self.tokenizer = tokenizer

    def __call__(self, model) -> float:
        from llmlab.train.generate import Sampling, generate

        longest = max(len(answer) for answer in self.answers)
        generated = generate(model, self.tokenizer, self.prompts, Sampling(max_new_tokens=longest))
        hits = sum(g.ids == answer for g, answer in zip(generated, self.answers, strict=True))
        return hits / len(self.answers)


@dataclass
class PreparedData:
    train_rows: Any  # examples or packed rows; for DPO a datasets.Dataset of preference rows
    eval_rows: Any
    eval_examples: list[Example]  # before packing: what eval_generate asks
    collator: Any
    n_train: int
    dropped: int
    truncated: int


def data_summary(cfg: TrainConfig, tokenizer) -> None:
    """The preflight lines of `llmlab data check` (faults and lengths of the data), on the main rank."""
    if is_main_process():
        from llmlab.data.check import check_datasets, summary_lines

        for line in summary_lines(check_datasets(cfg, tokenizer)):
            say(line)


def encode_and_split(cfg: TrainConfig, encode, items, unit: str) -> tuple[list, list, int, int]:
    """cfg.datasets through `encode`, the eval set split off, cfg.eval_datasets added to it, and a line on
    what sequence_len cut: (train, eval, dropped, truncated). `items` takes the encoded units out."""
    from llmlab.train import data as datamod

    encoded = encode(cfg.datasets)
    dropped, truncated = encoded.dropped_too_long, encoded.truncated
    train, held_out = datamod.split_eval(items(encoded), cfg.eval_split, cfg.seed)
    if cfg.eval_datasets:
        extra = encode(cfg.eval_datasets)
        held_out += items(extra)
        dropped += extra.dropped_too_long
        truncated += extra.truncated
    if dropped or truncated:
        say(
            f"longer than sequence_len={cfg.sequence_len}: {truncated} {unit} truncated, {dropped} dropped "
            f"(too_long: {cfg.too_long})"
        )
    return train, held_out, dropped, truncated


def prepare_preference_data(cfg: TrainConfig, tokenizer) -> PreparedData:
    """DPO's pairs as TRL's rows (it tokenizes and pads them: no packing), split as SFT examples are."""
    from datasets import Dataset

    from llmlab.train import data as datamod

    train_rows, eval_rows, dropped, truncated = encode_and_split(
        cfg,
        lambda specs: datamod.preference_datasets(tokenizer, specs, cfg.sequence_len, cfg.too_long),
        lambda encoded: encoded.rows,
        "pairs",
    )
    say(f"{len(train_rows)} preference pairs for training, {len(eval_rows)} for evaluation")
    return PreparedData(
        Dataset.from_list(train_rows),
        Dataset.from_list(eval_rows) if eval_rows else [],
        [],
        None,
        len(train_rows),
        dropped,
        truncated,
    )


def prepare_data(cfg: TrainConfig, tokenizer) -> PreparedData:
    """Tokenize, split off the eval set (plus eval_datasets), and pack (or pad per batch) as configured."""
    if cfg.method == "dpo":
        return prepare_preference_data(cfg, tokenizer)
    from llmlab.train import data as datamod

    train_examples, eval_examples, dropped, truncated = encode_and_split(
        cfg,
        lambda specs: datamod.encode_datasets(tokenizer, specs, cfg.sequence_len, cfg.too_long),
        lambda encoded: encoded.examples,
        "examples",
    )
    if cfg.packing:
        train_rows = datamod.pack(train_examples, cfg.sequence_len)
        eval_rows = datamod.pack(eval_examples, cfg.sequence_len) if eval_examples else []
        collator: Any = datamod.PackedCollator(tokenizer.pad_token_id)
    else:
        train_rows, eval_rows, collator = train_examples, eval_examples, datamod.padded_collator(tokenizer)
    say(
        f"{len(train_examples)} training examples in {len(train_rows)} rows, "
        f"{len(eval_examples)} for evaluation"
    )
    return PreparedData(
        train_rows, eval_rows, eval_examples, collator, len(train_examples), dropped, truncated
    )


@dataclass
class Session:
    """Everything a run builds before its first step."""

    trainer: Any
    args: Any
    precision: Any
    trainable: int
    total: int
    rss_before_model: int


def build_trainer(cfg: TrainConfig, model_dir: Path, precision, tokenizer, data: PreparedData) -> Session:
    from llmlab.train.metrics import current_rss_bytes
    from llmlab.train.modeling import load_base, load_model, lora_config, parameter_counts

    # Libraries are imported and the Trainer's state is set up before the baseline, so that the memory
    # metrics (and `llmlab plan`'s check against them) count the model and its training state, not code.
    CountingTrainer, _, _ = _make_trainer_classes()
    args = training_arguments(cfg, precision)
    if cfg.weights != "full":
        import peft  # noqa: F401
    if cfg.method == "dpo":
        trainer_class = _dpo_trainer_class()
    rss_before_model = current_rss_bytes()
    if cfg.method == "dpo":
        # TRL wraps the base in the adapter itself, so that its reference is the base with the adapter
        # disabled; full DPO precomputes the reference log-probabilities instead (training_arguments).
        trainer = trainer_class(
            model=load_base(cfg, model_dir, tokenizer, precision),
            args=args,
            train_dataset=data.train_rows,
            eval_dataset=data.eval_rows or None,
            processing_class=tokenizer,
            peft_config=lora_config(cfg) if cfg.weights != "full" else None,
        )
    else:
        trainer = CountingTrainer(
            model=load_model(cfg, model_dir, tokenizer, precision),
            args=args,
            train_dataset=data.train_rows,
            eval_dataset=data.eval_rows or None,
            data_collator=data.collator,
            processing_class=tokenizer,
        )
    trainable, total = parameter_counts(trainer.model)
    say(f"{cfg.method}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")
    if cfg.eval_generate:
        trainer.probe = ExactMatchProbe(data.eval_examples, tokenizer, cfg.eval_generate)
    if cfg.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    return Session(trainer, args, precision, trainable, total, rss_before_model)


def run_training(trainer, resume: bool) -> tuple[Any, int | None]:
    """Train; returns the Trainer's output and the signal that stopped it early, if one did."""
    _, GracefulStop, _ = _make_trainer_classes()
    stopper = GracefulStop()  # from here on, a signal means "checkpoint and stop"
    trainer.add_callback(stopper)
    try:
        output = trainer.train(resume_from_checkpoint=True if resume else None)
    finally:
        stopper.restore()
    return output, stopper.received


def evaluation_metrics(cfg: TrainConfig, trainer, interrupted: int | None) -> dict[str, Any]:
    """The final model's eval loss (the best checkpoint's with save_best), every evaluation of the run,
    and the best checkpoint."""
    from llmlab.train.metrics import eval_history, perplexity

    final: dict[str, Any] = {}
    if cfg.has_eval and not interrupted:
        final = trainer.evaluate()
    history = eval_history(trainer.state.log_history)
    if cfg.eval_steps and final:
        history = history[:-1]  # the end-of-run evaluation is reported on its own, below
    best = None
    if cfg.save_best and trainer.state.best_model_checkpoint:
        best = {
            "path": trainer.state.best_model_checkpoint,
            "step": int(Path(trainer.state.best_model_checkpoint).name.split("-")[-1]),
            "eval_loss": trainer.state.best_metric,
        }
    return {
        "eval_loss": final.get("eval_loss"),
        "eval_perplexity": None if cfg.method == "dpo" else perplexity(final.get("eval_loss")),
        "eval_exact_match": final.get("eval_exact_match"),
        "eval_reward_margin": final.get("eval_rewards/margins"),
        "eval_reward_accuracy": final.get("eval_rewards/accuracies"),
        "eval_history": history,
        "best_checkpoint": best,
        "stopped_early": bool(
            cfg.early_stopping_patience
            and not interrupted
            and trainer.state.global_step < trainer.state.max_steps
        ),
    }


def collect_metrics(
    cfg: TrainConfig,
    base: ResolvedModel,
    data: PreparedData,
    session: Session,
    output,
    interrupted: int | None,
    started: float,
) -> dict[str, Any]:
    import torch

    from llmlab.train import metrics as metricsmod
    from llmlab.train.provenance import provenance

    trainer, args, precision = session.trainer, session.args, session.precision
    counts = torch.tensor([trainer.real_tokens, trainer.token_slots], dtype=torch.float64, device=args.device)
    if args.world_size > 1:
        torch.distributed.all_reduce(counts)
    real_tokens, slots = counts.tolist()
    runtime = output.metrics["train_runtime"]
    tokens_per_second = real_tokens / runtime if runtime > 0 else 0.0
    device_name = torch.cuda.get_device_name() if precision.device == "cuda" else "cpu"
    curve = metricsmod.loss_curve(trainer.state.log_history)
    memory = metricsmod.peak_memory(precision.device)
    memory["rss_before_model_bytes"] = session.rss_before_model
    evaluation = evaluation_metrics(cfg, trainer, interrupted)
    metrics: dict[str, Any] = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "status": f"interrupted by {signal.Signals(interrupted).name}" if interrupted else "completed",
        "checkpoint": str(checkpoints(cfg.output_dir)[-1]) if interrupted else None,
        "method": cfg.method,
        "weights": cfg.weights,
        "base_model": str(base.path),
        "device": device_name,
        "precision": precision.name,
        "world_size": args.world_size,
        "global_step": trainer.state.global_step,
        "trainable_parameters": session.trainable,
        "total_parameters": session.total,
        "loss_curve": curve,
        "initial_loss": curve[0]["loss"] if curve else None,
        "final_loss": curve[-1]["loss"] if curve else None,
        "reward_curve": metricsmod.reward_curve(trainer.state.log_history) if cfg.method == "dpo" else None,
        **evaluation,
        "train_runtime_seconds": runtime,
        "wall_time_seconds": time.monotonic() - started,
        "tokens_per_second": tokens_per_second,
        "trained_tokens": int(real_tokens),
        "padding_efficiency": real_tokens / slots if slots else None,
        "examples": {
            "train": data.n_train,
            "eval": len(data.eval_rows) if cfg.method == "dpo" else len(data.eval_examples),
            "dropped": data.dropped,
            "truncated": data.truncated,
        },
        "memory": memory,
    }
    if args.world_size > 1:
        checksums = replica_checksums(trainer.model, args.device)
        metrics["replica_checksums"] = checksums
        metrics["replicas_in_sync"] = all(c == checksums[0] for c in checksums)
    if precision.device == "cuda":
        base_params = session.total - session.trainable if cfg.weights != "full" else session.total
        metrics["mfu"] = metricsmod.mfu_estimate(
            metricsmod.flops_key(cfg.method, cfg.weights),
            base_params,
            tokens_per_second,
            args.world_size,
            precision.name,
            device_name,
        )
    metrics["cost"] = metricsmod.run_cost(
        device_name, args.world_size, metrics["wall_time_seconds"], cfg.plan.gpu_hour_prices
    )
    metrics["provenance"] = provenance(cfg, base.path, base.store_commit, precision.device)
    return metrics


def write_outputs(cfg: TrainConfig, metrics: dict[str, Any]) -> None:
    """The resolved config, then metrics.json last and atomically: its presence means the run ended."""
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(cfg.output_dir / CONFIG_FILE, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    atomic_write(cfg.output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")


def output_files(output_dir: Path) -> list[Path]:
    """What a finished run leaves at the top of output_dir (weights or adapter, tokenizer, config,
    metrics.json): the tracker's artifacts."""
    return sorted(p for p in output_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def train(cfg: TrainConfig, host: HostConfig | None = None, *, resume: bool = False) -> RunResult:
    """Run (or resume) training as `cfg` says; ConfigError for bad input found while loading.

    `host` is the host config of the calling command (default: the one in force, loaded here).
    """
    from llmlab.train.modeling import (
        choose_precision,
        is_adapter_run,
        load_tokenizer,
        merged_base,
        resolve_base_model,
    )

    host = host or load_config()
    preflight(cfg, resume)
    base = resolve_base_model(cfg.base_model, host)
    tracker = None
    if cfg.tracking == "mlflow" and is_main_process():
        from llmlab.train import tracking

        uri = tracking.tracking_uri(cfg, host.tracking_uri)
        tracking.check_server(uri)
        tracker = tracking.MlflowRun(cfg, uri)
    started = time.monotonic()

    from transformers import set_seed  # after the checks above, which fail fast without it

    if is_adapter_run(base.path):  # an SFT run's adapter: its merged weights are the base (and reference)
        say(f"base_model {base.path} is an adapter run; merging it into {cfg.output_dir / 'base'}")
        base = ResolvedModel(merged_base(base.path, cfg.output_dir), base.store_commit)
    set_seed(cfg.seed)
    precision = choose_precision(cfg.precision)
    tokenizer = load_tokenizer(base.path)
    data_summary(cfg, tokenizer)
    data = prepare_data(cfg, tokenizer)
    session = build_trainer(cfg, base.path, precision, tokenizer, data)
    if tracker is not None:
        from llmlab.train.provenance import data_hashes
        from llmlab.train.tracking import make_callback

        tracker.start(data_hashes(cfg), resume)
        session.trainer.add_callback(make_callback(tracker))
    output, interrupted = run_training(session.trainer, resume)
    if not interrupted:
        session.trainer.save_model(str(cfg.output_dir))  # with save_best: the best checkpoint's weights
    metrics = collect_metrics(cfg, base, data, session, output, interrupted, started)
    if session.trainer.is_world_process_zero():
        if not interrupted:
            tokenizer.save_pretrained(cfg.output_dir)
        if tracker is not None:
            metrics["tracking"] = tracker.report()
        write_outputs(cfg, metrics)
        if tracker is not None:
            tracker.finish(metrics, output_files(cfg.output_dir), completed=not interrupted)
            metrics["tracking"] = tracker.report()
            if metrics["tracking"]["not_logged"]:
                # metrics.json stays the complete record: rewritten (atomically) with what the server lacks.
                atomic_write(cfg.output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
                say(
                    f"the MLflow server at {tracker.uri} did not receive: "
                    + "; ".join(metrics["tracking"]["not_logged"])
                    + f" (all of it is in {cfg.output_dir / METRICS_FILE})"
                )
    return RunResult(metrics=metrics, interrupted_by=interrupted)
