"""Finding and loading the base model, choosing precision, and applying LoRA / QLoRA with peft."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab.config import ConfigError, HostConfig
from llmlab.train.schema import TrainConfig


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name led: the directory to load, and for a store name the store commit it resolved to."""

    path: Path
    store_commit: str | None = None


def resolve_base_model(name: str, host: HostConfig, key: str = "base_model") -> ResolvedModel:
    """A directory as given, else the model store's copy of `name[@rev]`; ConfigError (naming `key`) when
    neither exists."""
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return ResolvedModel(candidate.resolve())
    from llmlab.models.store import ModelNotFound, open_store

    try:
        snapshot = open_store(host).resolve(name)
    except ModelNotFound as exc:
        raise ConfigError(
            f"{key}: not a directory and not in the model store at {host.model_store} (got {name!r}): "
            f"{exc}; add it with `llmlab models pull` or give a path"
        ) from None
    return ResolvedModel(snapshot, store_commit=snapshot.name)  # snapshots/<commit> (layout.py)


def is_adapter_run(path: Path) -> bool:
    """A lora / qlora run's output_dir: an adapter and no model of its own."""
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def merged_base(run_dir: Path, output_dir: Path) -> Path:
    """An SFT adapter run as a base model: its adapter merged into its base, once, in output_dir/base.

    The merge is written beside and renamed into place, so an interrupted one is redone, and a resumed run
    reuses it."""
    target = output_dir / "base"
    if (target / "config.json").is_file():
        return target
    import shutil

    from llmlab.train.merge import merge_adapter

    partial = output_dir / "base.partial"
    shutil.rmtree(partial, ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    merge_adapter(run_dir, partial)
    partial.rename(target)
    return target


def check_memory_knobs(cfg: TrainConfig) -> None:
    """The packages `optimizer` and `attn_implementation` need, found before minutes of model loading."""
    import importlib.util

    from llmlab.train.optimizers import OPTIMIZER_SPECS

    package = OPTIMIZER_SPECS[cfg.optimizer].package
    if package and importlib.util.find_spec(package) is None:
        usable = [name for name, spec in OPTIMIZER_SPECS.items() if spec.package is None]
        raise ConfigError(
            f"optimizer: {cfg.optimizer} needs the {package} package, which is not installed "
            f"(pip install {package}); valid without it: {', '.join(usable)}"
        )
    if cfg.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError(
            "attn_implementation: flash_attention_2 needs the flash-attn package, which is not importable "
            "here (pip install flash-attn, on a CUDA host); valid without it: sdpa, eager"
        )


@dataclass(frozen=True)
class Precision:
    """What `precision: auto|bf16|fp16|fp32` means on this device."""

    name: str  # bf16 | fp16 | fp32
    device: str  # cuda | cpu

    @property
    def torch_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.name]


def detect_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_precision(requested: str, device: str | None = None) -> Precision:
    import torch

    device = device or detect_device()
    if requested == "auto":
        if device == "cuda":
            return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16", device)
        return Precision("fp32", device)
    if requested == "fp16" and device == "cpu":
        raise ConfigError("precision: fp16 mixed precision needs a GPU (got 'fp16'); use auto, bf16 or fp32")
    if requested == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision: this GPU does not support bf16 (got 'bf16'); use auto, fp16 or fp32")
    return Precision(requested, device)


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # A pad token equal to EOS gets masked out of the loss, and the model never learns to stop.
        tokenizer.add_special_tokens({"pad_token": "<|llmlab_pad|>"})
    tokenizer.padding_side = "right"
    return tokenizer


def _quantization_config(cfg: TrainConfig, precision: Precision):
    import torch
    from transformers import BitsAndBytesConfig

    compute = (
        precision.torch_dtype
        if cfg.bnb_4bit_compute_dtype == "auto"
        else {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
            cfg.bnb_4bit_compute_dtype
        ]
    )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def load_base(cfg: TrainConfig, model_dir: Path, tokenizer, precision: Precision) -> Any:
    """The base model as the run holds it: fp32 master weights for full fine-tuning (the Trainer's autocast
    does the bf16/fp16 math); for LoRA the frozen base in the compute dtype, for QLoRA in 4 bits, prepared
    for k-bit training (norms and head upcast)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {
        "dtype": torch.float32 if cfg.weights == "full" else precision.torch_dtype,
        "attn_implementation": cfg.attn_implementation,
    }
    if cfg.weights == "qlora":
        kwargs["quantization_config"] = _quantization_config(cfg, precision)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    if cfg.weights == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return model


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def load_model(cfg: TrainConfig, model_dir: Path, tokenizer, precision: Precision) -> Any:
    """The model ready to train: full weights, or a peft model with LoRA adapters (4-bit base for qlora)."""
    model = load_base(cfg, model_dir, tokenizer, precision)
    if cfg.weights == "full":
        return model
    from peft import get_peft_model

    return get_peft_model(model, lora_config(cfg))


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit packed weights are counted as the parameters they hold."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
