"""`llmlab train submit` and `llmlab train status`: a training run as a Slurm batch job.

submit writes an sbatch script into the run's output_dir (kept there, next to metrics.json) and submits it:
one torchrun per node (`srun --ntasks-per-node=1`), the rendezvous on the allocation's first node, the same
config and overrides on every node, and the host config (`llmlab --config`) forwarded. It prints the job id.
The output_dir, the config and its data must be on a filesystem every node sees (as on a cluster's NFS).

status reads the job from squeue, else `scontrol show job` (finished jobs stay there for MinJobAge), else
sacct (where accounting runs). Exit codes: 0 COMPLETED, 1 not finished yet (PENDING, RUNNING, ...),
2 ended otherwise (FAILED, CANCELLED, TIMEOUT, NODE_FAIL, ...), 3 unknown job, a malformed id, or Slurm could
not be asked. submit exits 0 with the job id printed, 1 when sbatch refused, 2 on a bad config.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llmlab.config import ConfigError

SCRIPT_NAME = "llmlab-submit.sbatch"
# The rendezvous port on the first node: one per job (two jobs may share a first node), from the job id.
PORT_BASE, PORT_SPAN = 29400, 200
SUBMIT_SCHEMA = "llmlab.train.submit"
STATUS_SCHEMA = "llmlab.train.status"
EXIT_DONE, EXIT_WAITING, EXIT_ENDED_BADLY, EXIT_UNKNOWN = 0, 1, 2, 3
NOT_FINISHED = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def register(verbs: argparse._SubParsersAction) -> None:
    """`llmlab train submit CONFIG.yaml ...` and `llmlab train status JOB`, sub-verbs of `train`."""
    sub = verbs.add_parser("submit", help="run a training config as a Slurm batch job; prints the job id")
    sub.add_argument("config_file", metavar="CONFIG.yaml", help="training config")
    sub.add_argument("overrides", metavar="key=value", nargs="*", help="override a config key")
    sub.add_argument("--nodes", type=int, default=1, help="nodes for the job")
    sub.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (0: CPU, gloo)")
    sub.add_argument("--partition", default=None, help="Slurm partition (default: Slurm's)")
    sub.add_argument("--time", default=None, help="time limit (Slurm's format, e.g. 2:00:00)")
    sub.add_argument("--json", action="store_true", help="print the submission as JSON")
    sub.set_defaults(handler=run_submit)
    status = verbs.add_parser(
        "status", help="a Slurm job's state (exit 0 done, 1 waiting, 2 failed, 3 unknown)"
    )
    status.add_argument("job_id", metavar="JOB", help="Slurm job id, as `llmlab train submit` printed it")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=run_status, config_error_exit=EXIT_UNKNOWN)


@dataclass(frozen=True)
class SubmitPlan:
    config_path: Path
    overrides: list[str]
    output_dir: Path
    nodes: int
    gpus_per_node: int
    partition: str | None
    time_limit: str | None
    host_config: Path | None
    workdir: Path


def sbatch_script(plan: SubmitPlan) -> str:
    """The batch script: one torchrun per node, node rank from SLURM_NODEID, master on the first node."""
    from llmlab.train.launch import launch_command

    nproc = max(plan.gpus_per_node, 1)
    # launch_command is the one definition of the torchrun invocation; the per-node values are shell
    # variables that srun's tasks expand.
    if plan.nodes == 1:
        command = launch_command(plan.config_path, plan.overrides, nproc)
    else:
        command = launch_command(
            plan.config_path, plan.overrides, nproc, plan.nodes, 0, "MASTER_ADDR", PORT_BASE
        )
    if plan.host_config is not None:
        at = command.index("llmlab.cli") + 1
        command[at:at] = ["--config", str(plan.host_config.resolve())]
    words = []
    for word in command:
        if word.startswith("--nnodes="):
            words.append('--nnodes="$SLURM_NNODES"')
        elif word.startswith("--node_rank="):
            words.append('--node_rank="$SLURM_NODEID"')
        elif word.startswith("--master_addr="):
            words.append('--master_addr="$MASTER_ADDR"')
        elif word.startswith("--master_port="):
            words.append('--master_port="$MASTER_PORT"')
        else:
            words.append(shlex.quote(word))
    directives = [
        f"--job-name=llmlab-{plan.config_path.stem}"[:80],
        f"--nodes={plan.nodes}",
        "--ntasks-per-node=1",
        f"--chdir={plan.workdir}",
        f"--output={plan.output_dir}/slurm-%j.out",
    ]
    if plan.gpus_per_node > 0:
        directives.append(f"--gpus-per-node={plan.gpus_per_node}")
    if plan.partition:
        directives.append(f"--partition={plan.partition}")
    if plan.time_limit:
        directives.append(f"--time={plan.time_limit}")
    lines = [
        "#!/bin/bash",
        f"# Written by `llmlab train submit` for {plan.config_path}; resubmit with `sbatch {SCRIPT_NAME}`.",
        *(f"#SBATCH {d}" for d in directives),
        "set -euo pipefail",
        "# The rendezvous: the first node of the allocation, by the address Slurm reaches it on.",
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "MASTER_ADDR=$(scontrol show node \"$first\" --oneliner | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p')",
        f"MASTER_PORT=$(( {PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN} ))",
        "export MASTER_ADDR MASTER_PORT",
        'echo "llmlab: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, rendezvous $MASTER_ADDR:$MASTER_PORT"',
        "srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c " + shlex.quote("exec " + " ".join(words)),
        "",
    ]
    return "\n".join(lines)


def submit(plan: SubmitPlan) -> dict:
    if plan.nodes < 1 or plan.gpus_per_node < 0:
        raise ConfigError(
            f"train submit: --nodes must be >= 1 and --gpus-per-node >= 0 "
            f"(got {plan.nodes}, {plan.gpus_per_node})"
        )
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    script = plan.output_dir / SCRIPT_NAME
    script.write_text(sbatch_script(plan), encoding="utf-8")
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch {script}: {(done.stderr or done.stdout).strip()}")
    job_id = done.stdout.strip().split(";", 1)[0]
    return {
        "schema": SUBMIT_SCHEMA,
        "schema_version": 1,
        "job_id": job_id,
        "script": str(script),
        "output_dir": str(plan.output_dir),
        "nodes": plan.nodes,
        "gpus_per_node": plan.gpus_per_node,
    }


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: command not found")


def parse_job(text: str) -> dict[str, str]:
    """JobState, ExitCode, NodeList, Reason from `scontrol show job JOB --oneliner`."""
    found = {}
    for key in ("JobState", "ExitCode", "NodeList", "Reason"):
        m = re.search(rf"(?:^|\s){key}=(\S*)", text)
        if m:
            found[key] = m.group(1)
    return found


def job_status(job_id: str) -> dict:
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise ConfigError(f"train status: {job_id!r} is not a Slurm job id such as 42")
    state, source, detail = "", "", {}
    queue = _run(["squeue", "-h", "-j", job_id, "-o", "%T|%R"])
    if queue.returncode == 0 and queue.stdout.strip():
        state, _, reason = queue.stdout.strip().splitlines()[0].partition("|")
        source, detail = "squeue", {"reason": reason}
    if not state:
        shown = _run(["scontrol", "show", "job", job_id, "--oneliner"])
        if shown.returncode == 0 and "JobState=" in shown.stdout:
            job = parse_job(shown.stdout)
            state, source = job.get("JobState", ""), "scontrol"
            detail = {"exit_code": job.get("ExitCode"), "nodes": job.get("NodeList")}
    if not state:
        acct = _run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode"])
        if acct.returncode == 0 and acct.stdout.strip():
            state, _, exit_code = acct.stdout.strip().splitlines()[0].partition("|")
            state, source, detail = state.split()[0], "sacct", {"exit_code": exit_code}
    return {
        "schema": STATUS_SCHEMA,
        "schema_version": 1,
        "job_id": job_id,
        "state": state or "UNKNOWN",
        "source": source or None,
        **detail,
    }


def status_exit_code(state: str) -> int:
    if state == "COMPLETED":
        return EXIT_DONE
    if state in NOT_FINISHED:
        return EXIT_WAITING
    if state == "UNKNOWN":
        return EXIT_UNKNOWN
    return EXIT_ENDED_BADLY


def run_status(args: argparse.Namespace) -> int:
    status = job_status(args.job_id)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        shown = ("reason", "exit_code", "nodes")
        extra = ", ".join(f"{k} {v}" for k, v in status.items() if k in shown and v)
        print(f"job {status['job_id']}: {status['state']}" + (f" ({extra})" if extra else ""))
    return status_exit_code(status["state"])


def run_submit(args: argparse.Namespace) -> int:
    from llmlab.train.schema import load_train_config

    config_path = Path(args.config_file)
    cfg = load_train_config(config_path, args.overrides)
    plan = SubmitPlan(
        config_path=config_path.resolve(),
        overrides=args.overrides,
        output_dir=cfg.output_dir,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        partition=args.partition,
        time_limit=args.time,
        host_config=args.config,
        workdir=Path(os.getcwd()),
    )
    try:
        result = submit(plan)
    except RuntimeError as exc:
        print(f"llmlab train submit: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(result["job_id"])
    return 0
