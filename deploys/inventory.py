"""Read the playbooks' Ansible inventory with Ansible's own API and turn hosts into pyinfra targets.

Ansible parses the file (and its group_vars/host_vars), resolves the host pattern and templates the
connection variables, so `--limit` and variables mean exactly what they mean to `ansible-playbook`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PREFIX = "/opt/llmlab/env"

SSH_CONNECTIONS = frozenset(
    {"ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh", "ansible.builtin.paramiko_ssh"}
)
DOCKER_CONNECTIONS = frozenset({"community.docker.docker", "docker"})
LOCAL_CONNECTIONS = frozenset({"local", "ansible.builtin.local"})


_plugins_loaded = False


class DeployError(Exception):
    """Bad input or a failed precondition; the message names the bad value."""


@dataclass(frozen=True)
class Target:
    """One inventory host as pyinfra sees it."""

    name: str  # inventory_hostname
    pyinfra_name: str  # ssh: the inventory name; docker: @docker/<container>; local: @local
    connection: str  # ssh | docker | local
    prefix: str  # the lab environment: python_env_prefix (the python_env role's), else its default
    data: dict[str, Any] = field(default_factory=dict)  # pyinfra host data (connector + global args)
    # llmlab_verify_pass_codes, given to `llmlab verify --pass-codes` as the playbooks do; empty: llmlab's own
    # default. The verdict is then the report's summary.passed for both.
    verify_pass_codes: tuple[int, ...] = ()

    @property
    def container(self) -> str | None:
        return self.pyinfra_name.removeprefix("@docker/") if self.connection == "docker" else None


def _plain(value: Any) -> Any:
    """Ansible 2.19 returns tagged str/int subclasses; pyinfra gets plain values."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def load_targets(inventory: Path, pattern: str = "all") -> list[Target]:
    """The hosts of `inventory` that `pattern` (an Ansible host pattern, as for --limit) selects."""
    if not inventory.exists():
        raise DeployError(f"inventory {inventory}: no such file or directory")

    import ansible.constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    global _plugins_loaded
    if not _plugins_loaded:  # once per process (Ansible warns when the collection finder is set up twice)
        init_plugin_loader()
        _plugins_loaded = True
    C.INVENTORY_ANY_UNPARSED_IS_FAILED = True  # an unreadable file is an error, not an empty inventory
    loader = DataLoader()
    try:
        manager = InventoryManager(loader=loader, sources=[str(inventory)])
    except AnsibleError as exc:
        raise DeployError(f"inventory {inventory}: cannot be parsed: {exc.message}") from None
    hosts = manager.get_hosts(pattern)
    if not hosts:
        groups = ", ".join(sorted(g for g in manager.groups if g not in ("all", "ungrouped"))) or "none"
        known = ", ".join(h.name for h in manager.get_hosts("all")) or "none"
        raise DeployError(
            f"host pattern {pattern!r} matches no host in {inventory} (groups: {groups}; hosts: {known})"
        )
    variables = VariableManager(loader=loader, inventory=manager)

    targets: list[Target] = []
    for host in hosts:
        hostvars = variables.get_vars(host=host, include_hostvars=False)
        templar = Templar(loader=loader, variables=hostvars)

        def var(*names: str, _v: dict = hostvars, _t: Templar = templar) -> Any:
            for name in names:
                if name in _v and _v[name] is not None:
                    return _plain(_t.template(_v[name]))
            return None

        targets.append(_target(host.name, var))
    pyinfra_names: dict[str, str] = {}
    for t in targets:
        if t.pyinfra_name in pyinfra_names:
            raise DeployError(
                f"hosts {pyinfra_names[t.pyinfra_name]} and {t.name} both connect to {t.pyinfra_name}"
            )
        pyinfra_names[t.pyinfra_name] = t.name
    return targets


def _pass_codes(name: str, value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    try:
        if isinstance(value, list | tuple):
            return tuple(int(code) for code in value)
    except (TypeError, ValueError):
        pass
    raise DeployError(f"{name}: llmlab_verify_pass_codes {value!r} is not a list of exit codes")


def _target(name: str, var: Any) -> Target:
    connection = str(var("ansible_connection") or "ssh")
    prefix = str(var("python_env_prefix") or DEFAULT_PREFIX)
    pass_codes = _pass_codes(name, var("llmlab_verify_pass_codes"))
    data: dict[str, Any] = {}
    become = var("ansible_become")
    if become is not None:
        data["_sudo"] = _truthy(become)
    if user := var("ansible_become_user"):
        data["_sudo_user"] = user

    if connection in DOCKER_CONNECTIONS:
        # community.docker.docker's remote_addr: ansible_docker_host, else ansible_host, else the name.
        container = var("ansible_docker_host", "ansible_host") or name
        data.pop("_sudo", None)  # docker exec runs as the container's root user
        data.pop("_sudo_user", None)
        return Target(name, f"@docker/{container}", "docker", prefix, data, pass_codes)
    if connection in LOCAL_CONNECTIONS:
        return Target(name, "@local", "local", prefix, data, pass_codes)
    if connection in SSH_CONNECTIONS:
        data["ssh_hostname"] = str(var("ansible_host", "ansible_ssh_host") or name)
        user = var("ansible_user", "ansible_ssh_user")
        if user:
            data["ssh_user"] = str(user)
        port = var("ansible_port", "ansible_ssh_port")
        if port is not None:
            try:
                data["ssh_port"] = int(port)
            except ValueError:
                raise DeployError(f"{name}: ansible_port {port!r} is not a port number") from None
        if key := var("ansible_ssh_private_key_file", "ansible_private_key_file"):
            data["ssh_key"] = str(key)
        if password := var("ansible_password", "ansible_ssh_pass"):
            data["ssh_password"] = str(password)
        # The playbooks run with `become: true`; pyinfra does the same unless the login is root already
        # or the inventory says ansible_become: false.
        data.setdefault("_sudo", user != "root")
        return Target(name, name, "ssh", prefix, data, pass_codes)
    raise DeployError(
        f"{name}: ansible_connection {connection!r} is not supported here "
        f"(ssh, community.docker.docker or local)"
    )
