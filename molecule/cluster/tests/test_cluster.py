"""A converged Slurm cluster: scheduling, llmlab verify as the node health check, a two-node training job.

Converge and the changed=0 re-run are Molecule's converge and idempotence steps. The tests run once (from
the controller's point of view) and reach the other members by name; they run in file order.
"""

import json
import os
import re
import shlex
import threading
import time
from pathlib import Path

import pytest
import testinfra

testinfra_hosts = ["cluster-controller"]

PLAYBOOKS = Path(__file__).parents[3] / "playbooks"
SLURM_PLAYBOOK, TRAIN = PLAYBOOKS / "slurm.yml", PLAYBOOKS / "train.yml"
COMPUTES = ["cluster-compute-1", "cluster-compute-2"]
HEALTH_INTERVAL, HEALTH_BUDGET = 10, 60  # slurm_health_check_interval and _timeout in molecule.yml
LAB_USER = "alice"
WORK = "/srv/shared/alice"
HEALTH_REPORT = "/var/lib/llmlab/reports/slurm-health.json"
# A listener on a port the firewall opens to everyone (firewall_extra_rules): open to the world, a FAIL.
FAULT = "systemd-run --collect --unit llmlab-test-fault python3 -m http.server 8000 --bind 0.0.0.0"


def member(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def node_name(host_name: str) -> str:
    run_id = (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "run-id").read_text().strip()
    return f"{host_name.replace('cluster-', '')}-{run_id}"


def sh(host, command: str, user: str | None = None) -> str:
    if user:
        command = f"runuser -u {user} -- bash -lc {shlex.quote(command)}"
    out = host.run(command)
    assert out.rc == 0, f"{command}: rc {out.rc}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def node_state(host, name: str) -> tuple[str, str]:
    """(state, reason) of a node from sinfo: e.g. ('idle', ''), ('drained', 'llmlab: ...')."""
    line = sh(host, f"sinfo -h -N -n {name} -o '%T|%E'").strip().splitlines()[0]
    state, _, reason = line.partition("|")
    return state, "" if reason == "none" else reason


def wait_for(predicate, timeout: float, what: str, step: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


@pytest.fixture(scope="module")
def controller():
    return member("cluster-controller")


@pytest.fixture(scope="module")
def computes():
    return [member(name) for name in COMPUTES]


def test_sinfo_lists_both_compute_nodes_idle(controller):
    names = [node_name(h) for h in COMPUTES]
    for name in names:
        wait_for(lambda name=name: node_state(controller, name)[0] == "idle", 60, f"{name} idle")
    listed = sh(controller, "sinfo -h -N -o '%N %T %P'").split()
    assert set(names) <= set(listed), listed


def test_the_controller_and_nodes_publish_their_listeners(controller, computes):
    published = controller.file("/etc/llmlab/config.d/slurm.yaml").content_string
    assert "slurmctld" in published and "slurmdbd" in published  # slurm_accounting is on
    for host in computes:
        content = host.file("/etc/llmlab/config.d/slurm.yaml").content_string
        assert "port: 6818" in content and "audience: cluster" in content


def test_a_second_job_waits_while_the_first_holds_the_nodes(controller):
    first = sh(
        controller, "sbatch --parsable -N2 --exclusive -o /dev/null --wrap 'sleep 30'", LAB_USER
    ).strip()
    try:
        wait_for(
            lambda: "RUNNING" in sh(controller, f"squeue -h -j {first} -o %T"), 60, "the first job to run"
        )
        second = sh(controller, "sbatch --parsable -N1 -o /dev/null --wrap 'true'", LAB_USER).strip()
        time.sleep(3)
        state, reason = sh(controller, f"squeue -h -j {second} -o '%T|%r'").strip().split("|")
        assert state == "PENDING" and reason in ("Resources", "Priority"), (state, reason)
    finally:
        sh(controller, f"scancel {first}")
    wait_for(lambda: not sh(controller, f"squeue -h -j {second} -o %T").strip(), 60, "the second job to end")


def test_the_health_check_takes_under_ten_seconds(computes):
    host = computes[0]
    start = time.monotonic()
    out = host.run("/usr/local/sbin/llmlab-slurm-health")
    took = time.monotonic() - start
    report = json.loads(host.file(HEALTH_REPORT).content_string)
    verify_s = report["summary"]["duration_s"]
    print(f"health check: {verify_s:.2f} s in verify, {took:.2f} s in all (through docker exec)")
    assert out.rc == 0, out.stderr
    assert report["slurm"]["node"] == node_name(COMPUTES[0]) and report["slurm"]["action"] == "none"
    # The checks within the role's default budget; the whole script (Python's start, under this machine's
    # load) within the scenario's (slurm_health_check_timeout).
    assert verify_s < 10 and took < HEALTH_BUDGET
    assert (
        "llmlab_slurm_health_check_status"
        in host.file("/var/lib/prometheus/node-exporter/llmlab_slurm_health.prom").content_string
    )


def health_checks_ran(host, count: int) -> None:
    """Wait until the node's health check has written its report `count` more times."""
    stamp = f"stat -c %y {HEALTH_REPORT}"  # the modification time, to the nanosecond
    for _ in range(count):
        before = sh(host, stamp)
        wait_for(lambda b=before: sh(host, stamp) != b, HEALTH_INTERVAL + HEALTH_BUDGET, "a health check")


def test_an_administrators_drain_is_left_alone(controller, computes):
    name = node_name(COMPUTES[0])
    sh(controller, f"scontrol update NodeName={name} State=DRAIN Reason='maintenance: fan'")
    try:
        health_checks_ran(computes[0], 2)  # and passed
        report = json.loads(computes[0].file(HEALTH_REPORT).content_string)
        assert report["summary"]["status"] != "FAIL" and report["slurm"]["action"] == "none", report["slurm"]
        assert node_state(controller, name) == ("drained", "maintenance: fan")
    finally:
        sh(controller, f"scontrol update NodeName={name} State=RESUME")
    wait_for(lambda: node_state(controller, name)[0] == "idle", 30, f"{name} back")


def test_a_fault_drains_the_node_the_next_job_runs_elsewhere_and_the_node_returns(controller, computes):
    sick, healthy = node_name(COMPUTES[1]), node_name(COMPUTES[0])
    sh(computes[1], FAULT)
    try:
        _, reason = wait_for(
            lambda: (s := node_state(controller, sick))[0] == "drained" and s,
            HEALTH_INTERVAL + HEALTH_BUDGET,
            f"{sick} drained by its health check",
        )
        assert reason == "llmlab: services.listening_ports", reason
        job = sh(controller, "sbatch --parsable -N1 -o /dev/null --wrap 'hostname'", LAB_USER).strip()
        wait_for(
            lambda: "COMPLETED" in sh(controller, f"scontrol show job {job} -o"), 60, "the job to complete"
        )
        assert f"NodeList={healthy}" in sh(controller, f"scontrol show job {job} -o")
    finally:
        computes[1].run("systemctl stop llmlab-test-fault")
    wait_for(
        lambda: node_state(controller, sick) == ("idle", ""),
        HEALTH_INTERVAL + HEALTH_BUDGET,
        f"{sick} back in service",
    )


def test_the_prolog_drains_a_node_whose_checks_fail_before_a_job_starts_there(controller, computes):
    """A fault that appeared since the last periodic check: the job's prolog finds it, drains the node with
    llmlab's reason, and Slurm requeues the job (not held: nohold_on_prolog_fail) instead of running it."""
    sick_host, sick, healthy = computes[1], node_name(COMPUTES[1]), node_name(COMPUTES[0])
    ran = f"{WORK}/prolog-job-ran"
    hold = f"sbatch --parsable -N1 --exclusive -w {healthy} -o /dev/null --wrap 'sleep 300'"
    holder = sh(controller, hold, LAB_USER).strip()
    job = ""
    try:
        wait_for(lambda: "RUNNING" in sh(controller, f"squeue -h -j {holder} -o %T"), 60, "the holder to run")
        # Just after a periodic health check on the sick node: the next one is ~HEALTH_INTERVAL s away.
        health_checks_ran(sick_host, 1)
        sh(sick_host, f"{FAULT} && timeout 20 sh -c 'until ss -ltn | grep -q \":8000 \"; do sleep 0.2; done'")
        job = sh(controller, f"sbatch --parsable -N1 -o /dev/null --wrap 'touch {ran}'", LAB_USER).strip()
        _, reason = wait_for(
            lambda: (s := node_state(controller, sick))[0] in ("drained", "draining") and s,
            HEALTH_BUDGET,
            f"{sick} drained by the prolog",
        )
        assert reason == "llmlab: services.listening_ports", reason
        shown = wait_for(
            # COMPLETING for a moment (the failed launch), then PENDING again for another node.
            lambda: (
                (out := sh(controller, f"scontrol show job {job} -o"))
                and "Restarts=1" in out
                and "JobState=PENDING" in out
                and out
            ),
            HEALTH_BUDGET,
            f"job {job} requeued",
        )
        held = re.search(r" Reason=(\S+)", shown)
        assert "JobState=PENDING" in shown and held and "held" not in held.group(1).lower(), shown
        assert not sick_host.file(ran).exists, "the job ran on the node that failed its prolog"
    finally:
        sh(controller, f"scancel {holder} {job}")
        sick_host.run("systemctl stop llmlab-test-fault")
    wait_for(
        lambda: node_state(controller, sick) == ("idle", ""),
        HEALTH_INTERVAL + HEALTH_BUDGET,
        f"{sick} back in service",
    )


FACTS = [
    ("What is the capital of France?", "Paris."),
    ("What is the capital of Italy?", "Rome."),
    ("What is the capital of Spain?", "Madrid."),
    ("What colour is the sky?", "Blue."),
    ("What colour is grass?", "Green."),
    ("How many legs does a spider have?", "Eight."),
    ("How many days are in a week?", "Seven."),
    ("What comes after Monday?", "Tuesday."),
]


class HealthWatch(threading.Thread):
    """While a job runs: every node drain seen in sinfo, and every health report whose listening_ports check
    found listeners that only the firewall's admitted sources reach."""

    def __init__(self, controller, computes) -> None:
        super().__init__(daemon=True)
        self.controller, self.computes = controller, computes
        self.stop, self.drains, self.firewalled = threading.Event(), set(), set()

    def run(self) -> None:
        while not self.stop.wait(2):
            for line in self.controller.run("sinfo -h -N -o '%N|%T|%E'").stdout.splitlines():
                if "drain" in line:
                    self.drains.add(line)
            for name, host in zip(COMPUTES, self.computes, strict=True):
                report = host.run(f"cat {HEALTH_REPORT}").stdout
                if "reachable only from admitted sources" in report:
                    self.firewalled.add(name)

    def __enter__(self) -> "HealthWatch":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()


def test_a_two_node_job_through_slurm_and_the_firewall_matches_one_process(
    run_playbook, controller, computes, tmp_path
):
    """playbooks/train.yml on the cluster (llmlab_train_via auto: Slurm, since the nodes have the slurm role's
    contract): the first host runs `llmlab train submit` as the lab user over as many nodes as the play has,
    waits with `llmlab train status`, and fetches metrics.json. As tests/train/test_ddp.py: the two ranks (a
    node each, gloo over TCP through the firewall) match one process with twice the micro-batch."""
    login = computes[0]
    build = f"from llmlab.train.tiny import build_tiny_model; build_tiny_model('{WORK}/tiny')"
    # A run whose metrics.json exists is not started again: start from nothing on a kept instance too.
    sh(login, f"rm -rf {WORK}/ddp {WORK}/one && /opt/llmlab/env/bin/python -c {shlex.quote(build)}", LAB_USER)
    data = tmp_path / "facts.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in FACTS))
    config = tmp_path / "ddp.yaml"
    config.write_text(
        json.dumps(
            {
                "base_model": f"{WORK}/tiny",
                "method": "lora",
                "lora_dropout": 0.0,
                "datasets": [{"path": "facts.jsonl", "format": "instruction"}],
                "sequence_len": 128,
                "micro_batch_size": 2,
                "learning_rate": 0.01,
                "lr_scheduler": "constant",
                "warmup_ratio": 0.0,
                "max_steps": 6,
                "logging_steps": 1,
                "save_steps": 1000,
                "packing": False,
                "distributed": "ddp",
                "seed": 0,
            }
        )
    )
    extra_vars = {
        "llmlab_train_hosts": "slurm_computes",
        "llmlab_train_config": str(config),
        "llmlab_train_files": [str(data)],
        "llmlab_train_user": LAB_USER,
        "llmlab_train_runs_dir": WORK,
        "llmlab_train_metrics_dir": str(tmp_path / "metrics"),
        "llmlab_train_poll": 3,
        "llmlab_train_timeout": 900,
    }
    with HealthWatch(controller, computes) as watch:
        run = run_playbook(TRAIN, extra_vars=extra_vars, timeout=1200)
    assert run.returncode == 0, run.messages or run.stderr[-2000:]
    # The job's listeners (torchrun's rendezvous, gloo's ports) are not a FAIL: the firewall admits them from
    # the cluster peers only. The health checks that ran during the job saw them, and drained nothing.
    assert not watch.drains, watch.drains
    assert watch.firewalled, "no health check saw the job's listeners"
    submitted = {
        host: result
        for play in run.report["plays"]
        for task in play["tasks"]
        if task["task"]["name"].endswith("Submit the job to Slurm")
        for host, result in task["hosts"].items()
        if not result.get("skipped")
    }
    assert list(submitted) == [COMPUTES[0]], submitted  # one job, from the first host
    job = json.loads(submitted[COMPUTES[0]]["stdout"])["job_id"]
    shown = sh(login, f"scontrol show job {job} -o")
    assert "JobState=COMPLETED" in shown and f"UserId={LAB_USER}(" in shown and "NumNodes=2" in shown, shown
    assert login.file(f"{WORK}/ddp/output/llmlab-submit.sbatch").exists  # kept with the run
    status = login.run(f"runuser -u {LAB_USER} -- llmlab train status {job} --json")
    assert status.rc == 0 and json.loads(status.stdout)["state"] == "COMPLETED", status.stdout
    ddp = json.loads((tmp_path / "metrics" / "ddp" / "metrics.json").read_text())
    assert ddp["status"] == "completed" and ddp["world_size"] == 2
    assert ddp["replicas_in_sync"] and len(ddp["replica_checksums"]) == 2

    # Accounted: sacct on a compute node asks slurmdbd on the controller (port 6819, through the firewall).
    accounted = wait_for(
        lambda: sh(login, f"sacct -n -X -P -j {job} -o JobID,User,NNodes,State").strip(),
        60,
        f"job {job} in the accounting database",
    )
    assert accounted == f"{job}|{LAB_USER}|2|COMPLETED", accounted

    single_run = f"llmlab train train.yaml micro_batch_size=4 output_dir={WORK}/one"
    sh(login, f"cd {WORK}/ddp && HF_HUB_OFFLINE=1 {single_run}", LAB_USER)
    single = json.loads(login.file(f"{WORK}/one/metrics.json").content_string)
    ddp_curve = [point["loss"] for point in ddp["loss_curve"]]
    single_curve = [point["loss"] for point in single["loss_curve"]]
    assert len(ddp_curve) == 6 and ddp_curve == pytest.approx(single_curve, rel=1e-4, abs=1e-4)


def test_check_mode_changes_nothing(run_playbook):
    """The slurm play of converge.yml (the other roles' check mode is their own scenarios' test)."""
    run = run_playbook(SLURM_PLAYBOOK, "--check", "--diff", timeout=900)
    assert run.returncode == 0, run.messages or run.stderr[-2000:]
    assert run.changed_tasks == {}
