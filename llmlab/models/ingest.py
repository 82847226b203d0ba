"""Adding a revision to the store: from a directory, a tarball, or a finished download.

Steps, each safe to interrupt: (1) hash the files; (2) put each missing blob in `.incoming/` and rename it to
`blobs/<sha256>`; (3) build the snapshot's symlinks in `.incoming/` and rename the directory to
`snapshots/<commit>`; (4) write the manifest (from here on the revision is present); (5) point the ref at it.
A kill before (4) leaves only unreferenced blobs and temp files, which the next add or `gc` removes.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llmlab import atomic
from llmlab.models import layout
from llmlab.models.hashing import hash_files
from llmlab.models.manifest import Manifest, ManifestError, ManifestFile, content_commit
from llmlab.models.progress import byte_progress
from llmlab.models.store import AddResult, LinkMode, ModelStore, StoreError

MODEL_MARKERS = ("config.json", "adapter_config.json")
SKIPPED_DIRS = {".git", ".cache", ".incoming", ".llmlab"}  # VCS and hf local_dir metadata, not model files
ARCHIVE_MANIFEST = "llmlab-manifest.json"
ARCHIVE_FILES = "files/"


@dataclass
class Staged:
    """A file ready to become part of a snapshot: its manifest entry and where its bytes are now."""

    entry: ManifestFile
    source: Path
    mode: LinkMode  # how its bytes get into blobs/ when the store does not have them yet


def add_local(
    store: ModelStore, path: Path, name: str | None, revision: str | None, link: LinkMode, progress: bool
) -> AddResult:
    if path.is_dir():
        if name is None:
            raise StoreError("import of a directory needs --name ORG/NAME")
        return add_directory(store, path, name, revision, link, progress, source=f"dir:{path.resolve()}")
    if path.is_file() and tarfile.is_tarfile(path):
        return _add_tarball(store, path, name, revision, progress)
    if not path.exists():
        raise StoreError(f"{path}: no such file or directory")
    raise StoreError(f"{path}: not a model directory or a tarball")


def model_files(directory: Path) -> dict[str, Path]:
    """The files of a model directory by their '/'-path; StoreError if it is not a model."""
    if not any((directory / marker).is_file() for marker in MODEL_MARKERS):
        raise StoreError(f"{directory}: not a model: it has none of {', '.join(MODEL_MARKERS)}")
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for file_name in names:
            path = Path(root, file_name)
            if path.is_file():  # symlinks to files count (a snapshot is made of them); dangling ones do not
                files[path.relative_to(directory).as_posix()] = path
    return files


def add_directory(
    store: ModelStore,
    directory: Path,
    name: str,
    revision: str | None,
    link: LinkMode,
    progress: bool,
    source: str,
    commit: str | None = None,
    expected: dict[str, str] | None = None,
    locked: bool = False,
    origin: Path | None = None,
) -> AddResult:
    """Add the files of `directory`. `commit` fixes the revision's id (a Hub commit); `expected` maps paths to
    SHA-256 values they must have (a tarball's manifest), else the add fails naming the files. `locked`:
    the caller already holds the model's lock; `origin`: what to name in errors (the tarball)."""
    layout.check_name(name)
    files = model_files(directory)
    total = sum(p.stat().st_size for p in files.values())
    with byte_progress(f"hash {name}", total, progress) as tick:
        digests = hash_files(files.values(), on_bytes=tick)
    unreadable = [rel for rel, p in files.items() if isinstance(digests[p], OSError)]
    if unreadable:
        raise StoreError(f"{directory}: cannot read {', '.join(unreadable)}")
    entries = [
        ManifestFile(path=rel, size=digests[p].size, sha256=digests[p].sha256) for rel, p in files.items()
    ]
    if expected is not None:
        _check_expected(entries, expected, str(origin or directory))
    staged = [Staged(entry, files[entry.path], link) for entry in entries]
    return commit_revision(store, name, staged, revision, source, commit, progress, locked)


def _check_expected(entries: list[ManifestFile], expected: dict[str, str], source: str) -> None:
    got = {e.path: e.sha256 for e in entries}
    corrupt = sorted(p for p in expected if p in got and got[p] != expected[p])
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if corrupt or missing or extra:
        parts = [
            f"{label}: {', '.join(paths)}"
            for label, paths in (("hash mismatch", corrupt), ("missing", missing), ("not in manifest", extra))
            if paths
        ]
        raise StoreError(f"{source}: does not match its manifest ({'; '.join(parts)}); nothing was imported")


def commit_revision(
    store: ModelStore,
    name: str,
    staged: list[Staged],
    revision: str | None,
    source: str,
    commit: str | None,
    progress: bool,
    locked: bool = False,
) -> AddResult:
    """Publish staged files as a revision of `name` (steps 2-5 of the module docstring)."""
    entries = [s.entry for s in staged]
    ref = "main"
    if revision and layout.COMMIT_RE.fullmatch(revision):
        commit = commit or revision
    elif revision:
        ref = layout.check_ref(revision)
    commit = commit or content_commit(entries)
    manifest = Manifest(name=name, commit=commit, revision=revision or ref, source=source, files=entries)
    repo = store._ensure_repo(name)
    with contextlib.nullcontext() if locked else store.lock(name):
        _clean_incoming(repo)
        result = AddResult(name, commit, store.snapshot_dir(name, commit), changed=False)
        existing = _existing_manifest(store, name, commit)
        if existing is None or not _same_files(existing, manifest) or not store.snapshot_intact(existing):
            try:
                _place_blobs(store, name, staged, result, progress)
                _publish_snapshot(store, name, commit, entries)
                atomic.atomic_write(store.manifest_path(name, commit), manifest.to_json(), layout.META_MODE)
            except BaseException:
                _remove_own_temp(repo)  # blobs already placed stay as orphans, which gc removes
                raise
            result.changed = True
        result.changed |= point_refs(store, name, ref, commit)
    store.touch_last_used(name)
    return result


def point_refs(store: ModelStore, name: str, ref: str, commit: str) -> bool:
    """refs/<ref> -> commit, and refs/main too when the model has none yet, so that plain
    from_pretrained(name) finds it. Returns whether a ref changed."""
    changed = _set_ref(store, name, ref, commit, first_only=False)
    if ref != "main":
        changed |= _set_ref(store, name, "main", commit, first_only=True)
    return changed


def _existing_manifest(store: ModelStore, name: str, commit: str) -> Manifest | None:
    path = store.manifest_path(name, commit)
    if not path.is_file():
        return None
    try:
        return Manifest.read(path)
    except ManifestError:
        return None  # a torn manifest cannot exist (atomic_write); an alien one is replaced


def _same_files(a: Manifest, b: Manifest) -> bool:
    key = lambda m: sorted((f.path, f.sha256) for f in m.files)  # noqa: E731
    return key(a) == key(b)


def _clean_incoming(repo: Path) -> None:
    """Remove what interrupted adds left behind: temp entries of dead processes on this host (the lock
    may not exclude other writers on NFS, so live ones are kept)."""
    incoming = repo / ".incoming"
    for entry in incoming.iterdir() if incoming.is_dir() else []:
        if not layout.is_abandoned(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _remove_own_temp(repo: Path) -> None:
    for entry in (repo / ".incoming").iterdir():
        # a tarball import removes its own unpack dir (it holds the files being added)
        if atomic.local_owner(entry.name) == os.getpid() and not entry.name.startswith("unpack"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _place_blobs(
    store: ModelStore, name: str, staged: list[Staged], result: AddResult, progress: bool
) -> None:
    repo = store.repo_dir(name)
    todo: dict[str, Staged] = {}
    for item in staged:
        blob = repo / "blobs" / item.entry.sha256
        if _blob_ok(blob, item.entry.size):
            result.bytes_reused += item.entry.size
        else:
            todo.setdefault(item.entry.sha256, item)
    with byte_progress(f"store {name}", sum(s.entry.size for s in todo.values()), progress) as tick:
        for sha, item in todo.items():
            tmp = repo / ".incoming" / atomic.temp_name("blob")
            how = _materialise(store, name, item, sha, tmp)
            if how == "copy":
                result.bytes_copied += item.entry.size
            else:
                result.bytes_linked += item.entry.size
            if tmp.stat().st_size != item.entry.size:
                tmp.unlink()
                raise StoreError(f"{name}: {item.entry.path} changed while it was being imported; try again")
            os.chmod(tmp, layout.BLOB_MODE)
            os.replace(tmp, repo / "blobs" / sha)
            if tick:
                tick(item.entry.size)


def _blob_ok(blob: Path, size: int) -> bool:
    try:
        return blob.stat().st_size == size
    except OSError:
        return False


def _materialise(store: ModelStore, name: str, item: Staged, sha: str, tmp: Path) -> str:
    """Put the bytes of `item` at `tmp`: link an identical blob of another model, else link/move/copy the
    source. Returns "link" or "copy"."""
    own = store.repo_dir(name) / "blobs" / sha
    for other in store.root.glob(f"{layout.REPO_PREFIX}*/blobs/{sha}"):
        if other != own and _blob_ok(other, item.entry.size):
            with contextlib.suppress(OSError):
                os.link(other, tmp)
                return "link"
    try:
        if item.mode == "move":
            os.rename(item.source.resolve(), tmp)
            return "link"
        if item.mode == "hardlink":
            os.link(item.source.resolve(), tmp)
            return "link"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
            raise
    try:
        shutil.copyfile(item.source, tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise StoreError(
                f"no space left on the device of {store.root} while storing {item.entry.path}"
            ) from None
        raise
    return "copy"


def _publish_snapshot(store: ModelStore, name: str, commit: str, entries: list[ManifestFile]) -> None:
    repo = store.repo_dir(name)
    building = repo / ".incoming" / atomic.temp_name("snapshot")
    building.mkdir()
    for entry in entries:
        link = building.joinpath(*PurePosixPath(entry.path).parts)
        layout.relative_link(repo / "blobs" / entry.sha256, link)
    target = store.snapshot_dir(name, commit)
    try:
        os.rename(building, target)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        if _links_match(building, target):  # another writer published the same snapshot first: keep it
            shutil.rmtree(building)
            return
        # A crash left a partial snapshot without its manifest: replace it with ours, which is complete.
        store._discard_tree(target)
        os.rename(building, target)


def _links_match(ours: Path, theirs: Path) -> bool:
    for link in layout.walk_files(ours):
        try:
            if os.readlink(theirs / link.relative_to(ours)) != os.readlink(link):
                return False
        except OSError:
            return False
    return True


def _set_ref(store: ModelStore, name: str, ref: str, commit: str, first_only: bool) -> bool:
    path = store.repo_dir(name) / "refs" / ref
    try:
        current = path.read_text().strip()
    except OSError:
        current = None
    if current == commit or (first_only and current is not None):
        return False
    layout.make_shared_dir(path.parent)
    atomic.atomic_write(path, commit.encode(), layout.META_MODE)
    return True


def _add_tarball(
    store: ModelStore, path: Path, name: str | None, revision: str | None, progress: bool
) -> AddResult:
    """Unpack into `.incoming/`, check it against the archive's manifest when it has one, then add it."""
    with tarfile.open(path, "r:*") as archive:
        members = {m.name: m for m in archive.getmembers()}
        manifest = _archive_manifest(archive, members, path)
        target_name = name or (manifest.name if manifest else None)
        if target_name is None:
            raise StoreError(f"{path}: a tarball without {ARCHIVE_MANIFEST} needs --name ORG/NAME")
        repo = store._ensure_repo(target_name)
        unpacked = repo / ".incoming" / atomic.temp_name("unpack")
        try:
            root = _unpack(archive, members, unpacked, manifest is not None, path, progress)
            if manifest is None:
                return add_directory(
                    store, root, target_name, revision, "move", progress, f"tar:{path.resolve()}"
                )
            expected = {f.path: f.sha256 for f in manifest.files}
            return add_directory(
                store,
                root,
                target_name,
                revision or manifest.revision,
                "move",
                progress,
                source=manifest.source,
                commit=manifest.commit,
                expected=expected,
                origin=path,
            )
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)


def _archive_manifest(archive: tarfile.TarFile, members: dict, path: Path) -> Manifest | None:
    member = members.get(ARCHIVE_MANIFEST)
    if member is None:
        return None
    handle = archive.extractfile(member)
    if handle is None:
        raise StoreError(f"{path}: {ARCHIVE_MANIFEST} is not a regular file")
    try:
        return Manifest.from_json(handle.read(), f"{path}:{ARCHIVE_MANIFEST}")
    except ManifestError as exc:
        raise StoreError(str(exc)) from None


def _unpack(
    archive: tarfile.TarFile, members: dict, dest: Path, exported: bool, path: Path, progress: bool
) -> Path:
    """Extract regular files only (no links, devices or modes), each refused if it would land outside DEST.

    Written by hand rather than with tarfile's 'data' filter, which Python 3.11 gained only in 3.11.4
    (Debian 12 ships 3.11.2).
    """
    wanted = [
        m for m in members.values() if m.isfile() and (not exported or m.name.startswith(ARCHIVE_FILES))
    ]
    root = dest.resolve()
    with byte_progress(f"unpack {path.name}", sum(m.size for m in wanted), progress) as tick:
        for member in wanted:
            target = (root / member.name).resolve()
            if not target.is_relative_to(root) or target == root:
                raise StoreError(f"{path}: refusing {member.name!r}: it would be written outside the archive")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise StoreError(
                        f"no space left on the device of {dest} while unpacking {path}"
                    ) from None
                raise StoreError(f"{path}: cannot unpack {member.name}: {exc}") from None
            if tick:
                tick(member.size)
    if exported:
        return dest / ARCHIVE_FILES.rstrip("/")
    tops = list(dest.iterdir()) if dest.is_dir() else []
    # `tar czf model.tgz model/` wraps everything in one directory: import what is inside it.
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else dest


def export_model(store: ModelStore, spec: str, output: Path, progress: bool) -> Path:
    """Write `name[@rev]` with its manifest to a tarball (gzip when the name ends in .gz/.tgz)."""
    manifest = store.manifest(spec)
    snapshot = store.snapshot_dir(manifest.name, manifest.commit)
    mode = "w:gz" if output.name.endswith((".gz", ".tgz")) else "w"
    tmp = output.with_name(f".{output.name}.{atomic.temp_name('part')}")
    try:
        with (
            tarfile.open(tmp, mode) as archive,
            byte_progress(f"export {manifest.name}", manifest.total_bytes, progress) as tick,
        ):
            data = manifest.to_json()
            info = tarfile.TarInfo(ARCHIVE_MANIFEST)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
            for entry in manifest.files:
                real = (snapshot / entry.path).resolve()
                info = archive.gettarinfo(str(real), arcname=ARCHIVE_FILES + entry.path)
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
                with open(real, "rb") as handle:
                    archive.addfile(info, handle)
                if tick:
                    tick(entry.size)
        os.replace(tmp, output)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoreError(f"no space left on the device of {output}") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return output
