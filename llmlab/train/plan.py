"""`llmlab plan`: memory, fit, speed and cost of a training config, from the model's config.json alone.

No weights are loaded. Parameter counts come from the architecture's shapes (dense decoders: Llama-style
gated MLPs, or GPT-2-style plain MLPs). Memory per GPU is the sum of what lives at the peak of a step:

- weights: full fine-tuning keeps fp32 master weights (4 B/param); LoRA keeps the frozen base in the compute
  dtype (2 B, or 4 B in fp32); QLoRA stores linear weights as 4-bit (0.5 B + quantisation constants) and
  peft's `prepare_model_for_kbit_training` upcasts the rest (embeddings, norms, head) to fp32;
- gradients (4 B) per *trainable* parameter (LoRA adapters are fp32), and the optimizer's states for each
  trainable tensor (llmlab/train/optimizers.py): AdamW two fp32 moments (8 B), bitsandbytes' 8-bit AdamW
  two 8-bit moments with blockwise fp32 scales (~2 B; fp32 for tensors under 4096 elements), Adafactor a
  factored second moment (4 B per row plus 4 B per column of a matrix), SGD none;
- activations saved for backward, per token: each decoder layer's tensors (norm inputs/outputs, q/k/v,
  attention output, MLP intermediates, LoRA dropout copies) in the compute dtype, plus the logits
  (compute-dtype logits, their fp32 upcast and log-softmax); with gradient checkpointing only each layer's
  input is kept, plus one layer's full set during its recomputation. Attention scores are not stored
  (flash / memory-efficient attention on GPU);
- a fixed runtime overhead (CUDA context, allocator slack) from the plan settings' figure.

Sharding divides weights, gradients and optimizer states (fsdp, deepspeed_zero3) or only gradients and
optimizer states (deepspeed_zero2) by the number of GPUs. Throughput: tokens/s = MFU x dense bf16/fp16 peak x
GPUs / FLOPs per token, with the FLOP accounting of metrics.json (6N full, 4N LoRA/QLoRA).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmlab.config import ConfigError
from llmlab.gpus import CATALOG, GpuMemoryReader, GpuSku, HostGpu, NvmlMemoryReader, find_sku
from llmlab.train.metrics import FLOPS_PER_TOKEN_PER_PARAM, flops_key
from llmlab.train.optimizers import OPTIMIZER_SPECS
from llmlab.train.schema import TrainConfig

GIB = 1024**3
PLAN_SCHEMA_VERSION = 1
# Model types whose MLP is a plain up/down projection; every other dense decoder is taken as gated (SwiGLU).
PLAIN_MLP_TYPES = {"gpt2", "gpt_neox", "gptj", "opt", "falcon", "bloom", "phi", "starcoder2", "gpt_bigcode"}
RUNTIME_OVERHEAD_GIB = 1.0  # CUDA context and allocator slack on a GPU
NF4_BYTES = 0.5
ABSMAX_BYTES = {
    True: 1 / 64 + 4 / (64 * 256),
    False: 4 / 64,
}  # blocksize 64; double quant: 8-bit + fp32 per 256


@dataclass(frozen=True)
class Architecture:
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    gated_mlp: bool
    tied_embeddings: bool
    position_embeddings: int  # learned absolute positions (GPT-2); 0 with rotary
    biases: bool

    def linear_layers(self) -> list[tuple[str, int, int]]:
        """(module name, in features, out features) of one decoder layer's linear layers."""
        h, q, kv, i = (
            self.hidden_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
            self.intermediate_size,
        )
        if self.model_type == "gpt2":
            return [("c_attn", h, 3 * h), ("c_proj", h, h), ("c_fc", h, i), ("c_proj", i, h)]
        mlp = (
            [("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]
            if self.gated_mlp
            else [("up_proj", h, i), ("down_proj", i, h)]
        )
        return [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h), *mlp]


def architecture_from_config(config: dict[str, Any]) -> Architecture:
    """Shapes from a config.json mapping (Llama-style names, or GPT-2's n_* names)."""
    config = config.get("text_config", config)
    model_type = config.get("model_type", "unknown")
    try:
        hidden = config.get("hidden_size", config.get("n_embd"))
        heads = config.get("num_attention_heads", config.get("n_head"))
        layers = config.get("num_hidden_layers", config.get("n_layer"))
        vocab = config["vocab_size"]
        if hidden is None or heads is None or layers is None:
            raise KeyError("hidden_size/num_attention_heads/num_hidden_layers")
    except KeyError as exc:
        raise ConfigError(
            f"base_model: config.json lacks {exc.args[0]}; cannot plan this architecture"
        ) from None
    if config.get("num_local_experts") or config.get("num_experts"):
        raise ConfigError(
            f"base_model: {model_type} is a mixture-of-experts model; plan covers dense decoders only"
        )
    gated = model_type not in PLAIN_MLP_TYPES
    intermediate = config.get("intermediate_size") or config.get("n_inner") or 4 * hidden
    return Architecture(
        model_type=model_type,
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or hidden // heads,
        intermediate_size=intermediate,
        gated_mlp=gated,
        tied_embeddings=config.get("tie_word_embeddings", model_type == "gpt2"),
        position_embeddings=config.get("n_positions", 0) if model_type == "gpt2" else 0,
        biases=model_type == "gpt2" or bool(config.get("attention_bias")),
    )


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    linear: int  # decoder-layer linear weights: what QLoRA quantises and LoRA adapts
    other: int  # embeddings, norms, biases, output head

    @staticmethod
    def of(arch: Architecture) -> ParameterCounts:
        h = arch.hidden_size
        linears = arch.linear_layers()
        linear = arch.num_layers * sum(n_in * n_out for _, n_in, n_out in linears)
        biases = arch.num_layers * sum(n_out for _, _, n_out in linears) if arch.biases else 0
        norm_size = 2 * h if arch.model_type == "gpt2" else h  # LayerNorm has a bias, RMSNorm does not
        norms = (2 * arch.num_layers + 1) * norm_size
        embeddings = arch.vocab_size * h + arch.position_embeddings * h
        head = 0 if arch.tied_embeddings else arch.vocab_size * h
        other = embeddings + head + norms + biases
        return ParameterCounts(total=linear + other, linear=linear, other=other)


def trainable_shapes(arch: Architecture, cfg: TrainConfig, method: str) -> list[tuple[int, ...]]:
    """The shape of every trainable tensor: what the optimizer keeps state for."""
    targets = cfg.lora_target_modules
    linears = arch.linear_layers()
    if method != "full":
        adapted = [
            (n_in, n_out) for name, n_in, n_out in linears if targets == "all-linear" or name in targets
        ]
        per_layer = [shape for n_in, n_out in adapted for shape in ((cfg.lora_r, n_in), (n_out, cfg.lora_r))]
        return per_layer * arch.num_layers
    h = arch.hidden_size
    layer: list[tuple[int, ...]] = [(n_out, n_in) for _, n_in, n_out in linears]
    if arch.biases:
        layer += [(n_out,) for _, _, n_out in linears]
    norm: list[tuple[int, ...]] = [(h,), (h,)] if arch.model_type == "gpt2" else [(h,)]
    shapes = layer * arch.num_layers + norm * (2 * arch.num_layers + 1) + [(arch.vocab_size, h)]
    if arch.position_embeddings:
        shapes.append((arch.position_embeddings, h))
    if not arch.tied_embeddings:
        shapes.append((arch.vocab_size, h))
    return shapes


def lora_parameters(arch: Architecture, cfg: TrainConfig) -> int:
    targets = cfg.lora_target_modules
    chosen = [
        (n_in, n_out)
        for name, n_in, n_out in arch.linear_layers()
        if targets == "all-linear" or name in targets
    ]
    return arch.num_layers * sum(cfg.lora_r * (n_in + n_out) for n_in, n_out in chosen)


def _activation_elements_per_token(arch: Architecture, cfg: TrainConfig, method: str) -> tuple[int, int]:
    """(elements one decoder layer saves per token, elements of its input) for the backward pass."""
    h, i = arch.hidden_size, arch.intermediate_size
    kv = arch.num_kv_heads * arch.head_dim
    q = arch.num_heads * arch.head_dim
    # Counted from the tensors autograd saves in transformers' Llama layer (saved_tensors_hooks): each norm
    # keeps its input, the normalised tensor and the scaled output (3h); attention keeps rotated q and k, v,
    # and its output (2q + 2kv; SDPA stores no score matrix); the MLP keeps its intermediates.
    attention = 3 * h + 2 * q + 2 * kv
    mlp = 3 * h + (4 * i if arch.gated_mlp else 2 * i)
    lora = 0
    if method != "full" and cfg.lora_dropout > 0:
        # peft applies dropout to the input of every adapted layer: one more saved copy of it each.
        targets = cfg.lora_target_modules
        lora = sum(
            n_in for name, n_in, _ in arch.linear_layers() if targets == "all-linear" or name in targets
        )
    return attention + mlp + lora, h


@dataclass(frozen=True)
class MemoryEstimate:
    method: str
    gradient_checkpointing: bool
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    overhead_gib: float

    @property
    def total_gib(self) -> float:
        return (
            self.weights_gib
            + self.gradients_gib
            + self.optimizer_gib
            + self.activations_gib
            + self.overhead_gib
        )


def estimate_memory(
    arch: Architecture,
    cfg: TrainConfig,
    method: str,
    gradient_checkpointing: bool,
    compute_bytes: int,
    overhead_gib: float = RUNTIME_OVERHEAD_GIB,
) -> MemoryEstimate:
    counts = ParameterCounts.of(arch)
    if method == "full":
        weights, trainable = 4.0 * counts.total, counts.total
    elif method == "lora":
        weights, trainable = compute_bytes * counts.total, lora_parameters(arch, cfg)
        weights += 4.0 * trainable
    else:
        quantised = counts.linear * (NF4_BYTES + ABSMAX_BYTES[cfg.bnb_4bit_use_double_quant])
        trainable = lora_parameters(arch, cfg)
        weights = quantised + 4.0 * counts.other + 4.0 * trainable
    spec = OPTIMIZER_SPECS[cfg.optimizer]
    gradients = 4.0 * trainable
    optimizer = sum(spec.state_bytes(shape) for shape in trainable_shapes(arch, cfg, method))

    shards = cfg.plan.num_gpus
    if cfg.distributed in ("fsdp", "deepspeed_zero3"):
        weights, gradients, optimizer = weights / shards, gradients / shards, optimizer / shards
    elif cfg.distributed == "deepspeed_zero2":
        gradients, optimizer = gradients / shards, optimizer / shards

    # DPO runs the chosen and the rejected answer of each pair as two rows of one batch; its reference pass
    # (no gradients) keeps no activations, and holds no second copy of the weights (adapter disabled, or
    # for full DPO precomputed before training).
    tokens = cfg.micro_batch_size * cfg.sequence_len * (2 if cfg.method == "dpo" else 1)
    per_layer, layer_input = _activation_elements_per_token(arch, cfg, method)
    if gradient_checkpointing:
        layer_elements = arch.num_layers * layer_input + per_layer
    else:
        layer_elements = arch.num_layers * per_layer
    # Outside the layers: the embedding output and the final norm (4h), and the logits in the compute
    # dtype plus their fp32 upcast and log-softmax for the loss.
    outside = 4 * arch.hidden_size * compute_bytes + arch.vocab_size * (compute_bytes + 4 + 4)
    activations = tokens * (layer_elements * compute_bytes + outside)
    return MemoryEstimate(
        method=method,
        gradient_checkpointing=gradient_checkpointing,
        weights_gib=weights / GIB,
        gradients_gib=gradients / GIB,
        optimizer_gib=optimizer / GIB,
        activations_gib=activations / GIB,
        overhead_gib=overhead_gib,
    )


@dataclass(frozen=True)
class SkuFit:
    sku: str
    memory_gib: float
    memory_source: str  # catalogue | this host (NVML)
    fits: bool
    headroom_gib: float
    tokens_per_second: float | None  # None: no peak known for this precision
    hours_per_epoch: float | None
    cost_per_epoch: float | None
    hours_per_run: float | None  # the whole run: epochs, or max_steps
    cost_per_run: float | None


def compute_bytes_for(cfg: TrainConfig, on_gpu: bool = True) -> int:
    """Bytes per activation element: bf16/fp16 on a GPU unless the config says fp32."""
    if cfg.precision == "fp32" or not on_gpu:
        return 4
    return 2


def peak_tflops(sku: GpuSku, precision: str) -> float | None:
    """The dense peak the run would use: fp16 when asked, or under `auto` on a GPU without bf16."""
    if precision == "fp16" or (precision == "auto" and sku.bf16_tflops is None):
        return sku.fp16_tflops
    return sku.bf16_tflops


def sku_fits(
    estimate: MemoryEstimate,
    cfg: TrainConfig,
    flops_per_token: float,
    epoch_tokens: int | None,
    catalog: tuple[GpuSku, ...] = CATALOG,
    host_gpus: tuple[HostGpu, ...] = (),
    epochs_per_run: float | None = None,
) -> list[SkuFit]:
    """One row per catalogue SKU; this host's GPUs replace their SKU's memory figure with NVML's total,
    and a GPU the catalogue does not know gets a row of its own (fit only, no peak)."""
    gpus = cfg.plan.num_gpus
    measured: dict[str, float] = {}
    unknown: list[HostGpu] = []
    for gpu in host_gpus:
        sku = find_sku(gpu.name)
        if sku is None:
            unknown.append(gpu)
        else:
            measured[sku.name] = min(gpu.memory_mib, measured.get(sku.name, gpu.memory_mib))

    def row(name: str, memory_gib: float, source: str, peak: float | None) -> SkuFit:
        tokens_per_second = cfg.plan.mfu * peak * 1e12 * gpus / flops_per_token if peak else None
        hours = epoch_tokens / tokens_per_second / 3600 if epoch_tokens and tokens_per_second else None
        price = cfg.plan.gpu_hour_prices.get(name)
        run_hours = hours * epochs_per_run if hours is not None and epochs_per_run is not None else None
        return SkuFit(
            sku=name,
            memory_gib=memory_gib,
            memory_source=source,
            fits=estimate.total_gib <= memory_gib,
            headroom_gib=memory_gib - estimate.total_gib,
            tokens_per_second=tokens_per_second,
            hours_per_epoch=hours,
            cost_per_epoch=hours * gpus * price if hours is not None and price is not None else None,
            hours_per_run=run_hours,
            cost_per_run=run_hours * gpus * price if run_hours is not None and price is not None else None,
        )

    rows = [
        row(sku.name, measured[sku.name] / 1024, "this host (NVML)", peak_tflops(sku, cfg.precision))
        if sku.name in measured
        else row(sku.name, sku.memory_gib, "catalogue", peak_tflops(sku, cfg.precision))
        for sku in catalog
    ]
    rows += [row(gpu.name, gpu.memory_mib / 1024, "this host (NVML)", None) for gpu in unknown]
    return rows


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """config.json of a model directory, or of an adapter run's base (DPO merges the adapter into it)."""
    adapter = model_dir / "adapter_config.json"
    if adapter.is_file() and not (model_dir / "config.json").is_file():
        base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base and (Path(base) / "config.json").is_file():
            model_dir = Path(base)
    path = model_dir / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"base_model: {model_dir} has no config.json") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"base_model: {path} is not valid JSON: {exc.msg}") from None


@dataclass(frozen=True)
class EpochSize:
    tokens: int  # real (non-padding) tokens trained in one epoch; DPO: both rows of every pair
    rows: int  # what the Trainer batches: packed rows, examples, or (DPO) preference pairs


def count_epoch(cfg: TrainConfig, model_dir: Path) -> EpochSize | None:
    """One epoch of the training split as training would see it; None if the tokenizer is unavailable."""
    from llmlab.train.data import encode_datasets, pack_lengths, preference_datasets, split_eval
    from llmlab.train.modeling import load_tokenizer

    try:
        tokenizer = load_tokenizer(model_dir)
    except (OSError, ValueError):
        return None
    if cfg.method == "dpo":
        pairs = preference_datasets(tokenizer, cfg.datasets, cfg.sequence_len, cfg.too_long)
        lengths, _ = split_eval(pairs.lengths, cfg.eval_split, cfg.seed)
        return EpochSize(sum(lengths), len(lengths))
    train, _ = split_eval(
        encode_datasets(tokenizer, cfg.datasets, cfg.sequence_len, cfg.too_long).examples,
        cfg.eval_split,
        cfg.seed,
    )
    lengths = [len(example["input_ids"]) for example in train]
    rows = len(pack_lengths(lengths, cfg.sequence_len)) if cfg.packing else len(lengths)
    return EpochSize(sum(lengths), rows)


def run_length(cfg: TrainConfig, epoch: EpochSize | None) -> dict[str, Any]:
    """Optimizer steps per epoch (rows over micro-batch x accumulation x GPUs, as the Trainer counts them)
    and the whole run's steps and epochs: `max_steps` when set, else `epochs`."""
    if epoch is None:
        return {"steps_per_epoch": None, "steps": cfg.max_steps, "epochs": None, "tokens": None}
    batches = math.ceil(epoch.rows / (cfg.micro_batch_size * cfg.plan.num_gpus))
    per_epoch = max(1, math.ceil(batches / cfg.gradient_accumulation_steps))
    steps = cfg.max_steps or math.ceil(cfg.epochs * per_epoch)
    epochs = steps / per_epoch
    return {"steps_per_epoch": per_epoch, "steps": steps, "epochs": epochs, "tokens": epoch.tokens * epochs}


def make_plan(
    cfg: TrainConfig, model_dir: Path, count_tokens: bool = True, gpu_reader: GpuMemoryReader | None = None
) -> dict[str, Any]:
    """The whole plan as a JSON-ready mapping (the `--json` output, schema_version 1).

    `gpu_reader` (default: NVML) names this host's GPUs; their measured totals beat the catalogue's.
    """
    host_gpus = tuple((gpu_reader or NvmlMemoryReader()).gpus())
    arch = architecture_from_config(read_model_config(model_dir))
    counts = ParameterCounts.of(arch)
    compute_bytes = compute_bytes_for(cfg)
    estimates = [
        estimate_memory(arch, cfg, method, checkpointing, compute_bytes)
        for method in ("full", "lora", "qlora")
        for checkpointing in (False, True)
    ]
    chosen = next(
        e
        for e in estimates
        if e.method == cfg.weights and e.gradient_checkpointing == cfg.gradient_checkpointing
    )
    factor = FLOPS_PER_TOKEN_PER_PARAM[flops_key(cfg.method, cfg.weights)]
    if cfg.method == "dpo" and cfg.weights == "full":
        factor += 2  # the reference log-probabilities, one forward pass over the data before training
    flops_per_token = factor * counts.total
    epoch = count_epoch(cfg, model_dir) if count_tokens else None
    epoch_tokens = epoch.tokens if epoch else None
    run = run_length(cfg, epoch)
    fits = sku_fits(
        chosen, cfg, flops_per_token, epoch_tokens, host_gpus=host_gpus, epochs_per_run=run["epochs"]
    )
    priced = [row for row in fits if row.fits and row.cost_per_run is not None]
    cheapest = min(priced, key=lambda row: row.cost_per_run or 0.0) if priced else None
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "base_model": str(model_dir),
        "architecture": asdict(arch),
        "parameters": {
            "total": counts.total,
            "linear": counts.linear,
            "lora_trainable": lora_parameters(arch, cfg),
        },
        "method": cfg.method,
        "weights": cfg.weights,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "tokens_per_micro_batch": cfg.micro_batch_size * cfg.sequence_len,
        "compute_bytes": compute_bytes,
        "memory": [{**asdict(e), "total_gib": e.total_gib} for e in estimates],
        "chosen_total_gib": chosen.total_gib,
        "flops_per_token": flops_per_token,
        "epoch_tokens": epoch_tokens,
        "run": run,
        "cheapest": {"sku": cheapest.sku, "hours": cheapest.hours_per_run, "cost": cheapest.cost_per_run}
        if cheapest
        else None,
        "assumptions": {
            "mfu": cfg.plan.mfu,
            "num_gpus": cfg.plan.num_gpus,
            "distributed": cfg.distributed,
            "runtime_overhead_gib": RUNTIME_OVERHEAD_GIB,
            "optimizer": cfg.optimizer,
        },
        "host_gpus": [asdict(gpu) for gpu in host_gpus],
        "gpus": [asdict(row) for row in fits],
    }
