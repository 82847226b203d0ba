"""Two processes under torchrun (gloo) train with DDP or FSDP, stay in sync, and match one process."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import base_config, write_config

from llmlab.train.run import train
from llmlab.train.schema import validate_train_config


@pytest.mark.parametrize(("method", "distributed"), [("lora", "ddp"), ("full", "fsdp")])
def test_two_processes_agree_with_one_process(
    method: str, distributed: str, tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    config = base_config(
        tiny_llama_dir,
        instruction_data,
        tmp_path / "ddp",
        packing=False,
        max_steps=6,
        method=method,
        distributed=distributed,
        learning_rate=0.01,
    )
    config_path = write_config(tmp_path / "ddp.yaml", config)
    launch = subprocess.run(
        [sys.executable, "-m", "llmlab.cli", "train", str(config_path), "--launch-command", "--nproc", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    command = shlex.split(launch.stdout)
    assert "--nproc_per_node=2" in command
    run = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["world_size"] == 2
    assert ddp["replicas_in_sync"] and len(ddp["replica_checksums"]) == 2

    # One process with twice the micro-batch sees the same global batches: the two must reproduce its losses.
    single = train(
        validate_train_config({**config, "micro_batch_size": 4, "output_dir": str(tmp_path / "one")}, "t")
    ).metrics
    ddp_curve = [point["loss"] for point in ddp["loss_curve"]]
    single_curve = [point["loss"] for point in single["loss_curve"]]
    assert ddp_curve == pytest.approx(single_curve, rel=1e-4, abs=1e-4)
    assert ddp["final_loss"] < 0.6 * ddp["initial_loss"]
