"""gc, du, sync, and the CLI's JSON contract."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import yaml

from llmlab.cli import main
from llmlab.models.gc import collect, usage
from llmlab.models.store import ModelStore

from .helpers import make_model_dir


def _age(store: ModelStore, name: str, days: float) -> None:
    marker = store.repo_dir(name) / ".llmlab" / "last_used"
    marker.touch()
    then = time.time() - days * 86400
    os.utime(marker, (then, then))


def test_gc_removes_partial_work_and_orphans_but_not_live_work(store: ModelStore, model_dir: Path) -> None:
    added = store.add_local(model_dir, "org/m")
    repo = store.repo_dir("org/m")
    host = socket.gethostname()
    dead = repo / ".incoming" / f"blob-{host}-999999-deadbeef"  # pid 999999 is not running
    dead.write_bytes(b"x" * 1000)
    live = repo / ".incoming" / f"blob-{host}-{os.getpid()}-cafef00d"
    live.write_bytes(b"y" * 10)
    other_host = repo / ".incoming" / "snapshot-otherhost-12-abcdef01"
    other_host.mkdir()
    partial_snapshot = repo / "snapshots" / ("e" * 40)
    partial_snapshot.mkdir()
    (repo / "refs" / "stale").write_text("e" * 40)
    orphan = repo / "blobs" / ("0" * 64)
    orphan.write_bytes(b"z" * 500)
    before = usage(store)
    assert (before.partial_bytes, before.orphan_bytes) == (1010, 500)

    dry = collect(store, dry_run=True)
    assert dry.changed and dead.exists() and orphan.exists()

    report = collect(store)
    assert sorted(report.partial) == sorted([str(dead), str(partial_snapshot)])
    assert report.orphan_blobs == [str(orphan)]
    assert live.exists() and other_host.exists()  # a running writer, and another host's fresh work
    assert not dead.exists() and not orphan.exists() and not (repo / "refs" / "stale").exists()
    assert store.verify("org/m").ok and store.resolve("org/m") == added.path
    assert collect(store, partial_age=0).partial == [str(live), str(other_host)]  # past --partial-age
    assert not collect(store).changed


def test_gc_evicts_least_recently_used_unpinned_models(store: ModelStore, tmp_path: Path) -> None:
    for i, name in enumerate(("org/old", "org/mid", "org/new", "org/pinned-old")):
        store.add_local(make_model_dir(tmp_path / name, seed=i, weight_bytes=100_000), name)
    _age(store, "org/old", 30)
    _age(store, "org/mid", 10)
    _age(store, "org/new", 1)
    _age(store, "org/pinned-old", 60)
    store.set_pinned("org/pinned-old", True)
    one_model = store.list_models()[0].size

    assert collect(store, max_age=20 * 86400).evicted == ["org/old"]
    report = collect(store, max_size=int(2.5 * one_model))
    assert report.evicted == ["org/mid"] and report.bytes_after <= 2.5 * one_model
    assert sorted(m.name for m in store.list_models()) == ["org/new", "org/pinned-old"]
    assert collect(store, max_size=1).evicted == ["org/new"]  # pinned models stay even over the limit
    assert [m.name for m in store.list_models()] == ["org/pinned-old"]


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_sync_is_idempotent_repairs_damage_and_prunes(store: ModelStore, tmp_path: Path) -> None:
    from llmlab.models.sync import load_sync_manifest, sync

    a = make_model_dir(tmp_path / "a", seed=1)
    b = make_model_dir(tmp_path / "b", seed=2)
    store.add_local(make_model_dir(tmp_path / "stray", seed=3), "org/stray")
    manifest = _write(
        tmp_path / "models.yaml",
        {
            "prune": True,
            "models": [{"name": "org/a", "path": str(a), "pin": True}, {"name": "org/b", "path": str(b)}],
        },
    )
    first = sync(store, load_sync_manifest(manifest), progress=False)
    assert first.ok and first.changed
    expected = {("org/a", "added"), ("org/a", "pinned"), ("org/b", "added"), ("org/stray", "removed")}
    assert {(x.name, x.action) for x in first.actions} == expected
    second = sync(store, load_sync_manifest(manifest), progress=False)
    assert second.ok and not second.changed
    assert {(x.name, x.action) for x in second.actions} == {("org/a", "unchanged"), ("org/b", "unchanged")}

    weights = (store.resolve("org/b") / "model.safetensors").resolve()
    os.chmod(weights, 0o644)
    weights.write_bytes(b"\0" * weights.stat().st_size)
    third = sync(store, load_sync_manifest(manifest), progress=False)
    repaired = [x for x in third.actions if x.name == "org/b"]
    assert (
        third.changed
        and repaired[0].action == "repaired"
        and "corrupt: model.safetensors" in repaired[0].detail
    )
    assert store.verify("org/b").ok


def test_sync_reports_failures_and_bad_manifests(store: ModelStore, tmp_path: Path, capsys) -> None:
    bad_key = _write(tmp_path / "bad.yaml", {"models": [{"name": "org/a", "paht": "/x"}]})
    assert main(["models", "sync", str(bad_key), "--store", str(store.root), "--json"]) == 2
    assert "models.0.paht: unknown key" in capsys.readouterr().err
    missing = _write(
        tmp_path / "missing.yaml", {"models": [{"name": "org/a", "path": str(tmp_path / "nope")}]}
    )
    assert main(["models", "sync", str(missing), "--store", str(store.root), "--json", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert '"action": "failed"' in out and "no such file or directory" in out


def test_every_verb_speaks_versioned_json(cli, model_dir: Path, tmp_path: Path) -> None:
    code, doc = cli("import", str(model_dir), "--name", "org/m")
    assert (code, doc["schema"], doc["ok"], doc["changed"]) == (0, "llmlab.models.import/1", True, True)
    commit = doc["commit"]
    code, doc = cli("list")
    assert code == 0 and [(m["name"], m["commit"], m["refs"]) for m in doc["models"]] == [
        ("org/m", commit, ["main"])
    ]
    code, doc = cli("du")
    assert (code, doc["schema"], doc["models"]) == (0, "llmlab.models.du/1", 1)
    assert doc["model_bytes"] == sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
    code, doc = cli("verify", "--all")
    assert code == 0 and doc["models"][0]["ok"] and doc["models"][0]["bytes"] > 0
    assert cli("pin", "org/m")[1]["changed"] is True
    code, doc = cli("rm", "org/m")
    assert code == 1 and "pinned" in doc["error"] and doc["schema"] == "llmlab.models.rm/1"
    assert cli("unpin", "org/m")[0] == 0
    code, doc = cli("export", "org/m", "-o", str(tmp_path / "m.tar"))
    assert code == 0 and doc["output"] == str(tmp_path / "m.tar")
    code, doc = cli("gc", "--max-size", "1G", "--dry-run")
    assert code == 0 and doc["changed"] is False and doc["evicted"] == []
    code, doc = cli("rm", "org/m")
    assert (code, doc["removed"]) == (0, [commit])
    code, doc = cli("verify", "org/m")
    assert code == 1 and doc["models"][0]["ok"] is False and "not in the store" in doc["models"][0]["error"]
    code, doc = cli("import", str(tmp_path / "m.tar"))
    assert code == 0 and doc["commit"] == commit
    manifest = _write(
        tmp_path / "host.yaml", {"models": [{"name": "org/m", "path": str(model_dir), "pin": True}]}
    )
    code, doc = cli("sync", str(manifest))
    assert (code, doc["schema"], doc["changed"]) == (0, "llmlab.models.sync/1", True)  # only the pin changed
    assert [(m["name"], m["action"]) for m in doc["models"]] == [("org/m", "unchanged"), ("org/m", "pinned")]
    code, doc = cli("sync", str(manifest))
    assert (code, doc["ok"], doc["changed"]) == (0, True, False)


@pytest.mark.parametrize(("arg", "value"), [("--max-size", "lots"), ("--max-age", "3 fortnights")])
def test_bad_gc_limits_are_usage_errors(store: ModelStore, arg: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "gc", arg, value, "--store", str(store.root)])
    assert exit_info.value.code == 2 and repr(value) in capsys.readouterr().err
