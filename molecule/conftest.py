"""Shared by every scenario's testinfra tests: run ansible-playbook against the scenario's hosts.

Runs go through the JSON callback, so tests read failure messages and per-host stats exactly instead of
grepping wrapped text. Used for bad-input cases (one bad --extra-vars, expect a named failure and no
change) and for check-mode runs on converged hosts.
"""

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROLES = Path(__file__).parents[1] / "roles"
PLAYBOOKS = Path(__file__).parents[1] / "playbooks"


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


@dataclass
class PlaybookRun:
    returncode: int
    report: dict
    stdout: str
    stderr: str

    @property
    def messages(self) -> list[str]:
        """Failure messages with their whitespace folded (Ansible wraps long `fail_msg`s)."""
        return [" ".join(msg.split()) for msg in failure_messages(self.report.get("plays", []))]

    @property
    def stats(self) -> dict[str, dict]:
        return self.report.get("stats", {})

    @property
    def changed_tasks(self) -> dict[str, list[str]]:
        """{host: the names of its tasks that reported changed}: what a check-mode run would change."""
        changed: dict[str, list[str]] = {}
        for play in self.report.get("plays", []):
            for task in play["tasks"]:
                for host, result in task["hosts"].items():
                    if result.get("changed"):
                        changed.setdefault(host, []).append(task["task"]["name"])
        return changed


def run_playbook(
    playbook: Path, *args: str, extra_vars: dict | None = None, timeout: int = 900
) -> PlaybookRun:
    """ansible-playbook PLAYBOOK against the scenario's inventory, with the JSON callback."""
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_ROLES_PATH": str(ROLES),
        "ANSIBLE_FILTER_PLUGINS": str(PLAYBOOKS / "filter_plugins"),
        "ANSIBLE_LIBRARY": str(PLAYBOOKS / "library"),
        "ANSIBLE_MODULE_UTILS": str(PLAYBOOKS / "module_utils"),
    }
    if extra_vars is not None:
        args = ("--extra-vars", json.dumps(extra_vars), *args)
    run = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON from ansible-playbook (exit {run.returncode}): {run.stderr[-2000:]}")
    return PlaybookRun(run.returncode, report, run.stdout, run.stderr)


@pytest.fixture(name="run_playbook", scope="session")
def run_playbook_fixture():
    return run_playbook
