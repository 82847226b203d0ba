"""Bad input fails before anything changes, with a message that names the bad value.

Each case re-runs converge.yml against the already converged hosts with one bad variable as an extra
var (molecule/conftest.py runs it through the JSON callback, so the message is read exactly).
"""

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
    "a variable with the role's prefix that it does not declare (a typo)": (
        {"base_lab_gruop": "ml"},
        "base_lab_gruop: not a variable of the base role; did you mean base_lab_group?",
    ),
    "unknown time sync backend": (
        {"base_timesync_backend": "ntpd"},
        "base_timesync_backend must be one of: chrony, systemd-timesyncd, got: ntpd",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_fails_early_and_names_the_value(run_playbook, case):
    extra_vars, expected = CASES[case]
    run = run_playbook(CONVERGE, extra_vars=extra_vars, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert any(expected in msg for msg in run.messages), run.messages
    for host, stats in run.stats.items():
        assert stats["failures"] == 1, host
        assert stats["changed"] == 0, f"{host} changed something before failing on {case}"
