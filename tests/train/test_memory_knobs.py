"""Memory knobs: `optimizer` and `attn_implementation` validated early; plan sizes optimizer states and
reads the host's GPU memory through a reader a test can feed."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import LLAMA_2_7B, base_config, write_config

from llmlab.config import ConfigError
from llmlab.gpus import CATALOG, HostGpu, find_sku
from llmlab.train.optimizers import OPTIMIZERS
from llmlab.train.plan import (
    ParameterCounts,
    architecture_from_config,
    estimate_memory,
    lora_parameters,
    make_plan,
    trainable_shapes,
)
from llmlab.train.schema import validate_train_config


def test_unknown_optimizer_is_refused_fast_naming_key_and_valid_values(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    path = write_config(tmp_path / "t.yaml", base_config(tiny_llama_dir, instruction_data, tmp_path / "out"))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "llmlab.cli", "train", str(path), "optimizer=adamw_9bit"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "optimizer: Value error, unknown optimizer 'adamw_9bit'; valid: adamw_torch, adamw_torch_fused, "
        in (result.stderr)
    )
    assert "paged_adamw_8bit" in result.stderr and "adafactor" in result.stderr
    assert elapsed < 2, f"refusing took {elapsed:.2f}s: something heavy is imported before validation"


def test_optimizer_names_are_the_trainers() -> None:
    from transformers.training_args import OptimizerNames

    assert set(OPTIMIZERS) <= {name.value for name in OptimizerNames}


def test_missing_packages_are_named(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmlab.train.modeling import check_memory_knobs

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("flash_attn", "bitsandbytes") else real_find_spec(name, *a),
    )
    config = base_config(tiny_llama_dir, instruction_data, tmp_path, attn_implementation="flash_attention_2")
    with pytest.raises(
        ConfigError, match=r"attn_implementation: flash_attention_2 needs the flash-attn package"
    ):
        check_memory_knobs(validate_train_config(config, "test"))
    config = base_config(tiny_llama_dir, instruction_data, tmp_path, optimizer="paged_adamw_8bit")
    with pytest.raises(
        ConfigError, match=r"optimizer: paged_adamw_8bit needs the bitsandbytes package.*adafactor"
    ):
        check_memory_knobs(validate_train_config(config, "test"))


def test_optimizer_and_attention_reach_the_trainer_and_model(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    from llmlab.train.modeling import choose_precision, load_model, load_tokenizer
    from llmlab.train.run import training_arguments

    cfg = validate_train_config(
        base_config(
            tiny_llama_dir, instruction_data, tmp_path, optimizer="adafactor", attn_implementation="eager"
        ),
        "test",
    )
    precision = choose_precision("fp32", "cpu")
    assert training_arguments(cfg, precision).optim == "adafactor"
    model = load_model(cfg, tiny_llama_dir, load_tokenizer(tiny_llama_dir), precision)
    assert model.config._attn_implementation == "eager"


def test_trainable_shapes_add_up(tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path) -> None:
    arch = architecture_from_config(LLAMA_2_7B)
    cfg = validate_train_config(base_config(tiny_llama_dir, instruction_data, tmp_path), "test")
    count = sum(math.prod(s) for s in trainable_shapes(arch, cfg, "full"))
    assert count == ParameterCounts.of(arch).total
    lora = sum(math.prod(s) for s in trainable_shapes(arch, cfg, "lora"))
    assert lora == lora_parameters(arch, cfg)


def test_plan_accounts_for_the_optimizer(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    arch = architecture_from_config(LLAMA_2_7B)
    total = ParameterCounts.of(arch).total

    def optimizer_gib(name: str, method: str = "full") -> float:
        cfg = validate_train_config(
            base_config(tiny_llama_dir, instruction_data, tmp_path, optimizer=name), "test"
        )
        return estimate_memory(arch, cfg, method, True, 2).optimizer_gib

    adamw = optimizer_gib("adamw_torch")
    assert adamw == pytest.approx(8 * total / 2**30)
    # 8-bit: one byte per moment plus a fp32 scale per block of 256 (the small norm vectors stay fp32).
    assert optimizer_gib("adamw_8bit") == pytest.approx(2 * (1 + 4 / 256) * total / 2**30, rel=0.01)
    assert optimizer_gib("paged_adamw_8bit") == optimizer_gib("adamw_8bit")
    assert optimizer_gib("adafactor") < adamw / 500  # rows + columns only
    assert optimizer_gib("sgd") == 0
    assert optimizer_gib("adamw_8bit", "lora") < optimizer_gib("adamw_torch", "lora") / 3


class FakeReader:
    def __init__(self, *gpus: HostGpu) -> None:
        self._gpus = list(gpus)

    def gpus(self) -> list[HostGpu]:
        return self._gpus


def test_plan_uses_this_hosts_nvml_total(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    cfg = validate_train_config(base_config(tiny_llama_dir, instruction_data, tmp_path), "test")
    reader = FakeReader(HostGpu("NVIDIA L4", 20000.0), HostGpu("NVIDIA Future GPU 9000", 65536.0))
    plan = make_plan(cfg, tiny_llama_dir, count_tokens=False, gpu_reader=reader)
    rows = {row["sku"]: row for row in plan["gpus"]}
    assert rows["L4"]["memory_gib"] == pytest.approx(20000 / 1024)
    assert rows["L4"]["memory_source"] == "this host (NVML)"
    assert rows["H100 SXM"]["memory_source"] == "catalogue"
    future = rows["NVIDIA Future GPU 9000"]
    assert future["memory_gib"] == 64 and future["tokens_per_second"] is None and future["fits"]
    assert json.loads(json.dumps(plan))["host_gpus"][0]["name"] == "NVIDIA L4"


def test_catalogue_memory_is_nvmls_with_a_source() -> None:
    assert find_sku("NVIDIA L4").memory_gib == pytest.approx(22.49, abs=0.01)  # not 24
    assert find_sku("NVIDIA H200").memory_gib == pytest.approx(140.4, abs=0.1)
    for name in ("NVIDIA B200", "NVIDIA GeForce RTX 5090", "NVIDIA RTX PRO 6000 Blackwell Server Edition",
                 "NVIDIA L40", "NVIDIA RTX 6000 Ada Generation", "NVIDIA RTX A6000", "Tesla T4",
                 "Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB", "NVIDIA L40S"):  # fmt: skip
        sku = find_sku(name)
        assert (
            sku is not None and sku.name in name.replace("Tesla ", "").replace("-SXM2-", " ") + " 16GB 32GB"
        )
    assert find_sku("NVIDIA L40S").name == "L40S" and find_sku("NVIDIA L40").name == "L40"
    assert find_sku("Tesla V100-SXM2-32GB").name == "V100 32GB"
    assert all(sku.memory_source and sku.source for sku in CATALOG)
