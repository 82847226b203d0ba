"""`ModelStore`: the shared model store on the Hugging Face cache layout (see layout.py for the tree).

Writers take a per-model lock, but correctness does not rest on it (flock is a silent no-op on some NFS and
Lustre mounts): every change is built under `.incoming/` and published with rename(2), blobs are named by
their content, and a revision counts as present only once its manifest exists, which is written last.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmlab import atomic
from llmlab.models import layout
from llmlab.models.hashing import hash_files
from llmlab.models.manifest import Manifest, ManifestError, ManifestFile
from llmlab.models.progress import byte_progress

if TYPE_CHECKING:
    from llmlab.config import HostConfig

LinkMode = Literal["copy", "hardlink", "move"]


class ModelNotFound(LookupError):
    """The store holds no complete copy of the model (or of that revision)."""


class StoreError(RuntimeError):
    """An operation on the store failed; the message says what and why. The store stays consistent."""


@dataclass
class ModelInfo:
    name: str
    commit: str
    refs: list[str]
    path: Path
    size: int
    files: int
    last_used: float
    pinned: bool
    source: str
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "commit": self.commit,
            "refs": self.refs,
            "path": str(self.path),
            "size": self.size,
            "files": self.files,
            "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_used)),
            "pinned": self.pinned,
            "source": self.source,
            "created": self.created,
        }


@dataclass
class VerifyResult:
    name: str
    commit: str
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    bytes_hashed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt

    @property
    def problems(self) -> list[str]:
        return [f"missing: {p}" for p in self.missing] + [f"corrupt: {p}" for p in self.corrupt]

    @property
    def mib_per_second(self) -> float:
        return self.bytes_hashed / (1 << 20) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "commit": self.commit,
            "ok": self.ok,
            "missing": self.missing,
            "corrupt": self.corrupt,
            "bytes": self.bytes_hashed,
            "seconds": round(self.seconds, 3),
            "mib_per_second": round(self.mib_per_second, 1),
        }


@dataclass
class AddResult:
    """What adding a revision did: `changed` is False when the store already held exactly this content."""

    name: str
    commit: str
    path: Path
    changed: bool
    bytes_copied: int = 0
    bytes_linked: int = 0
    bytes_reused: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "commit": self.commit,
            "path": str(self.path),
            "changed": self.changed,
            "bytes_copied": self.bytes_copied,
            "bytes_linked": self.bytes_linked,
            "bytes_reused": self.bytes_reused,
        }


def split_spec(spec: str) -> tuple[str, str | None]:
    """`org/name@rev` -> ("org/name", "rev"); `org/name` -> ("org/name", None)."""
    name, _, revision = spec.partition("@")
    layout.check_name(name)
    if revision:
        layout.check_ref(revision)
    return name, revision or None


def open_store(host: HostConfig, root: Path | None = None) -> ModelStore:
    """The host's model store (or the one at `root`), shared with the host's lab group: the one place a
    command turns its host config into a store."""
    return ModelStore(root or host.model_store, group=host.lab_group)


class ModelStore:
    def __init__(self, root: Path, group: str | None = "llmlab") -> None:
        self.root = Path(root)
        self.group = group

    # --- paths -------------------------------------------------------------------------------------------

    def repo_dir(self, name: str) -> Path:
        return self.root / layout.folder_name(name)

    def snapshot_dir(self, name: str, commit: str) -> Path:
        return self.repo_dir(name) / "snapshots" / commit

    def manifest_path(self, name: str, commit: str) -> Path:
        return self.repo_dir(name) / ".llmlab" / "manifests" / f"{commit}.json"

    def _meta(self, name: str, what: str) -> Path:
        return self.repo_dir(name) / ".llmlab" / what

    def ensure_root(self) -> None:
        """Create the store (mode 2775, owned by the lab group when that group exists)."""
        gid = layout.group_id(self.group)
        layout.make_shared_dir(self.root, gid)
        info = self.root.stat()
        if info.st_uid != os.geteuid():
            return  # set up by its owner (the model_store role); `llmlab verify` checks mode and group
        if gid is not None and info.st_gid != gid:
            os.chown(self.root, -1, gid)
        if info.st_mode & 0o7777 != layout.DIR_MODE:
            os.chmod(self.root, layout.DIR_MODE)

    def _ensure_repo(self, name: str) -> Path:
        self.ensure_root()
        repo = self.repo_dir(name)
        for sub in ("blobs", "snapshots", "refs", ".incoming", ".llmlab/manifests"):
            layout.make_shared_dir(repo / sub)
        return repo

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None = None) -> Iterator[None]:
        """Per-model lock (huggingface_hub's WeakFileLock: group-writable, falls back to a soft lock)."""
        from huggingface_hub.utils import WeakFileLock

        with layout.shared_umask():
            self.ensure_root()
            locks = layout.make_shared_dir(self.root / ".locks" / "llmlab")
            with WeakFileLock(locks / f"{layout.folder_name(name)}.lock", timeout=timeout):
                yield

    # --- reading -----------------------------------------------------------------------------------------

    def commit_of(self, name: str, revision: str | None = None) -> str:
        """The commit a revision names: a 40-hex commit as is, a ref through refs/<ref>."""
        revision = revision or "main"
        if layout.COMMIT_RE.fullmatch(revision):
            return revision
        ref = self.repo_dir(name) / "refs" / revision
        try:
            commit = ref.read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            raise ModelNotFound(f"{name}@{revision} is not in the store at {self.root}") from None
        if not layout.COMMIT_RE.fullmatch(commit):
            raise ModelNotFound(f"{name}: refs/{revision} holds {commit!r}, not a commit")
        return commit

    def manifest(self, spec: str) -> Manifest:
        """The manifest of a complete revision; ModelNotFound if the revision is absent or incomplete
        (or cannot be in the store: a malformed name)."""
        try:
            name, revision = split_spec(spec)
        except ValueError as exc:
            raise ModelNotFound(str(exc)) from None
        commit = self.commit_of(name, revision)
        path = self.manifest_path(name, commit)
        if not path.is_file() or not self.snapshot_dir(name, commit).is_dir():
            raise ModelNotFound(f"{name}@{revision or 'main'} ({commit[:12]}) is not complete in {self.root}")
        try:
            return Manifest.read(path)
        except ManifestError as exc:
            raise StoreError(f"{name}: unreadable manifest: {exc}") from None

    def snapshot_intact(self, manifest: Manifest) -> bool:
        """Cheap check (existence and size, no hashing) that a snapshot still has every file."""
        snapshot = self.snapshot_dir(manifest.name, manifest.commit)
        for entry in manifest.files:
            try:
                if (snapshot / entry.path).stat().st_size != entry.size:
                    return False
            except OSError:
                return False
        return True

    def has_complete(self, name: str, commit: str) -> bool:
        try:
            return self.snapshot_intact(Manifest.read(self.manifest_path(name, commit)))
        except ManifestError:
            return False

    def resolve(self, spec: str) -> Path:
        """The snapshot directory of `name[@revision]`, loadable by transformers' from_pretrained."""
        manifest = self.manifest(spec)
        self.touch_last_used(manifest.name)
        return self.snapshot_dir(manifest.name, manifest.commit)

    def touch_last_used(self, name: str) -> None:
        marker = self._meta(name, "last_used")
        with contextlib.suppress(OSError):  # a read-only user of the store still gets the path
            marker.touch(mode=layout.META_MODE)
            os.utime(marker)

    def is_pinned(self, name: str) -> bool:
        return self._meta(name, "pinned").exists()

    def managed_names(self) -> list[str]:
        """Models llmlab manages here (repos with a `.llmlab/` record); plain hf downloads are left alone."""
        if not self.root.is_dir():
            return []
        names = []
        for entry in sorted(self.root.iterdir()):
            name = layout.name_from_folder(entry.name)
            if name and (entry / ".llmlab").is_dir():
                names.append(name)
        return names

    def _refs(self, name: str) -> dict[str, list[str]]:
        refs_dir = self.repo_dir(name) / "refs"
        by_commit: dict[str, list[str]] = {}
        for ref in sorted(layout.walk_files(refs_dir)) if refs_dir.is_dir() else []:
            with contextlib.suppress(OSError):
                by_commit.setdefault(ref.read_text().strip(), []).append(ref.relative_to(refs_dir).as_posix())
        return by_commit

    def manifests(self, name: str) -> list[Manifest]:
        """Manifests of the complete revisions of `name` (those whose snapshot exists)."""
        found = []
        for path in sorted((self._meta(name, "manifests")).glob("*.json")):
            if self.snapshot_dir(name, path.stem).is_dir():
                with contextlib.suppress(ManifestError):
                    found.append(Manifest.read(path))
        return found

    def last_used(self, name: str) -> float:
        """When `resolve` (or an add) last touched the model; plain transformers loads do not count."""
        for marker in (self._meta(name, "last_used"), self._meta(name, "manifests")):
            with contextlib.suppress(OSError):
                return marker.stat().st_mtime
        return 0.0

    def list_models(self) -> list[ModelInfo]:
        models = []
        for name in self.managed_names():
            refs = self._refs(name)
            pinned, last_used = self.is_pinned(name), self.last_used(name)
            for manifest in self.manifests(name):
                unique = {f.sha256: f.size for f in manifest.files}
                models.append(
                    ModelInfo(
                        name=name,
                        commit=manifest.commit,
                        refs=refs.get(manifest.commit, []),
                        path=self.snapshot_dir(name, manifest.commit),
                        size=sum(unique.values()),
                        files=len(manifest.files),
                        last_used=last_used,
                        pinned=pinned,
                        source=manifest.source,
                        created=manifest.created,
                    )
                )
        return models

    # --- verifying ---------------------------------------------------------------------------------------

    def verify(
        self, spec: str, workers: int | None = None, progress: bool = False, quick: bool = False
    ) -> VerifyResult:
        """Re-hash every file of a revision against its manifest; `quick` compares sizes only (seconds for
        any model, but blind to same-size damage). ModelNotFound if the revision is not in the store."""
        manifest = self.manifest(spec)
        snapshot = self.snapshot_dir(manifest.name, manifest.commit)
        result = VerifyResult(manifest.name, manifest.commit)
        present: dict[Path, ManifestFile] = {}
        for entry in manifest.files:
            path = snapshot / entry.path
            try:
                size = path.stat().st_size  # follows the symlink: a dangling link is a missing file
            except OSError:
                result.missing.append(entry.path)
                continue
            if size != entry.size:
                result.corrupt.append(entry.path)
            elif not quick:
                present[path] = entry
        start = time.perf_counter()
        with byte_progress(
            f"verify {manifest.name}", sum(e.size for e in present.values()), progress
        ) as tick:
            digests = hash_files(present, workers=workers, on_bytes=tick)
        result.seconds = time.perf_counter() - start
        for path, digest in digests.items():
            entry = present[path]
            if isinstance(digest, OSError):
                result.missing.append(entry.path)
                continue
            result.bytes_hashed += digest.size
            if digest.size != entry.size or digest.sha256 != entry.sha256:
                result.corrupt.append(entry.path)
        result.missing.sort()
        result.corrupt.sort()
        return result

    def discard_damaged(self, result: VerifyResult) -> None:
        """Unlink the blobs behind corrupt files, so the next add re-creates them instead of reusing them."""
        manifest = self.manifest(f"{result.name}@{result.commit}")
        by_path = {f.path: f for f in manifest.files}
        with self.lock(result.name):
            for path in result.corrupt:
                (self.repo_dir(result.name) / "blobs" / by_path[path].sha256).unlink(missing_ok=True)

    # --- changing ----------------------------------------------------------------------------------------

    def import_model(
        self,
        path: Path,
        name: str,
        revision: str | None = None,
        link: LinkMode = "copy",
        progress: bool = False,
    ) -> Path:
        """Add a model directory or tarball under `name`; returns its snapshot directory."""
        return self.add_local(path, name, revision, link=link, progress=progress).path

    def add_local(
        self,
        path: Path,
        name: str | None,
        revision: str | None = None,
        link: LinkMode = "copy",
        progress: bool = False,
    ) -> AddResult:
        from llmlab.models.ingest import add_local

        with layout.shared_umask():
            return add_local(self, Path(path), name, revision, link, progress)

    def set_pinned(self, spec: str, pinned: bool) -> bool:
        """Pin or unpin a model (all its revisions); returns whether that changed anything."""
        name, _ = split_spec(spec)
        self.manifest(spec)  # ModelNotFound for models the store does not hold
        marker = self._meta(name, "pinned")
        if marker.exists() == pinned:
            return False
        if pinned:
            marker.touch(mode=layout.META_MODE)
        else:
            marker.unlink(missing_ok=True)
        return True

    def remove(self, spec: str, force: bool = False) -> list[str]:
        """Remove a model (or one revision with `name@rev`); returns the commits removed."""
        name, revision = split_spec(spec)
        if self.is_pinned(name) and not force:
            raise StoreError(
                f"{name} is pinned; unpin it first (`llmlab models unpin {name}`) or use --force"
            )
        with self.lock(name):
            commits = [self.manifest(spec).commit] if revision else [m.commit for m in self.manifests(name)]
            if not commits:
                raise ModelNotFound(f"{name} is not in the store at {self.root}")
            for commit in commits:
                self._remove_revision(name, commit)
            self.remove_orphan_blobs(name)
            if not list(self._meta(name, "manifests").glob("*.json")):
                shutil.rmtree(self.repo_dir(name))
        return commits

    def _remove_revision(self, name: str, commit: str) -> None:
        # Refs and manifest first: once they are gone nobody resolves the revision, and a crash after this
        # point leaves only a manifest-less snapshot that gc removes.
        repo = self.repo_dir(name)
        for ref in list(layout.walk_files(repo / "refs")):
            with contextlib.suppress(OSError):
                if ref.read_text().strip() == commit:
                    ref.unlink()
        self.manifest_path(name, commit).unlink(missing_ok=True)
        self._discard_tree(self.snapshot_dir(name, commit))

    def _discard_tree(self, path: Path) -> None:
        """Rename a directory into `.incoming` then delete it, so it vanishes from its place atomically."""
        if not path.exists():
            return
        trash = path.parents[1] / ".incoming" / atomic.temp_name("trash")
        layout.make_shared_dir(trash.parent)
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def remove_orphan_blobs(self, name: str) -> list[Path]:
        """Delete blobs no manifest of `name` refers to (call with the model's lock held)."""
        referenced = {f.sha256 for m in self._all_manifests(name) for f in m.files}
        removed = []
        blobs = self.repo_dir(name) / "blobs"
        for blob in sorted(blobs.iterdir()) if blobs.is_dir() else []:
            if blob.name not in referenced:
                blob.unlink(missing_ok=True)
                removed.append(blob)
        return removed

    def _all_manifests(self, name: str) -> list[Manifest]:
        """Every readable manifest, complete or not: a blob in use by an import in flight must survive."""
        found = []
        for path in self._meta(name, "manifests").glob("*.json"):
            with contextlib.suppress(ManifestError):
                found.append(Manifest.read(path))
        return found

    # --- loading (what notebooks hand-write around from_pretrained) --------------------------------------

    def load(self, spec: str, dtype: str = "auto", device_map: str | dict | None = None, **kwargs: Any):
        """(model, tokenizer) for a stored model; see llmlab.models.loading.load_model."""
        from llmlab.models.loading import load_model

        return load_model(self.resolve(spec), dtype=dtype, device_map=device_map, **kwargs)
