"""The operator's fleet workflow on six converged hosts (two gpu_servers, four cpu_lab).

Converge (site.yml) and the second run with changed=0 are Molecule's converge and idempotence steps. These
tests then run the playbooks again through the JSON callback: check mode is clean on every host, verify.yml
verifies and reports every host, and a fault injected on one host fails that host only, with the failing
check named in the summary and every other host's report still fetched.
"""

import json
import os
import shlex
from pathlib import Path

import pytest
import testinfra

PLAYBOOKS = Path(__file__).parents[3] / "playbooks"
SITE = PLAYBOOKS / "site.yml"
VERIFY = PLAYBOOKS / "verify.yml"
GPU_SERVERS = ["fleet-1", "fleet-2"]
CPU_LAB = ["fleet-3", "fleet-4", "fleet-5", "fleet-6"]
FLEET = GPU_SERVERS + CPU_LAB


def other_host(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def task_results(run, name: str) -> dict:
    """The per-host results of the task called `name` (the JSON callback's task names carry the role)."""
    for play in run.report["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].split(" : ")[-1] == name:
                return task["hosts"]
    raise AssertionError(f"no task {name!r} in the run")


def summary_lines(run) -> dict[str, str]:
    """The fleet summary table the playbook printed, as {host: its line}."""
    results = task_results(run, "Show the fleet summary")
    assert len(results) == 1, "the summary is printed once"
    lines = next(iter(results.values()))["msg"]
    assert lines[0].split() == ["host", "status", "failing", "checks"]
    return {line.split()[0]: line for line in lines[1:] if line.split()[0] in FLEET}


def run_verify(run_playbook, reports_root: Path):
    run = run_playbook(VERIFY, extra_vars={"llmlab_verify_reports_root": str(reports_root)}, timeout=600)
    runs = list(reports_root.iterdir())
    assert len(runs) == 1, f"one report directory per run: {runs}"
    return run, runs[0]


# --- group placement: site.yml puts the GPU stack on gpu_servers only ---


def test_the_gpu_stack_is_on_the_gpu_servers_only(host):
    name = host.backend.get_hostname()
    docker = host.service("docker")
    if name in GPU_SERVERS:
        assert docker.is_running
        assert host.package("libcuda1").is_installed
        assert host.run("docker info --format '{{.Driver}}'").stdout.strip() == "vfs"
    else:
        assert not host.package("docker.io").is_installed
        assert not host.package("libcuda1").is_installed
    # the lab roles are on every host
    assert host.service("jupyter").is_running
    assert host.file("/usr/local/bin/llmlab").is_symlink


def test_the_environment_holds_no_ml_stack(host):
    pip = host.run("/opt/llmlab/env/bin/pip list --format json")
    assert pip.rc == 0, pip.stderr
    names = {p["name"].lower() for p in json.loads(pip.stdout)}
    assert {"jupyterlab", "ipykernel", "llmlab"} <= names
    assert not names & {"torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets"}


# --- the firewall's cluster rules: gpu_servers admit each other on the torchrun/NCCL ports, nobody else ---

CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)"


def address(host) -> str:
    return host.check_output("hostname -i").split()[0]


@pytest.fixture
def rendezvous_listener():
    """A TCP listener on fleet-1's torchrun port (29500), stopped by systemd after a minute at most."""
    listener = other_host("fleet-1")
    with listener.sudo():
        probe = "systemd-run --unit llmlab-rendezvous-probe --property RuntimeMaxSec=60"
        start = listener.run(f"{probe} python3 -m http.server 29500")
        assert start.rc == 0, start.stderr
        listener.run("timeout 10 sh -c 'until ss -ltn | grep -q :29500; do sleep 0.5; done'")
    yield address(listener)
    with listener.sudo():
        listener.run("systemctl stop llmlab-rendezvous-probe")


@pytest.mark.parametrize("peer, admitted", [("fleet-2", True), ("fleet-3", False)])
def test_the_cluster_ports_admit_the_other_gpu_servers_only(rendezvous_listener, peer, admitted):
    result = other_host(peer).run(f"python3 -c {shlex.quote(CONNECT)} {rendezvous_listener} 29500")
    if admitted:
        assert result.rc == 0, result.stderr
    else:
        # ufw's default deny drops the packets: the connection times out (not refused: nothing answers)
        assert result.rc != 0 and "timed out" in result.stderr, result.stderr


def test_a_cluster_peer_without_an_address_fails_before_any_change(run_playbook, tmp_path):
    playbook = tmp_path / "firewall.yml"
    playbook.write_text("- hosts: gpu_servers\n  become: true\n  roles: [firewall]\n")
    no_address = {"firewall_cluster_address": ""}
    run = run_playbook(playbook, "--limit", "fleet-1", extra_vars=no_address, timeout=600)
    assert run.returncode == 2, run.stderr[-2000:]
    expected = 'firewall_cluster_group "gpu_servers": no address for fleet-2'
    assert any(expected in message for message in run.messages), run.messages
    assert run.stats["fleet-1"]["changed"] == 0


# --- playbook runs against the whole fleet ---


# site.yml in check mode on six hosts: beyond pytest-timeout's default 600 s on a loaded 2-core machine.
@pytest.mark.timeout(1500)
def test_check_mode_of_site_is_clean_on_every_host(run_playbook):
    run = run_playbook(SITE, "--check", "--diff", timeout=1400)
    assert run.returncode == 0, run.messages or run.stderr[-2000:]
    assert set(FLEET) <= set(run.stats)
    for host in FLEET:
        assert run.stats[host]["failures"] == 0, host
        assert run.stats[host]["unreachable"] == 0, host
        assert run.stats[host]["changed"] == 0, f"check mode would change {run.changed_tasks}"


def test_verify_passes_and_reports_every_host(run_playbook, tmp_path):
    run, report_dir = run_verify(run_playbook, tmp_path)
    assert run.returncode == 0, run.messages or run.stderr[-2000:]
    for host in FLEET:
        assert run.stats[host]["failures"] == 0, host
        assert run.stats[host]["changed"] == 0, f"{host}: verify changed something"
        report = json.loads((report_dir / f"{host}.json").read_text())
        assert report["schema"] == "llmlab.verify.report"
        assert report["summary"]["status"] in ("OK", "WARN"), (host, report["summary"])
        status = {check["id"]: check["status"] for check in report["checks"]}
        assert status["services.jupyter"] == "OK"
        assert status["services.firewall"] == "OK"
        assert status["software.min_versions"] == "OK"
        # Docker is expected (and answers) on the GPU servers only
        assert status["services.docker"] == ("OK" if host in GPU_SERVERS else "SKIP"), host
    lines = summary_lines(run)
    assert sorted(lines) == FLEET
    for line in lines.values():
        assert line.split()[1] in ("OK", "WARN"), line
    summary = json.loads((report_dir / "summary.json").read_text())
    assert sorted(h["host"] for h in summary["hosts"]) == FLEET
    assert summary["level"] == 1


FAULTS = {
    # host, the units stopped (and started again after the test), the checks that must fail (and no other)
    "docker stopped on a GPU server": ("fleet-2", "docker.socket docker.service", ["services.docker"]),
    "jupyter stopped on a CPU host": (
        "fleet-5",
        "jupyter.service",
        ["services.jupyter", "services.jupyter_auth"],
    ),
}


@pytest.fixture
def fault(request):
    name, units, checks = FAULTS[request.param]
    faulty = other_host(name)
    with faulty.sudo():
        stop = faulty.run(f"systemctl stop {units}")
        assert stop.rc == 0, stop.stderr
    yield name, checks
    with faulty.sudo():
        start = faulty.run(f"systemctl start {units}")
        assert start.rc == 0, start.stderr
    assert all(faulty.service(unit.split(".")[0]).is_running for unit in units.split())


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS), indirect=True)
def test_a_fault_on_one_host_fails_that_host_only(run_playbook, tmp_path, fault):
    faulty, checks = fault
    run, report_dir = run_verify(run_playbook, tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stats[faulty]["failures"] == 1
    for host in FLEET:
        if host != faulty:
            assert run.stats[host]["failures"] == 0, host
            assert run.stats[host]["unreachable"] == 0, host
    # the failure names the checks, and so does the summary's line for that host (and only that line)
    assert any(all(check in message for check in checks) for message in run.messages), run.messages
    lines = summary_lines(run)
    assert sorted(lines) == FLEET
    assert lines[faulty].split()[1] == "FAIL"
    assert all(check in lines[faulty] for check in checks), lines[faulty]
    for host in FLEET:
        if host != faulty:
            assert lines[host].split()[1] in ("OK", "WARN"), lines[host]
            assert not any(check in lines[host] for check in checks), lines[host]
    # every host's report was fetched, the faulty host's with the failing check
    assert sorted(p.stem for p in report_dir.glob("fleet-*.json")) == FLEET
    report = json.loads((report_dir / f"{faulty}.json").read_text())
    assert report["summary"]["status"] == "FAIL"
    failing = [c["id"] for c in report["checks"] if c["status"] == "FAIL"]
    assert failing == checks
