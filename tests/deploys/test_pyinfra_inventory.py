"""deploys' input: the playbooks' inventory read by Ansible and mapped to pyinfra targets, the model
manifest checked by llmlab's schema. No Docker needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deploys_helpers import REPO

from deploys.inventory import DeployError, load_targets
from deploys.ops import check_manifest

EXAMPLE = REPO / "inventory" / "example" / "hosts.yml"


def test_example_inventory_maps_as_ansible_inventory_reads_it() -> None:
    """Every host of the documented example inventory, against `ansible-inventory --list` (the CLI)."""
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(EXAMPLE), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]
    targets = load_targets(EXAMPLE, "all")
    assert sorted(t.name for t in targets) == sorted(hostvars)
    for t in targets:
        hv = hostvars[t.name]
        assert t.connection == "ssh" and t.pyinfra_name == t.name
        assert t.data["ssh_hostname"] == hv.get("ansible_host", t.name)
        assert t.data.get("ssh_user") == hv.get("ansible_user")
        assert t.data["_sudo"] is (hv.get("ansible_user") != "root")  # the playbooks' become: true


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "lab.yml").write_text(
        "domain: lab.internal\npython_env_prefix: /srv/env\n"
        'ansible_host: "{{ inventory_hostname }}.{{ domain }}"\n',
        encoding="utf-8",
    )
    (tmp_path / "hosts.yml").write_text(
        """all:
  children:
    lab:
      children:
        gpu_servers:
          hosts:
            gpu01:
            gpu02:
      hosts:
        gpu01:
          ansible_user: ops
          ansible_port: 2222
          ansible_ssh_private_key_file: /keys/ops
          llmlab_verify_pass_codes: [0]
        gpu02:
          ansible_user: root
          python_env_prefix: /opt/other
        box:
          ansible_connection: community.docker.docker
          ansible_host: box-container
          llmlab_prefix: /opt/ignored
        here:
          ansible_connection: local
          ansible_become: false
    odd:
      hosts:
        win01:
          ansible_connection: winrm
""",
        encoding="utf-8",
    )
    return tmp_path / "hosts.yml"


def test_connection_variables_map_to_pyinfra_connectors(inventory: Path) -> None:
    targets = {t.name: t for t in load_targets(inventory, "lab")}
    gpu01, gpu02, box, here = targets["gpu01"], targets["gpu02"], targets["box"], targets["here"]
    # group_vars are read and templated, as for the playbooks
    assert gpu01.data == {
        "ssh_hostname": "gpu01.lab.internal",
        "ssh_user": "ops",
        "ssh_port": 2222,
        "ssh_key": "/keys/ops",
        "_sudo": True,
    }
    assert type(gpu01.data["ssh_port"]) is int and type(gpu01.data["ssh_hostname"]) is str
    assert gpu01.prefix == "/srv/env"  # python_env_prefix from group_vars
    assert gpu02.data["_sudo"] is False and gpu02.prefix == "/opt/other"  # root needs no sudo
    assert box.prefix == "/srv/env"  # python_env owns the prefix; the llmlab role has no llmlab_prefix
    assert gpu01.verify_pass_codes == (0,) and gpu02.verify_pass_codes == ()  # (): llmlab's default
    assert (box.connection, box.pyinfra_name, box.container) == (
        "docker",
        "@docker/box-container",
        "box-container",
    )
    assert box.data == {}
    assert (here.pyinfra_name, here.data) == ("@local", {"_sudo": False})


def test_host_patterns_mean_what_they_mean_to_ansible(inventory: Path) -> None:
    assert [t.name for t in load_targets(inventory, "lab:!gpu_servers")] == ["box", "here"]
    assert [t.name for t in load_targets(inventory, "lab:&gpu_servers")] == ["gpu01", "gpu02"]
    assert [t.name for t in load_targets(inventory, "gpu0*")] == ["gpu01", "gpu02"]
    assert [t.name for t in load_targets(inventory, "box,here")] == ["box", "here"]


def test_bad_input_names_the_problem(inventory: Path, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"win01: ansible_connection 'winrm' is not supported"):
        load_targets(inventory, "odd")
    with pytest.raises(
        DeployError, match=r"host pattern 'nosuch\*' matches no host in .*groups: gpu_servers, lab, odd"
    ):
        load_targets(inventory, "nosuch*")
    with pytest.raises(DeployError, match=r"inventory .*missing\.yml: no such file"):
        load_targets(tmp_path / "missing.yml")
    odd_codes = tmp_path / "codes.yml"
    odd_codes.write_text("all:\n  hosts:\n    h:\n      llmlab_verify_pass_codes: warn\n", encoding="utf-8")
    with pytest.raises(DeployError, match=r"h: llmlab_verify_pass_codes 'warn' is not a list"):
        load_targets(odd_codes)
    broken = tmp_path / "broken.yml"
    broken.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(DeployError, match=r"inventory .*broken\.yml: cannot be parsed"):
        load_targets(broken)


def test_a_manifest_llmlab_refuses_is_named_before_any_host_is_touched(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: lab/x\n    pth: /srv/x\n", encoding="utf-8")
    with pytest.raises(DeployError, match=r"bad\.yaml: models\.0\.pth: unknown key"):
        check_manifest(bad)
    with pytest.raises(DeployError, match=r"manifest .*absent\.yaml: no such file"):
        check_manifest(tmp_path / "absent.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  - name: lab/x\n    path: /srv/x\n    pin: true\n", encoding="utf-8")
    check_manifest(good)
