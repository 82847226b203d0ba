"""The controller's wheel cache (deploys/wheel.py) on a tiny checkout, with `pip wheel` faked: the build
backend comes from an index, so a real build would not work offline. No Docker needed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from deploys import wheel
from deploys.inventory import DeployError


def write_fake_wheel(out_dir: Path, tree: Path) -> None:
    """What `pip wheel` makes of the scratch tree, as far as fingerprint_wheel reads it."""
    files = sorted(p for p in (tree / "llmlab").rglob("*") if p.is_file())
    with zipfile.ZipFile(out_dir / "llmlab-0.1.0-py3-none-any.whl", "w") as archive:
        record = []
        for path in files:
            rel = path.relative_to(tree).as_posix()
            archive.writestr(rel, path.read_bytes())
            record.append(f"{rel},sha256={hashlib.sha256(path.read_bytes()).hexdigest()},")
        archive.writestr("llmlab-0.1.0.dist-info/METADATA", "Name: llmlab\nVersion: 0.1.0\n")
        archive.writestr("llmlab-0.1.0.dist-info/RECORD", "\n".join(record))


@pytest.fixture
def pip(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every `pip wheel` command run; each writes a wheel of the tree it was given."""
    calls: list[list[str]] = []

    def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert command[1:4] == ["-m", "pip", "wheel"], command
        calls.append(command)
        write_fake_wheel(Path(command[command.index("--wheel-dir") + 1]), Path(command[-1]))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    return calls


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "llmlab").mkdir(parents=True)
    (src / "pyproject.toml").write_text('[project]\nname = "llmlab"\nversion = "0.1.0"\n', encoding="utf-8")
    (src / "llmlab" / "__init__.py").write_text('"""llmlab."""\n', encoding="utf-8")
    return src


def entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir()}


def test_an_unchanged_checkout_is_served_from_the_cache_without_pip(
    source: Path, tmp_path: Path, pip: list[list[str]]
) -> None:
    cache = tmp_path / "cache"
    built = wheel.cached_wheel(source, cache)
    assert len(pip) == 1
    assert built.path.parent == cache / wheel.source_digest(source)

    again = wheel.cached_wheel(source, cache)
    assert len(pip) == 1
    assert again == built
    assert entries(cache) == {built.path.parent.name}  # the build's scratch directory is gone


def test_a_changed_package_file_gives_a_new_digest_and_a_build(
    source: Path, tmp_path: Path, pip: list[list[str]]
) -> None:
    cache = tmp_path / "cache"
    first = wheel.cached_wheel(source, cache)
    (source / "llmlab" / "models").mkdir()
    (source / "llmlab" / "models" / "store.py").write_text("STORE = 1\n", encoding="utf-8")

    second = wheel.cached_wheel(source, cache)
    assert len(pip) == 2
    assert second.path.parent != first.path.parent
    assert second.fingerprint != first.fingerprint
    with zipfile.ZipFile(second.path) as archive:
        assert "llmlab/models/store.py" in archive.namelist()


def test_bytecode_does_not_change_the_digest(source: Path, tmp_path: Path, pip: list[list[str]]) -> None:
    cache = tmp_path / "cache"
    built = wheel.cached_wheel(source, cache)
    (source / "llmlab" / "__pycache__").mkdir()
    (source / "llmlab" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (source / "llmlab" / "stale.pyc").write_bytes(b"\x00bytecode")

    assert wheel.cached_wheel(source, cache) == built
    assert len(pip) == 1


def test_a_build_keeps_the_most_recently_used_digests(
    source: Path, tmp_path: Path, pip: list[list[str]]
) -> None:
    cache = tmp_path / "cache"
    init = source / "llmlab" / "__init__.py"
    built = {}
    for n, name in enumerate("abc"):
        init.write_text(f"VERSION = {name!r}\n", encoding="utf-8")
        built[name] = wheel.cached_wheel(source, cache).path.parent
        os.utime(built[name], (1000.0 * (n + 1), 1000.0 * (n + 1)))  # a, b, c: oldest first
    init.write_text("VERSION = 'a'\n", encoding="utf-8")
    wheel.cached_wheel(source, cache)  # a hit makes a the newest
    init.write_text("VERSION = 'd'\n", encoding="utf-8")
    newest = wheel.cached_wheel(source, cache).path.parent

    assert len(pip) == 4
    assert entries(cache) == {newest.name, built["a"].name, built["c"].name}


def test_a_run_that_loses_the_rename_race_serves_the_winners_wheel(
    source: Path, tmp_path: Path, pip: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    entry = cache / wheel.source_digest(source)
    real_build = wheel.build_wheel

    def build_while_another_run_finishes(src: Path, out_dir: Path) -> wheel.Wheel:
        built = real_build(src, out_dir)
        shutil.copytree(out_dir, entry)  # the other run renamed its build into place first
        (entry / "winner").touch()
        return built

    monkeypatch.setattr(wheel, "build_wheel", build_while_another_run_finishes)
    served = wheel.cached_wheel(source, cache)
    assert served.path.parent == entry
    assert sorted(p.name for p in entry.iterdir()) == [served.path.name, "winner"]
    assert entries(cache) == {entry.name}


def test_the_cli_prints_the_wheel_as_json_and_creates_the_cache(
    source: Path, tmp_path: Path, pip: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "new" / "cache"
    assert wheel.main(["--source", str(source), "--cache-dir", str(cache)]) == 0
    printed = json.loads(capsys.readouterr().out)
    path = Path(printed["path"])
    assert path.parent == cache / wheel.source_digest(source)
    assert (printed["version"], printed["fingerprint"]) == wheel.fingerprint_wheel(path)


def test_a_failed_build_is_named_and_leaves_nothing_in_the_cache(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: no setuptools")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    cache = tmp_path / "cache"
    with pytest.raises(DeployError, match="no setuptools"):
        wheel.cached_wheel(source, cache)
    assert entries(cache) == set()

    assert wheel.main(["--source", str(tmp_path / "nowhere"), "--cache-dir", str(cache)]) == 2
    assert "holds no pyproject.toml" in capsys.readouterr().err
