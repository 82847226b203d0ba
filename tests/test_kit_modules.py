"""The kit's Ansible modules (playbooks/library): the decisions they make, without a host.

molecule/base (holds, every role's contract) runs them on real hosts; these check the logic at its edges.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# As Ansible ships them to the host: module_utils under ansible.module_utils.
files = load("ansible.module_utils.llmlab_files", PLAYBOOKS / "module_utils/llmlab_files.py")
holds = load("package_holds", PLAYBOOKS / "library/package_holds.py")


def test_only_installed_packages_have_selections():
    lines = [
        "jq\thold\tinstalled",
        "curl\tinstall\tinstalled",
        "vim\tdeinstall\tconfig-files",
        "nano\tinstall\tnot-installed",
    ]
    out = "\n".join(lines) + "\n"
    assert holds.installed_selections(out) == {"jq": "hold", "curl": "install"}


def test_a_record_lists_its_packages_without_the_header():
    text = holds.RECORD_HEADER.format(owner="docker") + "containerd\ndocker.io\n\n"
    assert holds.recorded(text) == {"containerd", "docker.io"}


def test_listed_installed_packages_are_held_and_dropped_ones_released():
    selections = {"jq": "install", "git-lfs": "hold", "tmux": "hold", "rsync": "install"}
    wanted = {"jq", "git-lfs", "not-installed"}
    before = {"git-lfs", "tmux", "rsync", "gone"}
    # jq is held; git-lfs is already; tmux was held and is dropped; rsync was recorded but is not held.
    assert holds.plan(wanted, before, selections) == {"jq": "hold", "tmux": "install"}


def test_nothing_changes_when_the_holds_are_in_place():
    assert holds.plan({"jq"}, {"jq"}, {"jq": "hold"}) == {}


class FakeModule:
    """What write_file asks of AnsibleModule: check mode, atomic_move and the attribute helpers."""

    def __init__(self, check_mode: bool) -> None:
        self.check_mode = check_mode

    def atomic_move(self, src: str, dest: str) -> None:
        Path(src).replace(dest)

    def load_file_common_arguments(self, params: dict, path: str) -> dict:
        return {**params, "path": path}

    def set_fs_attributes_if_different(self, attributes: dict, changed: bool) -> bool:
        return changed


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_file_is_written_once_and_not_in_check_mode(tmp_path, check_mode):
    path = tmp_path / "config.d" / "docker.yaml"
    module = FakeModule(check_mode)
    assert files.write_file(module, str(path), "a: 1\n") is True
    assert path.exists() is not check_mode
    if not check_mode:
        assert path.read_text() == "a: 1\n"
        assert files.write_file(module, str(path), "a: 1\n") is False
        assert files.write_file(module, str(path), "a: 2\n") is True
        assert path.read_text() == "a: 2\n"
        assert [p.name for p in path.parent.iterdir()] == ["docker.yaml"]  # no temporary file left
