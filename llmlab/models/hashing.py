"""SHA-256 of model files: one file at a time per thread, many files in parallel.

hashlib releases the GIL while it digests a buffer, so a thread pool hashes as many files at once as there
are cores; a single file is inherently sequential (SHA-256 is a chain).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 4 << 20  # large reads amortise syscalls; 4 MiB stays well inside the page cache's readahead


@dataclass(frozen=True)
class FileDigest:
    path: Path
    size: int
    sha256: str


def digest_stream(source: BinaryIO, on_bytes: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Digest `source` to its end; returns (size, sha256 hex)."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    size = 0
    while n := source.readinto(buffer):
        digest.update(view[:n])
        size += n
        if on_bytes is not None:
            on_bytes(n)
    return size, digest.hexdigest()


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> FileDigest:
    with open(path, "rb", buffering=0) as handle:
        size, sha = digest_stream(handle, on_bytes)
    return FileDigest(Path(path), size, sha)


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file: what the Hub lists as `oid` for files not stored in LFS."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def hash_files(
    paths: Iterable[Path],
    workers: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[Path, FileDigest | OSError]:
    """Hash files in parallel; a file that cannot be read maps to its OSError instead of aborting the rest.

    The largest files start first, so one big shard does not end up running alone at the end.
    """
    ordered = sorted(paths, key=_size_or_zero, reverse=True)

    def one(path: Path) -> FileDigest | OSError:
        try:
            return hash_file(path, on_bytes)
        except OSError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        return dict(zip(ordered, pool.map(one, ordered), strict=True))


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
