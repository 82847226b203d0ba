"""SSH as a real inventory meets it: every step of this scenario after prepare connects over SSH
(molecule.yml), with the run's own key, through the container's sshd and the base role's drop-in.

The tests connect from the controller as the inventory does (same key, same ProxyCommand) with ssh itself,
never reusing a master connection, so each one is a fresh login that sshd accepts or refuses.
"""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

KEY = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ssh" / "id_ed25519"
CONTAINER = "hub-debian12"
DROP_IN = "/etc/ssh/sshd_config.d/00-llmlab.conf"
BASE_ONLY = "- hosts: all\n  become: true\n  roles: [base]\n"


def ssh(user: str, *command: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    argv = [
        "ssh",
        "-i", str(KEY),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", f"ProxyCommand=docker exec -i {CONTAINER} nc 127.0.0.1 22",
        *options,
        f"{user}@{CONTAINER}",
        *command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_the_tests_themselves_reach_the_host_over_ssh(host):
    # sshd sets SSH_CONNECTION in every session it opens ("client port server port").
    assert host.check_output("echo $SSH_CONNECTION").split()[2:] == ["127.0.0.1", "22"]


def test_a_lab_user_logs_in_with_a_key(host):
    run = ssh("alice", "id", "-un")
    assert (run.returncode, run.stdout.strip()) == (0, "alice"), run.stderr


def test_root_logs_in_with_a_key_only(host):
    assert ssh("root", "true").returncode == 0
    with host.sudo():
        effective = host.check_output("sshd -T").splitlines()
    assert "permitrootlogin without-password" in effective  # prohibit-password, by its old name


def test_a_password_login_is_refused(host):
    # alice has a password (the hub's PAM login uses it); sshd must not even offer to take it.
    no_key = ("-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive")
    run = ssh("alice", "true", options=no_key)
    assert run.returncode == 255
    assert "Permission denied (publickey)" in run.stderr, run.stderr


def test_an_account_outside_the_allowed_groups_is_refused_despite_its_key(host):
    run = ssh("outsider", "true")
    assert run.returncode == 255
    assert "Permission denied" in run.stderr, run.stderr
    with host.sudo():
        log = host.check_output("journalctl -u ssh --no-pager -n 200")
    refusal = "not allowed because none of user's groups are listed in AllowGroups"
    assert f"User outsider from 127.0.0.1 {refusal}" in log


def test_the_drop_in_allows_the_lab_admin_and_connecting_groups(host):
    with host.sudo():
        drop_in = host.file(DROP_IN)
        assert drop_in.user == "root" and drop_in.mode == 0o644
        assert "AllowGroups llmlab sudo root" in drop_in.content_string.splitlines()
        effective = host.check_output("sshd -T").splitlines()
    assert "passwordauthentication no" in effective
    assert "kbdinteractiveauthentication no" in effective


def test_sshd_t_guards_a_broken_drop_in(host, run_playbook, tmp_path):
    with host.sudo():
        before = hashlib.sha256(host.file(DROP_IN).content).hexdigest()
    playbook = tmp_path / "base.yml"
    playbook.write_text(BASE_ONLY, encoding="utf-8")
    broken = {"base_sshd_extra_config": {"MaxAuthTries": "lots"}}
    run = run_playbook(playbook, extra_vars=broken, timeout=600)
    assert run.returncode != 0
    assert any("failed to validate" in message for message in run.messages), run.messages
    assert run.changed_tasks == {}  # nothing changed, so nothing reloaded
    with host.sudo():
        assert hashlib.sha256(host.file(DROP_IN).content).hexdigest() == before
    # The server never saw the broken file: a new login still works.
    assert ssh("alice", "true").returncode == 0


# ops (a lab user with sudo and the run's key) connects; ControlPersist keeps one SSH session open across
# tasks. First play, the control: ops joins a group with a plain user task, and the same session does not see
# it (groups are read at login), so the second play's check could fail. Second play: the base role adds ops
# to another new group, resets the connection (it is the connecting account), and a task after the role, as
# ops without become, writes into a directory only that group may write to. base_sshd: false keeps the
# drop-in (it names the connecting account's group) as root's converge left it.
RESET_PLAYBOOK = """
- name: Control, a group joined without a reset
  hosts: all
  become: true
  vars: {ansible_user: ops}
  tasks:
    - ansible.builtin.group: {name: hub-reset-control, state: absent}
    - ansible.builtin.group: {name: hub-reset-control}
    - ansible.builtin.command: id -Gn
      become: false
    - ansible.builtin.user: {name: ops, groups: [hub-reset-control], append: true}
    - ansible.builtin.command: id -Gn
      become: false
      register: control
    - ansible.builtin.debug: {msg: "control: {{ control.stdout }}"}
    - ansible.builtin.group: {name: hub-reset-control, state: absent}

- name: The base role adds the connecting account to a group
  hosts: all
  become: true
  vars: {ansible_user: ops}
  pre_tasks:
    - ansible.builtin.meta: reset_connection
    - ansible.builtin.group: {name: hub-reset-test, state: absent}
    - ansible.builtin.group: {name: hub-reset-test}
    - ansible.builtin.file: {path: /srv/hub-reset-test, state: directory, owner: root, group: hub-reset-test,
                             mode: "0770"}
    - ansible.builtin.command: id -Gn
      become: false
      register: before
  roles:
    - role: base
  tasks:
    - ansible.builtin.command: id -Gn
      become: false
      register: after
    - ansible.builtin.copy:
        dest: /srv/hub-reset-test/written-by-ops
        content: "after the reset\\n"
        mode: "0644"
      become: false
    - ansible.builtin.debug: {msg: "before: {{ before.stdout }}; after: {{ after.stdout }}"}
"""


def messages_starting(run, prefix: str) -> list[str]:
    """The debug tasks' messages that start with PREFIX."""
    return [
        result["msg"]
        for play in run.report["plays"]
        for task in play["tasks"]
        for result in task["hosts"].values()
        if isinstance(result.get("msg"), str) and result["msg"].startswith(prefix)
    ]


@pytest.mark.timeout(1000)
def test_the_base_role_reconnects_after_the_connecting_account_joins_a_group(host, run_playbook, tmp_path):
    playbook = tmp_path / "reset.yml"
    playbook.write_text(RESET_PLAYBOOK, encoding="utf-8")
    ops = {
        "name": "ops",
        "sudo": True,
        "groups": ["hub-reset-test"],
        "ssh_keys": [KEY.with_suffix(".pub").read_text()],
    }
    run = run_playbook(playbook, extra_vars={"base_users": [ops], "base_sshd": False}, timeout=900)
    assert run.returncode == 0, (run.messages, run.stderr[-2000:])
    (control,) = messages_starting(run, "control: ")
    assert "hub-reset-control" not in control.split()  # the open session kept its old groups
    (seen,) = messages_starting(run, "before: ")
    before, after = seen.split("; ")
    assert "hub-reset-test" not in before.split()
    assert "hub-reset-test" in after.split()
    assert any("Create the lab users" in name for name in run.changed_tasks[CONTAINER])
    with host.sudo():
        written = host.file("/srv/hub-reset-test/written-by-ops")
        assert written.exists and written.user == "ops"
        assert host.run("rm -rf /srv/hub-reset-test && groupdel hub-reset-test").rc == 0
