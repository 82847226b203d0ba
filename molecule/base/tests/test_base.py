"""Behaviour of the base role on a converged host (testinfra, run by `molecule verify`)."""

import pytest

KEYS = {  # first fields of the keys molecule.yml gives each user
    "alice": "AAAAC3NzaC1lZDI1NTE5AAAAIHtaknH1x29ZffaR4NeH0X",
    "bob": "AAAAC3NzaC1lZDI1NTE5AAAAII/d5at5fQAnhlCr2W3aC0",
    "carol": "AAAAC3NzaC1lZDI1NTE5AAAAIL7By5P2ZzMiO0PJC37Be",
}


@pytest.mark.parametrize("name", ["alice", "bob", "carol"])
def test_lab_users_exist_in_the_lab_group_with_their_keys(host, name):
    user = host.user(name)
    assert user.exists
    assert "llmlab" in user.groups
    keys = host.file(f"/home/{name}/.ssh/authorized_keys")
    assert keys.user == name
    assert keys.mode == 0o600
    assert KEYS[name] in keys.content_string


def test_user_shell_and_extra_groups_are_applied(host):
    bob = host.user("bob")
    assert bob.shell == "/bin/sh"
    assert "users" in bob.groups


def test_exclusive_keys_remove_keys_not_in_the_list(host):
    keys = host.file("/home/carol/.ssh/authorized_keys").content_string
    assert "stray@elsewhere" not in keys
    assert len(keys.strip().splitlines()) == 1


def test_sudo_works_for_sudo_users(host):
    result = host.run("su - alice -c 'sudo -n id -u'")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "0"


@pytest.mark.parametrize("name", ["bob", "carol"])
def test_sudo_is_refused_for_other_users(host, name):
    result = host.run(f"su - {name} -c 'sudo -n true'")
    assert result.rc != 0
    assert not host.file(f"/etc/sudoers.d/llmlab-{name}").exists


def test_sudoers_drop_ins_pass_visudo(host):
    assert host.run("visudo -c").rc == 0


def test_limits_are_in_effect_in_a_new_login_session(host):
    # molecule.yml sets nofile 16384 and memlock 4096, below the sandbox's hard limits.
    assert host.run("su - alice -c 'ulimit -n'").stdout.strip() == "16384"
    assert host.run("su - alice -c 'ulimit -l'").stdout.strip() == "4096"
    assert host.run("su - alice -c 'ulimit -Hn'").stdout.strip() == "16384"


def test_kernel_settings_are_written_as_a_drop_in(host):
    conf = host.file("/etc/sysctl.d/90-llmlab.conf")
    assert conf.contains("^vm.max_map_count = 1048576$")
    assert conf.contains("^fs.inotify.max_user_watches = 524288$")


def test_time_sync_service_is_running_and_enabled(host):
    chrony = host.service("chrony")
    assert chrony.is_running
    assert chrony.is_enabled
    # In a container the clock is the host's: chrony must not try to set it.
    assert host.file("/etc/default/chrony").contains('^DAEMON_OPTS="-F 1 -x"$')
    assert host.file("/etc/chrony/chrony.conf").contains("^pool 2.debian.pool.ntp.org iburst$")


def test_held_packages_are_held(host):
    held = host.run("apt-mark showhold").stdout.split()
    assert "jq" in held
    assert "git-lfs" in held


def test_packages_dropped_from_the_list_are_released(host):
    # prepare.yml held tmux and recorded it as held by the role; base_held_packages no longer lists it.
    assert "tmux" not in host.run("apt-mark showhold").stdout.split()
    assert host.file("/etc/llmlab/held-packages.d/base").content_string.split("\n")[1:3] == ["git-lfs", "jq"]


def test_unattended_upgrades_skip_held_packages(host):
    conf = host.file("/etc/apt/apt.conf.d/51llmlab-holds-base").content_string
    assert '"^jq$";' in conf
    assert '"^git-lfs$";' in conf
    # apt itself must parse the file and see the entries.
    dump = host.run("apt-config dump Unattended-Upgrade::Package-Blacklist").stdout
    assert '"^jq$";' in dump


def test_essential_packages_are_installed(host):
    for name in ("build-essential", "git", "git-lfs", "tmux", "jq", "rsync", "python3-venv", "zsh"):
        assert host.package(name).is_installed, name


def test_other_roles_hold_packages_under_their_own_name(host):
    # converge.yml holds rsync for "gpu_demo" after base held its own list: neither releases the other's.
    held = host.run("apt-mark showhold").stdout.split()
    assert {"rsync", "jq", "git-lfs"} <= set(held)
    assert "rsync" in host.file("/etc/llmlab/held-packages.d/gpu_demo").content_string.split()
    assert '"^rsync$";' in host.file("/etc/apt/apt.conf.d/51llmlab-holds-gpu_demo").content_string
