"""Runs against the converged hosts through ansible-playbook and the JSON callback (molecule/conftest.py):
bad input fails before anything changes, naming the value; check mode changes nothing; the DCGM exporter's
repository (unreachable here) renders in check mode.
"""

import os
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parents[1]
LAB = f"{os.environ.get('MOLECULE_SCENARIO_NAME', 'tracking')}-debian12"

CASES = {
    "unknown backend": (
        "mlflow",
        {"mlflow_backend": "mysql"},
        "value of mlflow_backend must be one of: sqlite, postgresql, got: mysql",
    ),
    "auth on without a password": (
        "mlflow",
        {"mlflow_auth": True},
        "mlflow_auth is on and mlflow_admin_password is empty",
    ),
    "non-loopback address without auth": (
        "mlflow",
        {"mlflow_host": "0.0.0.0"},
        'mlflow_host: "0.0.0.0" is reachable from the network and mlflow_auth is off',
    ),
    "non-loopback address with auth, without TLS or opt-in": (
        "mlflow",
        {"mlflow_host": "0.0.0.0", "mlflow_auth": True, "mlflow_admin_password": "long-enough-password"},
        'mlflow_host: "0.0.0.0" is reachable from the network and no TLS is configured',
    ),
    "PostgreSQL without a password": (
        "mlflow",
        {"mlflow_backend": "postgresql"},
        "mlflow_postgresql_password is empty",
    ),
    "listen address without a port": (
        "monitoring",
        {"monitoring_node_exporter_listen_address": "0.0.0.0"},
        'monitoring_node_exporter_listen_address: "0.0.0.0" is not [host]:port',
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_fails_early_and_names_the_value(run_playbook, case, tmp_path):
    role, extra_vars, expected = CASES[case]
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"- hosts: all\n  become: true\n  roles: [{role}]\n")
    run = run_playbook(playbook, "--limit", LAB, extra_vars=extra_vars, timeout=300)
    assert run.returncode == 2, run.messages
    assert any(expected in m for m in run.messages), run.messages
    for host, stats in run.stats.items():
        assert stats["failures"] == 1, host
        assert stats["changed"] == 0, f"{host} changed something before failing on {case}"


@pytest.mark.timeout(1200)  # a whole converge in check mode; slow on a loaded machine
def test_check_mode_on_the_provisioned_hosts_changes_and_fails_nothing(run_playbook):
    run = run_playbook(SCENARIO / "converge.yml", "--check", "--diff", timeout=1100)
    assert run.returncode == 0, run.messages
    for host, stats in run.stats.items():
        assert stats["failures"] == 0, host
        assert stats["changed"] == 0, f"{host}: check mode would change {run.changed_tasks}"


def test_check_mode_renders_the_dcgm_repository(run_playbook, tmp_path):
    """NVIDIA's repository is unreachable here: check mode renders its source; the key is a local file."""
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: all\n  become: true\n  roles: [monitoring]\n")
    extra = {
        "monitoring_dcgm_exporter": True,
        "monitoring_dcgm_repo_key_url": "file:///usr/share/keyrings/debian-archive-keyring.gpg",
        "monitoring_prometheus_example_dir": "",
    }
    run = run_playbook(playbook, "--check", "--diff", "--limit", LAB, extra_vars=extra, timeout=300)
    assert run.returncode == 0, run.messages
    results = {
        t["task"]["name"].split(" : ")[-1]: r
        for play in run.report["plays"]
        for t in play["tasks"]
        for r in t["hosts"].values()
    }
    source = results["Add NVIDIA's CUDA repository for DCGM"]
    assert source["changed"]
    text = "".join(d.get("after", "") for d in source["diff"])
    assert "URIs: https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/" in text
    assert "Signed-By: /etc/apt/keyrings/cuda-archive-keyring.asc" in text
    assert results["Install DCGM and the DCGM exporter"].get("skipped")
