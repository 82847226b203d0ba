"""Multi-process training on existing engines: the torchrun command line and DDP / FSDP / DeepSpeed presets.

`llmlab train` itself runs one process; torchrun starts N of them per node, and the Trainer (through
accelerate) sets up DDP, FSDP or DeepSpeed ZeRO from the `distributed` preset in the config.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from llmlab.config import ConfigError
from llmlab.train.schema import TrainConfig


def launch_command(
    config_path: Path,
    overrides: list[str],
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    resume: bool = False,
    host_config: Path | None = None,
) -> list[str]:
    """The torchrun invocation that runs this config on `nproc` processes on each of `nnodes` nodes.

    One node: `--standalone` (a local rendezvous, any free port). Several: a static master address and port
    that every node's command shares, and this node's rank (the train playbook fills in both per host).
    Every rank reads the host config this command was given (`--config`), not the default one.
    """
    if nproc < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise ConfigError(
            "launch: need nproc >= 1, nnodes >= 1 and 0 <= node_rank < nnodes "
            f"(got nproc={nproc}, nnodes={nnodes}, node_rank={node_rank})"
        )
    command = [str(Path(sys.executable).with_name("torchrun"))]
    if nnodes == 1:
        command += ["--standalone", f"--nproc_per_node={nproc}"]
    else:
        command += [
            f"--nnodes={nnodes}",
            f"--nproc_per_node={nproc}",
            f"--node_rank={node_rank}",
            f"--master_addr={master_addr}",
            f"--master_port={master_port}",
        ]
    command += ["-m", "llmlab.cli"]
    if host_config is not None:
        command += ["--config", str(host_config.resolve())]
    command += ["train", str(config_path.resolve()), *overrides]
    if resume:
        command.append("--resume")
    return command


def format_command(command: list[str]) -> str:
    return shlex.join(command)


def _deepspeed_config(stage: int) -> dict[str, Any]:
    # "auto" lets the Trainer fill in the values from TrainingArguments, so the two never disagree.
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }


def distributed_arguments(cfg: TrainConfig) -> dict[str, Any]:
    """TrainingArguments keywords for the `distributed` preset (DDP needs none: torchrun implies it).

    A single process has nothing to shard with, so there every preset means plain training.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return {}
    if cfg.distributed == "fsdp":
        # FSDP's own activation checkpointing avoids the extra all-gather of the generic one.
        return {
            "fsdp": True,
            "fsdp_config": {"version": 2, "activation_checkpointing": cfg.gradient_checkpointing},
        }
    if cfg.distributed.startswith("deepspeed"):
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(
                f"distributed: {cfg.distributed} needs the deepspeed package, which is not installed "
                "(pip install deepspeed); valid without it: ddp, fsdp"
            )
        return {"deepspeed": _deepspeed_config(int(cfg.distributed[-1]))}
    return {}
