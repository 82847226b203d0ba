"""Where things live in the store, and how they are written so that a crash never leaves a torn file.

The store is a Hugging Face hub cache (`HF_HUB_CACHE`): transformers reads it without llmlab.

    <store>/models--org--name/blobs/<sha256>              file contents, read-only, named by SHA-256
    <store>/models--org--name/snapshots/<commit>/<path>   symlinks into blobs/ (what transformers loads)
    <store>/models--org--name/refs/<ref>                  commit of a branch/tag, e.g. refs/main
    <store>/models--org--name/.llmlab/manifests/<commit>.json   llmlab's record; its presence means "complete"
    <store>/models--org--name/.llmlab/{pinned,last_used}
    <store>/models--org--name/.incoming/                  work in progress (temp snapshots, blobs, downloads)
    <store>/.locks/llmlab/models--org--name.lock          per-model lock (hf's cache scan skips `.locks`)

`.incoming/` sits at the same depth as `snapshots/`, so a snapshot built there with relative symlinks is
still correct after it is renamed into `snapshots/`.
"""

from __future__ import annotations

import contextlib
import grp
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from llmlab import atomic

REPO_PREFIX = "models--"
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
# Hub repo ids: `name` or `org/name` of letters, digits, `-`, `_`, `.`; no `--` or `..` (layout).
NAME_RE = re.compile(r"(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}")
REF_RE = re.compile(r"[A-Za-z0-9][\w.\-/]{0,127}")

DIR_MODE = 0o2775  # group-writable and setgid: files created inside belong to the store's group
META_MODE = 0o664  # group-writable metadata (last_used is touched by every user)
BLOB_MODE = 0o444  # contents never change once written


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or "--" in name or ".." in name:
        raise ValueError(
            f"model name {name!r} is not a Hub repo id; use 'org/name' or 'name' "
            "(letters, digits, '-', '_', '.'; no '--' or '..')"
        )
    return name


def check_ref(ref: str) -> str:
    if not REF_RE.fullmatch(ref) or ".." in ref or ref.endswith("/"):
        raise ValueError(f"revision {ref!r} is not a branch, tag or 40-hex commit")
    return ref


def folder_name(name: str) -> str:
    """`org/name` -> `models--org--name`, the hub cache's folder for a model repo."""
    from huggingface_hub.file_download import repo_folder_name

    return repo_folder_name(repo_id=check_name(name), repo_type="model")


def transfer_name(name: str, commit: str) -> str:
    """`org/name` at a commit -> `org--name--<commit>`: what a model travels as between stores (an
    `export` tarball is this with `.tar`, a copied snapshot directory this alone): one file name, no `/`."""
    if not COMMIT_RE.fullmatch(commit):
        raise ValueError(f"{commit!r} is not a 40-hex commit")
    return f"{check_name(name).replace('/', '--')}--{commit}"


def name_from_folder(folder: str) -> str | None:
    if not folder.startswith(REPO_PREFIX):
        return None
    return folder[len(REPO_PREFIX) :].replace("--", "/")


def group_id(group: str | None) -> int | None:
    if not group:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def make_shared_dir(path: Path, gid: int | None = None) -> Path:
    """mkdir -p with mode 2775; directories below a setgid directory inherit its group."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            if gid is not None:
                os.chown(directory, -1, gid)
            os.chmod(directory, DIR_MODE)  # explicit: mkdir's mode is filtered through the umask
    return path


@contextlib.contextmanager
def shared_umask() -> Iterator[None]:
    """Create files group-writable (664/2775) while writing to the store, whatever the caller's umask."""
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)


def is_abandoned(name: str) -> bool:
    """Whether a temp entry was left by a process of this host that no longer runs. Entries of other hosts
    (a store on NFS) are never judged here; `gc --partial-age` removes those by age."""
    import psutil

    pid = atomic.local_owner(name)
    return pid is not None and pid != os.getpid() and not psutil.pid_exists(pid)


def relative_link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)


def is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (symlinks not followed)."""
    total = 0
    for file in walk_files(path):
        with contextlib.suppress(OSError):
            info = file.lstat()
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def walk_files(path: Path) -> Iterator[Path]:
    for root, _dirs, files in os.walk(path):
        for name in files:
            yield Path(root, name)
