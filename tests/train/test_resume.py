"""SIGTERM to a real `llmlab train` process saves a checkpoint; --resume ends where a full run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import base_config, write_config

from llmlab.config import ConfigError
from llmlab.train.run import checkpoints, train
from llmlab.train.schema import validate_train_config

STEPS = 16


def resume_config(model_dir: Path, data: Path, output_dir: Path) -> dict:
    # No packing: 8 examples make 4 batches per epoch, so a resume lands mid-epoch and must skip batches;
    # dropout > 0 makes the result depend on the restored RNG state too.
    return base_config(
        model_dir, data, output_dir, packing=False, lora_dropout=0.1, max_steps=STEPS, lr_scheduler="cosine"
    )


def test_interrupted_run_resumes_to_the_same_final_loss(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    sig = signal.SIGTERM  # what systemd, Kubernetes and Ansible's timeouts send; SIGINT takes the same path
    reference = train(
        validate_train_config(resume_config(tiny_llama_dir, instruction_data, tmp_path / "ref"), "t")
    )

    config = resume_config(tiny_llama_dir, instruction_data, tmp_path / "run")
    config_path = write_config(tmp_path / "run.yaml", config)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmlab.cli", "train", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the Trainer prints one {'loss': ...} line per logged step
        if "'loss'" in line:
            proc.send_signal(sig)
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "--resume" in stdout
    saved = checkpoints(tmp_path / "run")
    assert len(saved) == 1
    stopped_at = int(saved[0].name.split("-")[1])
    assert 1 <= stopped_at < STEPS

    with pytest.raises(ConfigError, match="--resume"):
        train(validate_train_config(config, "t"))  # starting over would silently discard the checkpoint
    resumed = train(validate_train_config(config, "t"), resume=True)
    assert resumed.metrics["status"] == "completed" and resumed.metrics["global_step"] == STEPS
    assert resumed.metrics["final_loss"] == pytest.approx(reference.metrics["final_loss"], rel=1e-4, abs=1e-4)
    full_curve = [point["loss"] for point in reference.metrics["loss_curve"]]
    resumed_curve = [point["loss"] for point in resumed.metrics["loss_curve"]]
    assert resumed_curve == pytest.approx(full_curve, rel=1e-4, abs=1e-4)


def test_resume_without_checkpoint_is_a_clear_error(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
):
    cfg = validate_train_config(base_config(tiny_llama_dir, instruction_data, tmp_path / "none"), "t")
    with pytest.raises(ConfigError, match="no checkpoint-N directory"):
        train(cfg, resume=True)
