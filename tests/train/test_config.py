"""The training config: validated before anything loads; errors name the key, the value and what is valid."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import base_config, write_config

from llmlab.config import ConfigError
from llmlab.train.schema import load_train_config, parse_overrides


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmlab.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def config_path(tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "train.yaml", base_config(tiny_llama_dir, instruction_data, tmp_path / "out")
    )


def test_bad_config_fails_fast_naming_key_value_and_choices(config_path: Path) -> None:
    started = time.monotonic()
    result = run_cli("train", str(config_path), "method=lorra", "learning_rat=1e-4", "lora_dropout=1.5")
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "method: Input should be 'lora', 'qlora', 'full' or 'dpo' (got 'lorra')" in result.stderr
    assert "lora_dropout: Input should be less than 1 (got 1.5)" in result.stderr
    assert "learning_rat: unknown key" in result.stderr and "did you mean 'learning_rate'?" in result.stderr
    assert elapsed < 1.5, f"validation took {elapsed:.2f}s: something heavy is imported before it"


def test_missing_dataset_file_and_required_keys(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml", {"datasets": [{"path": str(tmp_path / "nope.jsonl"), "format": "text"}]}
    )
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    message = str(err.value)
    assert "base_model: required key is missing" in message
    assert "datasets.0.path: Value error, file not found" in message


def test_unknown_dataset_format_lists_the_valid_ones(config_path: Path, instruction_data: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"datasets\.0\.format: Input should be 'text', 'instruction', 'chat', 'preference' or "
        r"'preference_chat'",
    ):
        load_train_config(config_path, [f"datasets=[{{path: {instruction_data}, format: alpaca}}]"])


def test_overrides_parse_yaml_values_and_nested_keys(config_path: Path) -> None:
    cfg = load_train_config(
        config_path, ["max_steps=7", "packing=false", "lora_target_modules=[q_proj, v_proj]", "plan.mfu=0.5"]
    )
    assert (cfg.max_steps, cfg.packing, cfg.lora_target_modules, cfg.plan.mfu) == (
        7,
        False,
        ["q_proj", "v_proj"],
        0.5,
    )
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["max_steps"])


def test_existing_checkpoints_are_not_overwritten_without_resume(config_path: Path, tmp_path: Path) -> None:
    (tmp_path / "out" / "checkpoint-5").mkdir(parents=True)
    result = run_cli("train", str(config_path))
    assert result.returncode == 2 and "pass --resume" in result.stderr and "Traceback" not in result.stderr


def test_print_schema_is_json_schema_of_every_key() -> None:
    result = run_cli("train", "--print-schema")
    schema = json.loads(result.stdout)
    for key in (
        "base_model",
        "method",
        "lora_r",
        "datasets",
        "packing",
        "precision",
        "tracking",
        "distributed",
    ):
        assert key in schema["properties"], key
    assert schema["required"] == ["base_model", "datasets"]


def test_launch_command_for_two_nodes(config_path: Path) -> None:
    result = run_cli(
        "train",
        str(config_path),
        "max_steps=9",
        "--launch-command",
        "--nproc",
        "8",
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--master-addr",
        "10.0.0.1",
    )
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert command[0].endswith("torchrun")
    for flag in (
        "--nnodes=2",
        "--nproc_per_node=8",
        "--node_rank=1",
        "--master_addr=10.0.0.1",
        "--master_port=29500",
    ):
        assert flag in command
    assert command[-3:] == ["train", str(config_path.resolve()), "max_steps=9"]


def test_launch_command_forwards_the_host_config(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmlab.cli import main

    host = tmp_path / "host.yaml"
    host.write_text("lab_group: staff\n")
    assert main(["--config", str(host), "train", str(config_path), "--launch-command", "--nproc", "2"]) == 0
    command = capsys.readouterr().out.split()
    cli = command.index("llmlab.cli")
    expected = ["--config", str(host.resolve()), "train", str(config_path.resolve())]
    assert command[cli + 1 : cli + 5] == expected
    assert main(["train", str(config_path), "--launch-command"]) == 0
    assert "--config" not in capsys.readouterr().out.split()  # none given: ranks read the same default


def test_merge_is_a_verb_of_its_own_beside_the_config_form(tmp_path: Path) -> None:
    result = run_cli("train", "merge", str(tmp_path))
    assert result.returncode == 2 and "holds no adapter_config.json" in result.stderr
    result = run_cli("train", "merge", str(tmp_path), "max_steps=3")
    assert result.returncode == 2 and "unrecognized arguments: max_steps=3" in result.stderr
    result = run_cli("train", "run", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "absent.yaml: file not found" in result.stderr


def test_distributed_presets_map_to_trainer_arguments(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from llmlab.train.launch import distributed_arguments

    cfg = load_train_config(config_path, ["distributed=fsdp", "gradient_checkpointing=true"])
    assert distributed_arguments(cfg) == {}, "one process has nothing to shard with"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed_arguments(cfg) == {
        "fsdp": True,
        "fsdp_config": {"version": 2, "activation_checkpointing": True},
    }
    assert distributed_arguments(load_train_config(config_path)) == {}  # ddp: torchrun is enough
    zero3 = load_train_config(config_path, ["distributed=deepspeed_zero3"])
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ConfigError, match=r"needs the deepspeed package.*valid without it: ddp, fsdp"):
            distributed_arguments(zero3)
    else:
        assert distributed_arguments(zero3)["deepspeed"]["zero_optimization"]["stage"] == 3
