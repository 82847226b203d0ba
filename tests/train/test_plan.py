"""`llmlab plan`: parameter counts from config.json match real models; memory, fit, speed and cost add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import LLAMA_2_7B, base_config, write_config

from llmlab.gpus import CATALOG, find_sku
from llmlab.train.plan import (
    ParameterCounts,
    architecture_from_config,
    estimate_memory,
    lora_parameters,
    make_plan,
    read_model_config,
)
from llmlab.train.schema import validate_train_config


@pytest.fixture
def llama_7b_dir(tmp_path: Path) -> Path:
    model_dir = tmp_path / "llama-2-7b"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(LLAMA_2_7B))
    return model_dir


def config_for(model_dir: Path, data: Path, out: Path, **overrides):
    return validate_train_config(base_config(model_dir, data, out, **overrides), "test")


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_counts_from_config_match_the_real_model(
    fixture: str, request, instruction_data: Path, tmp_path: Path
):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model_dir = request.getfixturevalue(fixture)
    arch = architecture_from_config(read_model_config(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert ParameterCounts.of(arch).total == sum(p.numel() for p in model.parameters())
    cfg = config_for(model_dir, instruction_data, tmp_path, lora_r=4)
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert lora_parameters(arch, cfg) == adapted.get_nb_trainable_parameters()[0]


def test_llama_2_7b_parameter_count_is_exact() -> None:
    assert ParameterCounts.of(architecture_from_config(LLAMA_2_7B)).total == 6_738_415_616


def test_7b_fits_as_everyone_knows(llama_7b_dir: Path, instruction_data: Path, tmp_path: Path) -> None:
    arch = architecture_from_config(LLAMA_2_7B)
    cfg = config_for(llama_7b_dir, instruction_data, tmp_path, sequence_len=2048, micro_batch_size=1)
    full = estimate_memory(arch, cfg, "full", True, compute_bytes=2)
    lora = estimate_memory(arch, cfg, "lora", True, compute_bytes=2)
    qlora = estimate_memory(arch, cfg, "qlora", True, compute_bytes=2)
    assert 100 < full.weights_gib + full.gradients_gib + full.optimizer_gib < 101  # 16 bytes per parameter
    assert 12.5 < lora.weights_gib < 13  # bf16 base
    assert 3.5 < qlora.weights_gib < 4.5  # nf4 base + fp32 embeddings and head
    # Full fine-tuning needs more than an 80 GB card; LoRA fits a 24 GB one; QLoRA a 12 GB one.
    assert full.total_gib > 80 and 12 < lora.total_gib < 24 and qlora.total_gib < 12
    no_checkpointing = estimate_memory(arch, cfg, "lora", False, compute_bytes=2)
    assert no_checkpointing.activations_gib > 5 * lora.activations_gib


def test_sharding_divides_the_right_terms(llama_7b_dir: Path, instruction_data: Path, tmp_path: Path) -> None:
    arch = architecture_from_config(LLAMA_2_7B)
    ddp = estimate_memory(arch, config_for(llama_7b_dir, instruction_data, tmp_path), "full", True, 2)
    plan = {"num_gpus": 8}
    zero2 = config_for(llama_7b_dir, instruction_data, tmp_path, distributed="deepspeed_zero2", plan=plan)
    fsdp = config_for(llama_7b_dir, instruction_data, tmp_path, distributed="fsdp", plan=plan)
    z2, fs = estimate_memory(arch, zero2, "full", True, 2), estimate_memory(arch, fsdp, "full", True, 2)
    assert z2.weights_gib == ddp.weights_gib and z2.optimizer_gib == pytest.approx(ddp.optimizer_gib / 8)
    assert fs.weights_gib == pytest.approx(ddp.weights_gib / 8)
    assert fs.activations_gib == ddp.activations_gib


def test_plan_table_speed_and_cost(llama_7b_dir: Path, instruction_data: Path, tmp_path: Path) -> None:
    cfg = config_for(
        llama_7b_dir, instruction_data, tmp_path, method="qlora", plan={"gpu_hour_prices": {"L4": 0.8}}
    )
    plan = make_plan(cfg, llama_7b_dir, count_tokens=False)
    rows = {row["sku"]: row for row in plan["gpus"]}
    assert len(rows) == len(CATALOG) and rows["L4"]["fits"]
    l4 = find_sku("L4")
    expected = 0.35 * l4.bf16_tflops * 1e12 / (4 * plan["parameters"]["total"])
    assert rows["L4"]["tokens_per_second"] == pytest.approx(expected)
    assert rows["L4"]["cost_per_epoch"] is None  # no epoch tokens counted
    assert rows["H100 SXM"]["tokens_per_second"] > rows["L4"]["tokens_per_second"]


def test_plan_cli_json_counts_epoch_tokens_and_prices(tiny_llama_dir: Path, instruction_data: Path, tmp_path):
    config = base_config(
        tiny_llama_dir, instruction_data, tmp_path / "out", plan={"gpu_hour_prices": {"L4": 1.0}}
    )
    path = write_config(tmp_path / "plan.yaml", config)
    result = subprocess.run(
        [sys.executable, "-m", "llmlab.cli", "plan", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["schema_version"] == 1 and plan["method"] == "lora"
    assert 8 * 10 < plan["epoch_tokens"] < 8 * 60  # eight short Q&A examples
    l4 = next(row for row in plan["gpus"] if row["sku"] == "L4")
    assert l4["cost_per_epoch"] == pytest.approx(l4["hours_per_epoch"] * 1.0)
    assert {m["method"] for m in plan["memory"]} == {"full", "lora", "qlora"}


def test_mfu_states_its_accounting_and_peak() -> None:
    from llmlab.train.metrics import mfu_estimate

    h100 = mfu_estimate("lora", 7_000_000_000, 1000.0, 2, "bf16", "NVIDIA H100 80GB HBM3")
    assert h100["flops_per_token"] == 4 * 7_000_000_000
    assert h100["mfu"] == pytest.approx(1000 * 28e9 / (989.5e12 * 2))
    assert "4N per token (lora)" in h100["accounting"] and "H100 SXM" in h100["peak_source"]
    full = mfu_estimate("full", 1000, 1.0, 1, "bf16", "NVIDIA A10G")
    assert full["flops_per_token"] == 6000
    assert mfu_estimate("lora", 1000, 1.0, 1, "bf16", "Some Future GPU")["mfu"] is None
    assert mfu_estimate("lora", 1000, 1.0, 1, "fp32", "NVIDIA A10G")["mfu"] is None


def test_plan_prices_the_whole_run_and_names_the_cheapest_fitting_sku(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    prices = {"L4": 0.8, "H100 SXM": 3.0, "T4": 0.1}
    cfg = validate_train_config(
        base_config(
            tiny_llama_dir,
            instruction_data,
            tmp_path / "o",
            packing=False,
            max_steps=None,
            epochs=3,
            plan={"gpu_hour_prices": prices, "num_gpus": 2},
        ),
        "t",
    )
    plan = make_plan(cfg, tiny_llama_dir, gpu_reader=NoGpus())
    # 8 examples, micro-batch 2 on 2 GPUs: 2 steps an epoch, 6 for three epochs.
    assert plan["run"]["steps_per_epoch"] == 2 and plan["run"]["steps"] == 6 and plan["run"]["epochs"] == 3
    rows = {row["sku"]: row for row in plan["gpus"]}
    assert rows["L4"]["hours_per_run"] == pytest.approx(3 * rows["L4"]["hours_per_epoch"])
    assert rows["L4"]["cost_per_run"] == pytest.approx(rows["L4"]["hours_per_run"] * 2 * 0.8)
    cheapest = min((rows[name] for name in prices), key=lambda row: row["cost_per_run"])
    assert plan["cheapest"] == {
        "sku": cheapest["sku"],
        "hours": cheapest["hours_per_run"],
        "cost": cheapest["cost_per_run"],
    }

    by_steps = make_plan(cfg.model_copy(update={"max_steps": 5}), tiny_llama_dir, gpu_reader=NoGpus())
    assert by_steps["run"]["steps"] == 5 and by_steps["run"]["epochs"] == pytest.approx(2.5)


class NoGpus:
    def gpus(self) -> list:
        return []


def test_dpo_plan_holds_two_rows_per_pair_and_no_second_copy_of_the_weights(
    llama_7b_dir: Path, tmp_path: Path
):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Q?", "chosen": "A.", "rejected": "B."}) + "\n")
    arch = architecture_from_config(LLAMA_2_7B)
    data = [{"path": str(pairs), "format": "preference"}]
    dpo = validate_train_config({"base_model": str(llama_7b_dir), "method": "dpo", "datasets": data}, "t")
    lora = validate_train_config(
        {
            "base_model": str(llama_7b_dir),
            "method": "lora",
            "datasets": [{"path": str(write_text(tmp_path / "t.jsonl")), "format": "text"}],
        },
        "t",
    )
    for weights in ("lora", "qlora", "full"):
        d = estimate_memory(arch, dpo.model_copy(update={"dpo_method": weights}), weights, False, 2)
        s = estimate_memory(arch, lora, weights, False, 2)
        assert d.activations_gib == pytest.approx(2 * s.activations_gib)  # chosen and rejected rows
        assert (d.weights_gib, d.gradients_gib, d.optimizer_gib) == (
            s.weights_gib,
            s.gradients_gib,
            s.optimizer_gib,
        )
    plan = make_plan(dpo, llama_7b_dir, count_tokens=False, gpu_reader=NoGpus())
    assert plan["method"] == "dpo" and plan["weights"] == "lora"
    assert plan["flops_per_token"] == 6 * plan["parameters"]["total"]  # 4N policy + 2N reference forward
    full = make_plan(
        dpo.model_copy(update={"dpo_method": "full"}), llama_7b_dir, count_tokens=False, gpu_reader=NoGpus()
    )
    assert full["flops_per_token"] == 8 * plan["parameters"]["total"]  # + the precomputed reference pass


def write_text(path: Path) -> Path:
    path.write_text(json.dumps({"text": "hello"}) + "\n")
    return path


def test_plan_of_an_adapter_run_as_base_reads_its_base_models_shapes(tiny_llama_dir: Path, tmp_path: Path):
    run = tmp_path / "sft-run"
    run.mkdir()
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_llama_dir)}))
    assert read_model_config(run) == read_model_config(tiny_llama_dir)
