"""`llmlab train submit`'s batch script and `llmlab train status`'s reading of Slurm (no Slurm needed)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from llmlab.config import ConfigError
from llmlab.train import submit as sub


def plan(tmp_path: Path, nodes: int = 2, gpus: int = 0, **kw) -> sub.SubmitPlan:
    return sub.SubmitPlan(
        config_path=tmp_path / "tiny.yaml",
        overrides=["max_steps=6"],
        output_dir=tmp_path / "run" / "output",
        nodes=nodes,
        gpus_per_node=gpus,
        partition=kw.get("partition"),
        time_limit=None,
        host_config=kw.get("host_config"),
        workdir=tmp_path,
    )


def srun_command(script: str) -> list[str]:
    line = next(line for line in script.splitlines() if line.startswith("srun "))
    inner = shlex.split(line)[-1]  # the bash -c argument
    assert inner.startswith("exec ")
    return shlex.split(inner[len("exec ") :], posix=True)


def test_two_nodes_one_torchrun_each_rendezvous_on_the_first(tmp_path: Path) -> None:
    script = sub.sbatch_script(plan(tmp_path, partition="batch", host_config=Path("/etc/llmlab/config.yaml")))
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    assert "#SBATCH --partition=batch" in script and "--gpus-per-node" not in script
    assert f"#SBATCH --output={tmp_path}/run/output/slurm-%j.out" in script
    assert 'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    command = srun_command(script)
    assert command[0].endswith("torchrun")
    assert "--nnodes=$SLURM_NNODES" in command and "--node_rank=$SLURM_NODEID" in command
    assert "--master_addr=$MASTER_ADDR" in command and "--nproc_per_node=1" in command
    at = command.index("llmlab.cli")
    assert command[at + 1 : at + 5] == [
        "--config",
        "/etc/llmlab/config.yaml",
        "train",
        str(tmp_path / "tiny.yaml"),
    ]
    assert command[-1] == "max_steps=6"


def test_gpus_per_node_sets_processes_per_node(tmp_path: Path) -> None:
    script = sub.sbatch_script(plan(tmp_path, nodes=4, gpus=8))
    assert "#SBATCH --gpus-per-node=8" in script
    assert "--nproc_per_node=8" in srun_command(script)


def test_one_node_is_standalone(tmp_path: Path) -> None:
    command = srun_command(sub.sbatch_script(plan(tmp_path, nodes=1)))
    assert "--standalone" in command and not any(w.startswith("--node_rank") for w in command)


def test_the_script_is_valid_bash(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text(sub.sbatch_script(plan(tmp_path)))
    subprocess.run(["bash", "-n", str(path)], check=True)


def fake_slurm(monkeypatch: pytest.MonkeyPatch, answers: dict[str, tuple[int, str]]) -> None:
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        code, out = answers.get(argv[0], (1, ""))
        return subprocess.CompletedProcess(argv, code, out, "")

    monkeypatch.setattr(sub, "_run", run)


def test_status_from_squeue_while_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_slurm(monkeypatch, {"squeue": (0, "PENDING|(Resources)\n")})
    status = sub.job_status("7")
    assert (status["state"], status["source"], status["reason"]) == ("PENDING", "squeue", "(Resources)")
    assert sub.status_exit_code(status["state"]) == sub.EXIT_WAITING


def test_status_from_scontrol_once_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = (
        "JobId=7 JobName=llmlab-tiny UserId=alice(2001) JobState=COMPLETED Reason=None ExitCode=0:0 "
        "NodeList=c-[1-2]"
    )
    fake_slurm(monkeypatch, {"squeue": (0, ""), "scontrol": (0, shown)})
    status = sub.job_status("7")
    assert (status["state"], status["exit_code"], status["nodes"]) == ("COMPLETED", "0:0", "c-[1-2]")
    assert sub.status_exit_code("COMPLETED") == sub.EXIT_DONE
    assert sub.status_exit_code("FAILED") == sub.EXIT_ENDED_BADLY


def test_status_unknown_job_and_bad_id(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_slurm(monkeypatch, {})
    assert sub.job_status("99")["state"] == "UNKNOWN"
    assert sub.status_exit_code("UNKNOWN") == sub.EXIT_UNKNOWN
    with pytest.raises(ConfigError, match="not a Slurm job id"):
        sub.job_status("7; rm -rf /")


def test_submit_and_status_are_verbs_of_train(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmlab.cli import build_parser, main

    args = build_parser().parse_args(["train", "submit", "c.yaml", "max_steps=2", "--nodes", "2"])
    assert (args.handler, args.config_file, args.overrides, args.nodes) == (
        sub.run_submit,
        "c.yaml",
        ["max_steps=2"],
        2,
    )
    fake_slurm(monkeypatch, {"squeue": (0, "RUNNING|c-1\n")})
    assert main(["train", "status", "7"]) == sub.EXIT_WAITING
    assert capsys.readouterr().out == "job 7: RUNNING (reason c-1)\n"
    assert main(["train", "status", "x7"]) == sub.EXIT_UNKNOWN
    assert "not a Slurm job id" in capsys.readouterr().err
