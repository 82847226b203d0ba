"""`llmlab models resolve` and `missing`: the lists the model_distribution role acts on."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from llmlab.cli import main
from llmlab.models import layout
from llmlab.models.distribute import resolve
from llmlab.models.store import ModelStore

from .helpers import make_model_dir


def test_resolve_names_the_commit_snapshot_and_transfer_names(cli, store: ModelStore, model_dir: Path):
    commit = cli("import", str(model_dir), "--name", "org/m", "--revision", "v1")[1]["commit"]
    last_used = store._meta("org/m", "last_used").stat().st_mtime_ns

    code, doc = cli("resolve", "org/m@v1", f"org/m@{commit}", "org/absent", "org/m@v2")

    assert code == 0 and doc["schema"] == "llmlab.models.resolve/1" and doc["ok"] is True
    entry = {
        "name": "org/m",
        "commit": commit,
        "path": str(store.snapshot_dir("org/m", commit)),
        "tarball": f"org--m--{commit}.tar",
        "directory": f"org--m--{commit}",
    }
    assert doc["models"] == [{"spec": "org/m@v1", **entry}, {"spec": f"org/m@{commit}", **entry}]
    assert doc["missing"] == ["org/absent", "org/m@v2"]  # check mode: the seed store is not filled yet
    assert store._meta("org/m", "last_used").stat().st_mtime_ns == last_used  # planning is not a use


def test_the_tarball_name_is_what_export_and_import_agree_on(cli, store: ModelStore, model_dir, tmp_path):
    cli("import", str(model_dir), "--name", "org/m")
    plan = cli("resolve", "org/m")[1]
    tarball = tmp_path / plan["models"][0]["tarball"]
    assert cli("export", "org/m", "-o", str(tarball))[0] == 0
    other = ModelStore(tmp_path / "other", group=None)
    code = main(["models", "import", str(tarball), "--json", "--quiet", "--store", str(other.root)])
    assert code == 0 and other.manifest(f"org/m@{plan['models'][0]['commit']}")


def test_missing_keeps_the_entries_whose_commit_the_store_lacks(
    cli, store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    seed = ModelStore(tmp_path / "seed", group=None)
    for number, name in enumerate(("org/a", "org/b")):
        seed.add_local(make_model_dir(tmp_path / name, seed=number), name, None, "copy", False)
    plan = resolve(seed, ["org/a", "org/b"])
    # The host holds org/a already (the same files give the same commit): only org/b is missing.
    store.add_local(tmp_path / "org/a", "org/a", None, "copy", False)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(plan)))

    code, doc = cli("missing", "--from", "-")

    assert code == 0 and doc["schema"] == "llmlab.models.missing/1" and doc["ok"] is True
    assert doc["models"] == [m for m in plan["models"] if m["name"] == "org/b"]


def test_missing_reads_a_file_and_refuses_an_entry_without_a_commit(cli, store, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"models": [{"name": "org/a", "commit": "c" * 40}]}))
    assert cli("missing", "--from", str(plan))[1]["models"] == [{"name": "org/a", "commit": "c" * 40}]

    plan.write_text(json.dumps({"models": [{"name": "org/a", "commit": "main"}]}))
    code = main(["models", "missing", "--from", str(plan), "--json", "--store", str(store.root)])
    assert code == 2 and "models[0]" in capsys.readouterr().err


def test_transfer_names_are_one_file_name():
    assert layout.transfer_name("org/m", "a" * 40) == f"org--m--{'a' * 40}"
    with pytest.raises(ValueError, match="40-hex"):
        layout.transfer_name("org/m", "main")
