"""The store's layout, import/export, verify, rm and pins, on model-shaped directories (no transformers)."""

from __future__ import annotations

import grp
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

from llmlab.models.ingest import export_model
from llmlab.models.manifest import Manifest
from llmlab.models.store import ModelNotFound, ModelStore, StoreError

from .helpers import make_model_dir


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_import_writes_the_hub_cache_layout(store: ModelStore, model_dir: Path) -> None:
    snapshot = store.import_model(model_dir, "org/tiny")
    repo = store.root / "models--org--tiny"
    commit = (repo / "refs" / "main").read_text()
    assert snapshot == repo / "snapshots" / commit
    for rel in ("config.json", "tokenizer.json", "model.safetensors", "extra/notes.txt"):
        link = snapshot / rel
        assert link.is_symlink() and not os.readlink(link).startswith("/")  # relative, survives a move
        blob = link.resolve()
        assert blob.parent == repo / "blobs" and blob.name == sha256(model_dir / rel)
        assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    manifest = Manifest.read(repo / ".llmlab" / "manifests" / f"{commit}.json")
    assert {f.path: f.sha256 for f in manifest.files} == {
        rel: sha256(model_dir / rel)
        for rel in ("config.json", "tokenizer.json", "model.safetensors", "extra/notes.txt")
    }
    # huggingface_hub's own scanner reads the store as a valid cache, and skips llmlab's .locks/
    info = scan_cache_dir(store.root)
    assert info.warnings == []
    assert [(r.repo_id, {rev.commit_hash for rev in r.revisions}) for r in info.repos] == [
        ("org/tiny", {commit})
    ]


def test_reimport_is_unchanged_and_identical_files_are_stored_once(
    store: ModelStore, model_dir: Path
) -> None:
    first = store.add_local(model_dir, "org/tiny")
    again = store.add_local(model_dir, "org/tiny")
    assert first.changed and not again.changed and again.commit == first.commit
    other = store.add_local(model_dir, "org/copy")  # same content, another name: hardlinks, no copy
    assert other.changed and other.bytes_copied == 0 and other.bytes_linked == first.bytes_copied
    a = (first.path / "model.safetensors").resolve().stat()
    b = (other.path / "model.safetensors").resolve().stat()
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)


def test_hardlink_import_links_the_source_and_copy_does_not(store: ModelStore, model_dir: Path) -> None:
    linked = store.add_local(model_dir, "org/linked", link="hardlink")
    assert linked.bytes_copied == 0 and linked.bytes_linked > 0
    assert (linked.path / "model.safetensors").resolve().stat().st_ino == (
        model_dir / "model.safetensors"
    ).stat().st_ino
    copied = make_model_dir(model_dir.parent / "other", seed=1)
    result = store.add_local(copied, "org/copied")
    assert result.bytes_linked == 0
    assert (result.path / "model.safetensors").resolve().stat().st_ino != (
        copied / "model.safetensors"
    ).stat().st_ino


def test_store_is_group_shared(tmp_path: Path, model_dir: Path) -> None:
    group = next(g for g in grp.getgrall() if g.gr_gid != os.getgid())  # tests run as root: any other group
    store = ModelStore(tmp_path / "shared", group=group.gr_name)
    old_umask = os.umask(0o077)  # a strict user umask must not make the store private
    try:
        snapshot = store.import_model(model_dir, "org/tiny")
    finally:
        os.umask(old_umask)
    root = store.root.stat()
    assert stat.S_IMODE(root.st_mode) == 0o2775 and root.st_gid == group.gr_gid
    for path in (snapshot, snapshot.parent.parent / "blobs", snapshot / "extra"):
        info = path.stat()
        assert info.st_gid == group.gr_gid, path
        assert info.st_mode & 0o2070 == 0o2070, f"{path}: {stat.filemode(info.st_mode)}"  # setgid, rwx group
    blob = (snapshot / "model.safetensors").resolve().stat()
    assert blob.st_gid == group.gr_gid and blob.st_mode & stat.S_IRGRP


def test_bad_input_is_refused_and_nothing_is_written(store: ModelStore, tmp_path: Path) -> None:
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hello")
    with pytest.raises(StoreError, match=r"not a model: it has none of config\.json"):
        store.import_model(not_a_model, "org/notes")
    with pytest.raises(StoreError, match="no such file"):
        store.import_model(tmp_path / "absent", "org/absent")
    with pytest.raises(ValueError, match="not a Hub repo id"):
        store.import_model(not_a_model, "org/../etc")
    assert not (store.root / "models--org--notes").exists()
    with pytest.raises(ModelNotFound) as caught:
        store.resolve("org/absent")
    assert isinstance(caught.value, LookupError)
    with pytest.raises(ModelNotFound, match="not a Hub repo id"):  # a lookup: cannot be there, so not found
        store.resolve("./checkpoints/run-3")


def test_revisions_and_refs(store: ModelStore, tmp_path: Path) -> None:
    v1 = store.add_local(make_model_dir(tmp_path / "v1", seed=1), "org/m", revision="v1")
    v2 = store.add_local(make_model_dir(tmp_path / "v2", seed=2), "org/m", revision="v2")
    assert v1.commit != v2.commit
    assert store.resolve("org/m@v1") == v1.path and store.resolve("org/m@v2") == v2.path
    assert store.resolve("org/m") == v1.path  # main was set by the first add only
    assert store.resolve(f"org/m@{v2.commit}") == v2.path
    pinned_commit = "0123456789abcdef0123456789abcdef01234567"
    fixed = store.add_local(make_model_dir(tmp_path / "v3", seed=3), "org/m", revision=pinned_commit)
    assert fixed.commit == pinned_commit and store.resolve("org/m") == fixed.path  # a commit add moves main
    assert sorted(m.commit for m in store.list_models()) == sorted([v1.commit, v2.commit, pinned_commit])
    with pytest.raises(ModelNotFound):
        store.resolve("org/m@v9")


def test_verify_names_corrupt_and_missing_files(store: ModelStore, model_dir: Path) -> None:
    snapshot = store.import_model(model_dir, "org/tiny")
    assert store.verify("org/tiny").ok
    weights = (snapshot / "model.safetensors").resolve()
    os.chmod(weights, 0o644)
    with open(weights, "r+b") as handle:  # flip one byte in place: same size, different content
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 0xFF]))
    (snapshot / "tokenizer.json").resolve().unlink()
    quick = store.verify("org/tiny", quick=True)  # sizes only: sees the missing file, not the flipped byte
    assert (quick.missing, quick.corrupt, quick.bytes_hashed) == (["tokenizer.json"], [], 0)
    result = store.verify("org/tiny")
    assert not result.ok
    assert result.corrupt == ["model.safetensors"] and result.missing == ["tokenizer.json"]
    assert result.problems == ["missing: tokenizer.json", "corrupt: model.safetensors"]
    still_there = ("model.safetensors", "config.json", "extra/notes.txt")
    assert result.bytes_hashed == sum((model_dir / rel).stat().st_size for rel in still_there)


def test_export_then_import_keeps_the_commit_and_checks_every_hash(
    store: ModelStore, model_dir: Path, tmp_path: Path
) -> None:
    original = store.add_local(model_dir, "org/tiny")
    archive = export_model(store, "org/tiny", tmp_path / "tiny.tar.gz", progress=False)
    other = ModelStore(tmp_path / "host2", group=None)
    copied = other.add_local(archive, None)  # the archive's manifest names the model
    assert (copied.name, copied.commit) == ("org/tiny", original.commit)
    assert other.verify("org/tiny").ok

    tampered = tmp_path / "tampered.tar"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == "files/model.safetensors":
                data = bytes([data[0] ^ 1]) + data[1:]
            dst.addfile(member, io.BytesIO(data))
    third = ModelStore(tmp_path / "host3", group=None)
    with pytest.raises(
        StoreError,
        match=r"tampered\.tar: does not match its manifest \(hash mismatch: model\.safetensors\)",
    ):
        third.add_local(tampered, None)
    assert third.list_models() == []
    repo = third.root / "models--org--tiny"
    assert not any((repo / "blobs").iterdir()) and not any((repo / ".incoming").iterdir())


def test_plain_tarball_of_a_model_directory(store: ModelStore, model_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "model.tgz"
    subprocess.run(["tar", "czf", archive, "-C", model_dir.parent, model_dir.name], check=True)
    with pytest.raises(StoreError, match="needs --name"):
        store.add_local(archive, None)
    snapshot = store.import_model(archive, "org/from-tar")
    stored = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert stored == ["config.json", "extra/notes.txt", "model.safetensors", "tokenizer.json"]
    assert store.verify("org/from-tar").ok


def test_a_tarball_member_outside_the_archive_is_refused(store: ModelStore, tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("config.json", "../escaped.txt"):
            member = tarfile.TarInfo(name)
            member.size = 2
            tar.addfile(member, io.BytesIO(b"{}"))
    with pytest.raises(StoreError, match=r"refusing '\.\./escaped\.txt': it would be written outside"):
        store.import_model(archive, "org/evil")
    assert not (tmp_path / "escaped.txt").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_rm_respects_pins_and_keeps_shared_blobs(store: ModelStore, tmp_path: Path) -> None:
    v1 = store.add_local(make_model_dir(tmp_path / "v1", seed=1), "org/m", revision="v1")
    v2_dir = make_model_dir(tmp_path / "v2", seed=2)
    (v2_dir / "model.safetensors").write_bytes((tmp_path / "v1" / "model.safetensors").read_bytes())
    v2 = store.add_local(v2_dir, "org/m", revision="v2")
    assert store.set_pinned("org/m", True) and not store.set_pinned("org/m", True)
    with pytest.raises(StoreError, match="pinned"):
        store.remove("org/m@v1")
    assert store.remove("org/m@v1", force=True) == [v1.commit]
    assert [m.commit for m in store.list_models()] == [v2.commit]
    assert store.verify("org/m@v2").ok  # the weights blob both revisions share is still there
    assert not (store.root / "models--org--m" / "refs" / "v1").exists()
    assert store.remove("org/m", force=True) == [v2.commit]
    assert not (store.root / "models--org--m").exists()
    with pytest.raises(ModelNotFound):
        store.remove("org/m")


def test_disk_full_is_a_clear_error_and_the_store_stays_consistent(
    store: ModelStore, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import shutil

    from llmlab.models import ingest
    from llmlab.models.gc import collect

    real_copy = shutil.copyfile

    def copy_until_full(src, dst):
        if Path(src).name == "model.safetensors":  # the device fills up half-way through the weights
            Path(dst).write_bytes(Path(src).read_bytes()[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst)

    monkeypatch.setattr(ingest.shutil, "copyfile", copy_until_full)
    with pytest.raises(StoreError, match=r"no space left on the device of .* while storing model\.safe"):
        store.import_model(model_dir, "org/tiny")
    repo = store.repo_dir("org/tiny")
    assert store.list_models() == [] and list((repo / ".incoming").iterdir()) == []
    assert not (repo / "refs" / "main").exists() and list((repo / "snapshots").iterdir()) == []
    monkeypatch.undo()
    assert collect(
        store
    ).orphan_blobs  # the blobs copied before the failure are not referenced: gc removes them
    assert store.add_local(model_dir, "org/tiny").changed and store.verify("org/tiny").ok
