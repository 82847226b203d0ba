"""A role's variables have one source, meta/argument_specs.yml: its defaults and README table must agree."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("role_docs", ROOT / "scripts" / "role_docs.py")
role_docs = importlib.util.module_from_spec(spec)
sys.modules["role_docs"] = role_docs  # dataclasses look their module up there
spec.loader.exec_module(role_docs)


def test_every_role_agrees_with_its_argument_specs(capsys):
    assert role_docs.main(["--check"]) == 0, capsys.readouterr().err


@pytest.fixture
def role(tmp_path):
    """A copy of the model_store role that a test can break."""
    copy = tmp_path / "roles" / "model_store"
    shutil.copytree(ROOT / "roles" / "model_store", copy)
    return copy


def check(role_dir: Path, capsys) -> list[str]:
    code = role_docs.main(["--check", "--roles", str(role_dir.parent)])
    lines = capsys.readouterr().err.splitlines()
    assert code == (1 if lines else 0)
    return lines


def test_a_copy_of_a_role_is_clean(role, capsys):
    assert check(role, capsys) == []


def test_a_default_that_differs_is_named(role, capsys):
    defaults = role / "defaults/main.yml"
    defaults.write_text(defaults.read_text().replace('model_store_mode: "2775"', 'model_store_mode: "2770"'))
    assert check(role, capsys) == [
        "model_store: model_store_mode defaults to '2775' in argument_specs but '2770' in defaults/main.yml"
    ]


def test_a_variable_documented_nowhere_is_named(role, capsys):
    defaults = role / "defaults/main.yml"
    defaults.write_text(defaults.read_text() + "model_store_quota: 100\n")
    assert check(role, capsys) == [
        "model_store: model_store_quota is in defaults/main.yml but not in meta/argument_specs.yml"
    ]


def test_a_stale_table_is_named_and_regenerating_fixes_it(role, capsys):
    specs = role / "meta/argument_specs.yml"
    specs.write_text(specs.read_text().replace("Absolute path of the store.", "Where the models live."))
    assert check(role, capsys) == [
        "model_store: README.md's variable table is stale; run scripts/role_docs.py"
    ]
    assert role_docs.main(["--roles", str(role.parent)]) == 0
    assert "| `model_store_path` | `/models` | Where the models live. |" in (role / "README.md").read_text()
    assert check(role, capsys) == []
