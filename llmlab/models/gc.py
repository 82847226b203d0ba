"""Store housekeeping: `du` (where the bytes are) and `gc` (remove partial work, orphaned blobs, and the
least recently used unpinned models until the store is small and fresh enough)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmlab.models import layout
from llmlab.models.store import ModelStore

DEFAULT_PARTIAL_AGE = 3600.0  # temp work of other hosts (whose processes we cannot see) expires after this


@dataclass
class Usage:
    models: int = 0
    revisions: int = 0
    model_bytes: int = 0  # blobs referenced by a manifest (each inode counted once)
    partial_bytes: int = 0  # .incoming/ and snapshots without a manifest
    orphan_bytes: int = 0  # blobs no manifest refers to
    foreign_bytes: int = 0  # repos llmlab does not manage (plain huggingface_hub downloads)
    total_bytes: int = 0
    free_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def usage(store: ModelStore) -> Usage:
    result = Usage()
    if not store.root.is_dir():
        return result
    seen: set[tuple[int, int]] = set()

    def count(path: Path) -> int:
        """Size of a regular file not counted yet (hardlinked blobs are shared between models)."""
        try:
            info = path.lstat()
        except OSError:
            return 0
        key = (info.st_dev, info.st_ino)
        if not stat.S_ISREG(info.st_mode) or key in seen:
            return 0
        seen.add(key)
        return info.st_size

    managed = set(store.managed_names())
    for name in sorted(managed):
        repo = store.repo_dir(name)
        manifests = store.manifests(name)
        result.models += bool(manifests)
        result.revisions += len(manifests)
        referenced = {f.sha256 for m in manifests for f in m.files}
        for blob in sorted((repo / "blobs").iterdir()) if (repo / "blobs").is_dir() else []:
            if blob.name in referenced:
                result.model_bytes += count(blob)
            else:
                result.orphan_bytes += count(blob)
        for path in layout.walk_files(repo / ".incoming"):
            result.partial_bytes += count(path)
    for path in layout.walk_files(store.root):
        size = count(path)
        folder = path.relative_to(store.root).parts[0]
        if layout.name_from_folder(folder) not in managed:
            result.foreign_bytes += size
    result.total_bytes = sum(
        getattr(result, k) for k in ("model_bytes", "partial_bytes", "orphan_bytes", "foreign_bytes")
    )
    result.free_bytes = shutil.disk_usage(store.root).free
    return result


@dataclass
class GcReport:
    dry_run: bool
    partial: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # models skipped because another process holds their lock
    bytes_before: int = 0
    bytes_after: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.partial or self.orphan_blobs or self.evicted)

    def to_dict(self) -> dict:
        return {**asdict(self), "changed": self.changed}


def collect(
    store: ModelStore,
    max_size: int | None = None,
    max_age: float | None = None,
    partial_age: float = DEFAULT_PARTIAL_AGE,
    dry_run: bool = False,
) -> GcReport:
    from filelock import Timeout

    report = GcReport(dry_run=dry_run, bytes_before=usage(store).total_bytes)
    for name in store.managed_names():
        try:
            with store.lock(name, timeout=0.2):
                _clean_model(store, name, partial_age, dry_run, report)
        except Timeout:
            report.busy.append(name)
    _evict(store, max_size, max_age, dry_run, report)
    report.bytes_after = usage(store).total_bytes
    return report


def _clean_model(store: ModelStore, name: str, partial_age: float, dry_run: bool, report: GcReport) -> None:
    repo = store.repo_dir(name)
    now = time.time()
    doomed: list[Path] = []
    incoming = repo / ".incoming"
    for entry in sorted(incoming.iterdir()) if incoming.is_dir() else []:
        if layout.is_abandoned(entry.name) or now - _newest_mtime(entry) > partial_age:
            doomed.append(entry)
    complete = {m.commit for m in store.manifests(name)}
    snapshots = repo / "snapshots"
    doomed += [s for s in sorted(snapshots.iterdir()) if s.name not in complete] if snapshots.is_dir() else []
    doomed += sorted((repo / "blobs").glob("*.incomplete"))
    report.partial += [str(p) for p in doomed]
    if not dry_run:
        for path in doomed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for ref in list(layout.walk_files(repo / "refs")):
            if ref.read_text().strip() not in complete:
                ref.unlink()
    referenced = {f.sha256 for m in store.manifests(name) for f in m.files}
    blobs = repo / "blobs"
    orphans = [b for b in sorted(blobs.iterdir()) if b.name not in referenced] if blobs.is_dir() else []
    report.orphan_blobs += [str(b) for b in orphans if not b.name.endswith(".incomplete")]
    if not dry_run:
        store.remove_orphan_blobs(name)
        if not complete and not (incoming.is_dir() and any(incoming.iterdir())):
            shutil.rmtree(repo)


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _evict(store: ModelStore, max_size: int | None, max_age: float | None, dry_run: bool, report: GcReport):
    if max_size is None and max_age is None:
        return
    now = time.time()
    by_name: dict[str, int] = {}
    for info in store.list_models():
        by_name[info.name] = by_name.get(info.name, 0) + info.size
    candidates = sorted(
        (n for n in by_name if not store.is_pinned(n)),
        key=store.last_used,
    )
    total = usage(store).total_bytes
    for name in candidates:
        too_old = max_age is not None and now - store.last_used(name) > max_age
        too_big = max_size is not None and total > max_size
        if not (too_old or too_big):
            continue
        report.evicted.append(name)
        if dry_run:
            total -= by_name[name]
        else:
            store.remove(name)
            total = usage(store).total_bytes
