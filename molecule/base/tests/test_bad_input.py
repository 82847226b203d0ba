"""Bad input fails before anything changes, with a message that names the bad value.

Each case re-runs converge.yml against the already converged hosts with one bad variable as an extra
var, through the JSON callback so the failure message is read exactly, not grepped from wrapped text.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

CONVERGE = Path(__file__).parents[1] / "converge.yml"

CASES = {
    "user without a name": (
        {"base_users": [{"shell": "/bin/bash"}]},
        "missing required arguments: name",
    ),
    "user name that is not a login name": (
        {"base_users": [{"name": "Mallory Smith"}]},
        'invalid or missing name "Mallory Smith"',
    ),
    "shell that is not an absolute path": (
        {"base_users": [{"name": "mallory", "shell": "bash"}]},
        'shell "bash" is not an absolute path',
    ),
    "shell that the host does not offer": (
        {"base_users": [{"name": "mallory", "shell": "/usr/bin/fish"}]},
        '"/usr/bin/fish", is not listed in /etc/shells',
    ),
    "sysctl value that is not a number": (
        {"base_sysctl": {"vm.swappiness": "lots"}},
        "base_sysctl['vm.swappiness']: \"lots\" is not a number",
    ),
    "limit that is neither a number nor unlimited": (
        {"base_limits_nofile": "many"},
        'base_limits_nofile: "many" is not a number or "unlimited"',
    ),
    "unknown time sync backend": (
        {"base_timesync_backend": "ntpd"},
        "base_timesync_backend must be one of: chrony, systemd-timesyncd, got: ntpd",
    ),
}


def failure_messages(node) -> list[str]:
    """Every `msg` of a failed result in the JSON callback's output, loop items included."""
    found = []
    if isinstance(node, dict):
        if node.get("failed") and isinstance(node.get("msg"), str):
            found.append(node["msg"])
        for value in node.values():
            found.extend(failure_messages(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(failure_messages(value))
    return found


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_fails_early_and_names_the_value(case):
    extra_vars, expected = CASES[case]
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
    run = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(CONVERGE),
            "--extra-vars",
            json.dumps(extra_vars),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(run.stdout)
    messages = failure_messages(report["plays"])
    assert any(expected in " ".join(msg.split()) for msg in messages), messages
    for host, stats in report["stats"].items():
        assert stats["failures"] == 1, host
        assert stats["changed"] == 0, f"{host} changed something before failing on {case}"
