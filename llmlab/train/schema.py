"""The training config: one flat YAML file (axolotl / LLaMA-Factory style), validated before anything loads.

Every key can be overridden on the command line as `key=value` (the value is parsed as YAML, so
`max_steps=100`, `packing=false` and `datasets=[{path: a.jsonl, format: chat}]` all work; dotted keys
such as `plan.mfu=0.4` reach nested sections). Relative paths are taken from the current directory and
stored absolute in the resolved config that a run leaves in `output_dir`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from llmlab.config import ConfigError, StrictModel, describe_validation_error, read_yaml_mapping
from llmlab.train.optimizers import DEFAULT_OPTIMIZER, OPTIMIZERS

Method = Literal["lora", "qlora", "full", "dpo"]
Weights = Literal["lora", "qlora", "full"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
DatasetFormat = Literal["text", "instruction", "chat", "preference", "preference_chat"]
SFT_FORMATS = ("text", "instruction", "chat")
PREFERENCE_FORMATS = ("preference", "preference_chat")
# TRL's DPO loss types (DPOConfig.loss_type), but exo_pair, which needs label smoothing.
DpoLoss = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
]
Distributed = Literal["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]
TooLong = Literal["drop", "truncate"]
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]
# The file types a dataset may be, by suffix: JSONL is read line by line (errors name file:line), the rest
# through `datasets`.
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class DatasetSpec(StrictModel):
    path: Path = Field(description="A JSONL (one example per line), JSON, CSV or Parquet file.")
    format: DatasetFormat = Field(
        description="text: {text}; instruction: {instruction, input?, output}; "
        "chat: {messages: [{role, content}]}; preference: {prompt, chosen, rejected} strings; "
        "preference_chat: prompt as messages, chosen and rejected as assistant turns (method dpo)."
    )

    @field_validator("path")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError("file not found")
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise ValueError(f"unsupported file type {path.suffix!r}; valid: {', '.join(DATA_SUFFIXES)}")
        return path.resolve()


class PlanSettings(StrictModel):
    """Figures `llmlab plan` uses for throughput and cost; measured values for your hosts beat defaults."""

    num_gpus: int = Field(
        1, ge=1, description="GPUs the run would use (memory is per GPU; sharding divides it)."
    )
    mfu: float = Field(
        0.35,
        gt=0,
        le=1,
        description="Assumed model-FLOPs utilisation, as a fraction of the SKU's dense peak.",
    )
    gpu_hour_prices: dict[str, float] = Field(
        default_factory=dict,
        description="Price per GPU-hour by SKU name (e.g. {'H100 SXM': 3.0}); cost needs one.",
    )


class TrainConfig(StrictModel):
    base_model: str = Field(description="A name in the model store, or a directory with a saved model.")
    method: Method = Field(
        "lora",
        description="lora: adapters on a bf16/fp32 base; qlora: on a 4-bit base; full; dpo: preference "
        "alignment (TRL's DPOTrainer) of what dpo_method says.",
    )
    dpo_method: Weights = Field(
        "lora",
        description="dpo: train a LoRA adapter, a QLoRA adapter (4-bit base) or the full weights; the "
        "reference is the base with the adapter disabled (full: the base's log-probabilities, computed "
        "before training).",
    )
    dpo_beta: float = Field(0.1, gt=0, description="dpo: how far the policy may move from the reference.")
    dpo_loss: DpoLoss = Field("sigmoid", description="dpo: TRL's loss type (sigmoid is the DPO paper's).")

    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or all-linear (every linear layer but the output head).",
    )
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="qlora: 4-bit data type.")
    bnb_4bit_use_double_quant: bool = Field(
        True, description="qlora: quantise the quantisation constants too."
    )
    bnb_4bit_compute_dtype: Precision = Field("auto", description="qlora: dtype of the de-quantised matmuls.")

    datasets: list[DatasetSpec] = Field(
        min_length=1, description="Training data; examples of all files are mixed."
    )
    sequence_len: int = Field(2048, ge=16, description="Tokens per training sequence.")
    too_long: TooLong = Field(
        "drop",
        description="Examples longer than sequence_len: drop them, or truncate them to sequence_len "
        "(one whose answer is cut away entirely is dropped).",
    )
    packing: bool = Field(True, description="Fill each sequence with several examples instead of padding.")

    micro_batch_size: int = Field(2, ge=1, description="Sequences per device per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "polynomial"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of the steps spent warming up.")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (beats epochs)."
    )
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 disables it.")
    seed: int = 42
    eval_split: float = Field(0.0, ge=0, lt=1, description="Fraction of examples held out for evaluation.")
    eval_datasets: list[DatasetSpec] = Field(
        default_factory=list, description="Evaluation files (same formats), used besides eval_split."
    )
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every N optimizer steps; none: once, at the end."
    )
    save_best: bool = Field(
        False, description="Keep the checkpoint with the lowest eval loss and end the run with its weights."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without a lower eval loss."
    )
    eval_generate: int = Field(
        0, ge=0, description="At each evaluation, generate for this many eval examples; report exact match."
    )

    precision: Precision = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16; fp32 on CPU."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory."
    )
    optimizer: str = Field(
        DEFAULT_OPTIMIZER,
        description="The Trainer's optimizer (`optim`): " + ", ".join(OPTIMIZERS) + ".",
    )
    attn_implementation: AttnImplementation = Field(
        "sdpa", description="sdpa (PyTorch), eager, or flash_attention_2 (needs the flash-attn package)."
    )

    output_dir: Path = Field(Path("outputs"), description="Checkpoints, final weights, metrics.json.")
    save_steps: int = Field(200, ge=1, description="Checkpoint every N optimizer steps.")
    save_total_limit: int | None = Field(2, ge=1, description="Keep only the newest N checkpoints.")
    logging_steps: int = Field(10, ge=1, description="Log the training loss every N steps.")
    tracking: Literal["none", "tensorboard", "mlflow"] = "none"
    tracking_uri: str | None = Field(
        None,
        description="mlflow: a server URI; default: the host config's, else a file store in "
        "output_dir/mlruns.",
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        description="mlflow: the experiment; default: the config file's name without extension "
        "(output_dir's name when the config came from no file).",
    )
    distributed: Distributed = Field(
        "ddp", description="Multi-process strategy under torchrun: ddp, fsdp, or DeepSpeed ZeRO stage 2/3."
    )
    plan: PlanSettings = Field(default_factory=PlanSettings)

    @field_validator("output_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.resolve()

    @property
    def has_eval(self) -> bool:
        return self.eval_split > 0 or bool(self.eval_datasets)

    @property
    def weights(self) -> Weights:
        """What is trained and how the base is held: lora, qlora or full (dpo: its dpo_method)."""
        return self.dpo_method if self.method == "dpo" else self.method

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.output_dir.name

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        # A plain str checked here rather than a Literal: the message lists the names once, readably.
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
        return name

    @model_validator(mode="after")
    def _compatible(self) -> TrainConfig:
        self._check_formats()
        if self.weights == "qlora" and self.distributed == "fsdp":
            raise ValueError(
                "distributed: fsdp does not shard 4-bit weights here; use ddp or deepspeed_zero2 for qlora"
            )
        self._check_evaluation()
        return self

    def _check_formats(self) -> None:
        """DPO learns from preference pairs, the other methods from examples; one preference format a run."""
        specs = [*self.datasets, *self.eval_datasets]
        formats = sorted({spec.format for spec in specs})
        if self.method == "dpo":
            wrong = [f for f in formats if f not in PREFERENCE_FORMATS]
            if wrong:
                raise ValueError(
                    f"method: dpo learns from preference pairs; format {wrong[0]!r} is not one "
                    f"(valid: {', '.join(PREFERENCE_FORMATS)})"
                )
            if len(formats) > 1:
                raise ValueError(
                    "method: dpo: datasets and eval_datasets must share one format (preference or "
                    f"preference_chat), got {', '.join(formats)}"
                )
            if self.eval_generate:
                raise ValueError(
                    "eval_generate: not with method dpo; its evaluations report the reward accuracy"
                )
        else:
            wrong = [f for f in formats if f in PREFERENCE_FORMATS]
            if wrong:
                raise ValueError(
                    f"datasets: format {wrong[0]!r} needs method: dpo (got method {self.method!r})"
                )

    def _check_evaluation(self) -> None:
        periodic = {
            "eval_steps": self.eval_steps is not None,
            "save_best": self.save_best,
            "early_stopping_patience": self.early_stopping_patience is not None,
            "eval_generate": self.eval_generate > 0,
        }
        for key, used in periodic.items():
            if used and not self.has_eval:
                raise ValueError(f"{key}: needs evaluation data; set eval_split or eval_datasets")
        for key in ("save_best", "early_stopping_patience"):
            if periodic[key] and self.eval_steps is None:
                raise ValueError(f"{key}: needs eval_steps (how often to evaluate)")
        # The Trainer keeps the best checkpoint only among those it saves at an evaluation.
        if self.save_best and self.eval_steps and self.save_steps % self.eval_steps:
            raise ValueError(
                f"save_best: save_steps ({self.save_steps}) must be a multiple of "
                f"eval_steps ({self.eval_steps})"
            )
        if self.eval_generate:
            sources = [*(self.datasets if self.eval_split else []), *self.eval_datasets]
            texts = [str(spec.path) for spec in sources if spec.format == "text"]
            if texts:
                raise ValueError(
                    "eval_generate: needs instruction or chat eval data, which has an expected answer; "
                    f"format 'text' has none ({', '.join(texts)})"
                )


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings to a nested mapping; values are YAML scalars or flow collections."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key or " " in key:
            raise ConfigError(f"command line: {pair!r}: expected key=value (e.g. learning_rate=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"command line: {key}: not a valid YAML value (got {raw!r}): {exc}") from None
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"command line: {key}: {part} is not a section")
        node[leaf] = value
    return result


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _suggestions(exc: ValidationError, source: str) -> list[str]:
    """For unknown keys, name the closest valid key (a typo is the usual cause)."""
    lines = []
    for err in exc.errors():
        if err["type"] != "extra_forbidden":
            continue
        model: type[StrictModel] = PlanSettings if err["loc"][0] == "plan" else TrainConfig
        close = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), n=1)
        if close:
            key = ".".join(str(part) for part in err["loc"])
            lines.append(f"{source}: {key}: did you mean {close[0]!r}?")
    return lines


def validate_train_config(data: dict[str, Any], source: str) -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        lines = [describe_validation_error(exc, source), *_suggestions(exc, source)]
        raise ConfigError("\n".join(lines)) from None


def load_train_config(path: Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, merge command-line overrides into, and validate a training config; errors are ConfigError."""
    data = _merge(read_yaml_mapping(path), parse_overrides(overrides or []))
    data.setdefault("experiment", path.stem)
    return validate_train_config(data, f"{path} + command line" if overrides else str(path))


def config_schema() -> dict[str, Any]:
    """The JSON schema of the training config (`llmlab train --print-schema`)."""
    return TrainConfig.model_json_schema()
