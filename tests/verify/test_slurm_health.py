"""The Slurm health check's decisions, fed `scontrol show node` output (no Slurm needed)."""

from __future__ import annotations

import pytest

from llmlab.verify import slurm_health as sh
from llmlab.verify.result import CheckResult, Status
from llmlab.verify.sources import CommandResult

IDLE = (
    "NodeName=compute-1-x7 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.31 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=172.18.0.3 "
    "NodeHostName=cluster-compute-1 Version=22.05.8 OS=Linux 6.1.0-28-amd64 #1 SMP PREEMPT_DYNAMIC Debian "
    "RealMemory=23000 AllocMem=0 FreeMem=20110 Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 "
    "Weight=1 Owner=N/A MCS_label=N/A Partitions=batch BootTime=2026-12-02T07:25:00 "
    "SlurmdStartTime=2026-12-02T08:00:00 LastBusyTime=2026-12-02T08:00:00 CfgTRES=cpu=2,mem=23000M,billing=2 "
    "AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 "
    "ExtSensorsTemp=n/s"
)


def node_text(state: str, reason: str = "") -> str:
    text = IDLE.replace("State=IDLE", f"State={state}")
    return text + (f" Reason={reason} [root@2026-12-02T08:01:02]" if reason else "")


def result(check_id: str, status: Status) -> CheckResult:
    r = CheckResult(status, "x")
    r.id = check_id
    return r


def test_parse_idle_node() -> None:
    node = sh.parse_node(IDLE)
    assert node == sh.NodeState("compute-1-x7", "IDLE", "")
    assert not node.drained


def test_parse_reason_with_spaces_and_equals_drops_the_stamp() -> None:
    node = sh.parse_node(node_text("IDLE+DRAIN", "llmlab: services.listening_ports, a=b"))
    assert node.reason == "llmlab: services.listening_ports, a=b"
    assert node.drained_by_llmlab


def test_parse_multiline_form() -> None:
    text = node_text("MIXED+DRAIN", "disk swap").replace(" RealMemory", "\n   RealMemory")
    node = sh.parse_node(text)
    assert (node.state, node.reason) == ("MIXED+DRAIN", "disk swap")
    assert node.drained and not node.drained_by_llmlab


def test_parse_rejects_other_output() -> None:
    with pytest.raises(ValueError, match="not scontrol node output"):
        sh.parse_node("Node compute-9 not found")


@pytest.mark.parametrize(
    ("state", "reason", "failing", "action"),
    [
        ("IDLE", "", ["services.listening_ports"], "drain"),
        ("ALLOCATED", "", ["gpu.xid"], "drain"),
        ("IDLE+DRAIN", "llmlab: gpu.xid", ["gpu.xid"], "none"),  # already, same reason
        ("IDLE+DRAIN", "llmlab: gpu.xid", ["gpu.xid", "gpu.ecc_errors"], "drain"),  # new reason
        ("IDLE+DRAIN", "maintenance: PSU swap", ["gpu.xid"], "none"),  # an admin's drain stays as it is
        ("IDLE+DRAIN", "llmlab: gpu.xid", [], "resume"),
        ("MIXED+DRAIN", "llmlab: gpu.xid", [], "resume"),
        ("IDLE+DRAIN", "maintenance: PSU swap", [], "none"),  # never resumes an admin's drain
        ("IDLE", "", [], "none"),
        ("DOWN", "Not responding", [], "none"),
    ],
)
def test_decide(state: str, reason: str, failing: list[str], action: str) -> None:
    decision = sh.decide(sh.parse_node(node_text(state, reason)), failing)
    assert decision.action == action
    if action == "drain":
        assert decision.reason == "llmlab: " + ", ".join(failing)


def test_long_reasons_are_cut_at_an_id() -> None:
    ids = [f"gpu.check_{i}" for i in range(40)]
    reason = sh.drain_reason(ids)
    assert (
        len(reason) <= sh.MAX_REASON
        and reason.startswith("llmlab: gpu.check_0,")
        and reason.endswith(", ...")
    )


class FakeScontrol:
    def __init__(self, show: str) -> None:
        self.show = show
        self.calls: list[list[str]] = []

    def run(self, argv, timeout):
        self.calls.append(list(argv))
        if argv[1] == "show":
            return CommandResult(0, self.show, "")
        return CommandResult(0, "", "")


def test_apply_drains_with_the_failing_ids_only() -> None:
    fake = FakeScontrol(node_text("IDLE"))
    results = [
        result("services.listening_ports", Status.FAIL),
        result("system.disk_root", Status.WARN),
        result("gpu.xid", Status.OK),
    ]
    done = sh.apply(fake, "compute-1-x7", results)
    assert done["action"] == "drain"
    assert fake.calls[-1] == [
        "scontrol",
        "update",
        "NodeName=compute-1-x7",
        "State=DRAIN",
        "Reason=llmlab: services.listening_ports",
    ]


def test_apply_resumes_only_its_own_drain() -> None:
    fake = FakeScontrol(node_text("IDLE+DRAIN", "llmlab: services.listening_ports"))
    assert sh.apply(fake, "compute-1-x7", [result("gpu.xid", Status.OK)])["action"] == "resume"
    assert fake.calls[-1] == ["scontrol", "update", "NodeName=compute-1-x7", "State=RESUME"]

    admin = FakeScontrol(node_text("IDLE+DRAIN", "bad fan"))
    assert sh.apply(admin, "compute-1-x7", [result("gpu.xid", Status.OK)])["action"] == "none"
    assert len(admin.calls) == 1  # only the read


def test_scontrol_errors_are_reported() -> None:
    class Broken:
        def run(self, argv, timeout):
            return CommandResult(1, "", "slurm_load_node error: Unable to contact slurm controller")

    with pytest.raises(sh.SlurmError, match="Unable to contact"):
        sh.apply(Broken(), "n1", [])


def test_metric_names_do_not_clash_with_the_timer() -> None:
    text = "llmlab_verify_exit_code 0\n# TYPE llmlab_verify_duration_seconds gauge\n"
    assert "llmlab_verify_" not in sh.prometheus_prefixed(text)


def test_the_cli_drains_then_resumes_and_writes_report_and_metrics(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`llmlab verify --slurm-health` end to end with a fake scontrol on PATH (a shell script)."""
    import json
    import os

    import yaml

    from llmlab.cli import main

    bin_dir, calls, state = tmp_path / "bin", tmp_path / "calls", tmp_path / "node"
    bin_dir.mkdir()
    state.write_text(node_text("IDLE"))
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = show ] && cat {state}\nexit 0\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_store": str(tmp_path),
                "reports_dir": str(tmp_path / "reports"),
                "textfile_dir": str(tmp_path / "textfile"),
                "verify": {"thresholds": {"disk_used_percent": {"warn": 0, "fail": 0}}},
            }
        )
    )
    argv = ["--config", str(config), "verify", "--slurm-health", "--slurm-node", "n1"]
    argv += ["--only", "system.disk_root"]
    assert main([*argv, "--slurm-prolog"]) == 1  # a prolog that fails: Slurm requeues the job
    drain = "update NodeName=n1 State=DRAIN Reason=llmlab: system.disk_root"
    assert calls.read_text().splitlines()[-1] == drain
    report = json.loads((tmp_path / "reports" / "slurm-health.json").read_text())
    assert report["slurm"]["action"] == "drain" and report["summary"]["status"] == "FAIL"
    assert report["slurm"]["trigger"] == "prolog"
    metrics = (tmp_path / "textfile" / "llmlab_slurm_health.prom").read_text()
    assert "llmlab_slurm_health_check_status" in metrics

    state.write_text(node_text("IDLE+DRAIN", "llmlab: system.disk_root"))
    config.write_text(config.read_text().replace("fail: 0", "fail: 100").replace("warn: 0", "warn: 100"))
    assert main(argv) == 0
    assert calls.read_text().splitlines()[-1] == "update NodeName=n1 State=RESUME"
    capsys.readouterr()
