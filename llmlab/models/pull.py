"""`pull`: download a model from the Hub (or a mirror) with huggingface_hub, then add it like an import.

The download goes to a private hub cache in `<repo>/.incoming/hub-*/`, never straight into the shared
snapshot, so a half-downloaded model is never visible to transformers. An interrupted pull resumes file by
file: the next pull adopts the dead one's cache, so files already complete there are not fetched again.
(huggingface_hub >= 1.x writes each download to a process-unique temp file and does not continue partial
files, so a file cut off midway starts over.)
Every file is checked against the Hub's own listing (SHA-256 for LFS files, the git blob id for the others)
before it enters the store.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from llmlab import atomic
from llmlab.models import layout
from llmlab.models.hashing import git_blob_sha1, hash_files
from llmlab.models.ingest import MODEL_MARKERS, add_directory, point_refs
from llmlab.models.store import AddResult, ModelNotFound, ModelStore, StoreError, split_spec

# What from_pretrained needs: safetensors weights and their index, configs, tokenizer files, chat templates.
DEFAULT_PATTERNS = ("*.safetensors", "*.json", "*.model", "*.txt", "*.tiktoken", "*.jinja")
DEFAULT_TOKEN_FILE = Path("/etc/llmlab/hf_token")


def read_token(token_file: Path | None) -> str | None:
    """The token in `token_file` (which must be private to its owner), else None: huggingface_hub then
    uses $HF_TOKEN or the user's `hf auth login` token by itself."""
    if token_file is None or not os.access(token_file, os.R_OK):  # absent, or root's and we are not root
        return None
    mode = token_file.stat().st_mode
    if mode & 0o077:
        raise StoreError(f"{token_file}: mode {oct(mode & 0o777)} lets others read the token; chmod 600 it")
    return token_file.read_text().strip() or None


def pull(
    store: ModelStore,
    spec: str,
    endpoint: str | None = None,
    token: str | None = None,
    patterns: list[str] | None = None,
    progress: bool = True,
) -> AddResult:
    """Bring `name[@revision]` into the store; returns what changed (nothing when it is already there)."""
    from huggingface_hub import constants

    name, revision = split_spec(spec)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    if constants.is_offline_mode():
        raise StoreError("HF_HUB_OFFLINE is set in this environment; unset it for `llmlab models pull`")
    with layout.shared_umask():
        commit = _resolve_commit(name, revision, endpoint, token)
        with store.lock(name):
            if store.has_complete(name, commit):
                ref = revision if revision and not layout.COMMIT_RE.fullmatch(revision) else "main"
                changed = point_refs(store, name, ref, commit)
                return AddResult(name, commit, store.snapshot_dir(name, commit), changed=changed)
            staging = _adopt_staging(store._ensure_repo(name) / ".incoming")
            wanted = list(patterns or DEFAULT_PATTERNS)
            snapshot = _download(store, name, commit, endpoint, token, wanted, staging, progress)
            source = f"hub:{endpoint}"
            result = add_directory(
                store, snapshot, name, revision or "main", "move", progress, source, commit, locked=True
            )
            shutil.rmtree(staging, ignore_errors=True)
    return result


def _adopt_staging(incoming: Path) -> Path:
    """This pull's private download cache: a killed pull's cache renamed to ours (so its finished files are
    not fetched again), else a new one. Named per process, so that pulls which the lock fails to keep apart
    (NFS) never move files out of each other's caches."""
    staging = incoming / atomic.temp_name("hub")
    abandoned = [p for p in incoming.glob("hub-*") if layout.is_abandoned(p.name)]
    for index, old in enumerate(sorted(abandoned, key=_tree_bytes, reverse=True)):
        if index == 0:
            os.rename(old, staging)
        else:
            shutil.rmtree(old, ignore_errors=True)
    staging.mkdir(exist_ok=True)
    return staging


def _resolve_commit(name: str, revision: str | None, endpoint: str, token: str | None) -> str:
    if revision and layout.COMMIT_RE.fullmatch(revision):
        return revision
    from huggingface_hub import HfApi

    with _hub_errors(name, revision, endpoint):
        info = HfApi(endpoint=endpoint, token=token).model_info(name, revision=revision or "main")
    if not info.sha:
        raise StoreError(f"{endpoint}: no commit id for {name}@{revision or 'main'}")
    return info.sha


def _download(
    store: ModelStore,
    name: str,
    commit: str,
    endpoint: str,
    token: str | None,
    patterns: list[str],
    staging: Path,
    progress: bool,
) -> Path:
    from huggingface_hub import HfApi, RepoFile, snapshot_download
    from huggingface_hub.utils import disable_progress_bars, filter_repo_objects

    with _hub_errors(name, commit, endpoint):
        tree = HfApi(endpoint=endpoint, token=token).list_repo_tree(name, revision=commit, recursive=True)
        listing = [f for f in tree if isinstance(f, RepoFile)]
    files = list(filter_repo_objects(listing, allow_patterns=patterns, key=lambda f: f.path))
    if not any(f.path in MODEL_MARKERS for f in files):
        paths = [f.path for f in listing]
        raise StoreError(
            f"{name}@{commit[:12]}: not a model, or not with --include {patterns}: none of "
            f"{', '.join(MODEL_MARKERS)} among the files; the repo has {', '.join(paths[:8]) or 'no files'}"
            + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
        )
    if patterns == list(DEFAULT_PATTERNS) and not any(
        fnmatch.fnmatch(f.path, "*.safetensors") for f in files
    ):
        raise StoreError(
            f"{name}@{commit[:12]}: no *.safetensors weights among the files matching {patterns}; "
            "if the model only has .bin weights, pull with --include '*.bin' plus the other patterns you need"
        )
    for leftover in staging.glob("*/blobs/*.incomplete"):  # cut off when its pull was killed: useless
        leftover.unlink(missing_ok=True)
    needed = sum(f.size for f in files) - _tree_bytes(staging)
    free = shutil.disk_usage(store.root).free
    if needed > free:
        raise StoreError(
            f"{name}: needs {needed / 2**30:.1f} GiB, {store.root} has {free / 2**30:.1f} GiB free"
        )
    with (
        _hub_errors(name, commit, endpoint),
        disable_progress_bars() if not progress else contextlib.nullcontext(),
    ):
        path = snapshot_download(
            name, revision=commit, cache_dir=staging, allow_patterns=patterns, endpoint=endpoint, token=token
        )
    snapshot = Path(path)
    _check_against_listing(snapshot, files, name)
    return snapshot


def _tree_bytes(path: Path) -> int:
    return layout.tree_size(path) if path.exists() else 0


def _check_against_listing(snapshot: Path, files: list, name: str) -> None:
    """Compare each downloaded file with what the Hub says it is, before it can enter the store."""
    lfs = {snapshot / f.path: f.lfs.sha256 for f in files if f.lfs is not None}
    digests = hash_files(lfs)
    bad = [
        str(p.relative_to(snapshot))
        for p, d in digests.items()
        if isinstance(d, OSError) or d.sha256 != lfs[p]
    ]
    for f in files:
        path = snapshot / f.path
        if f.lfs is None and (not path.is_file() or git_blob_sha1(path) != f.blob_id):
            bad.append(f.path)
    if bad:
        for rel in bad:  # so that the next pull downloads them again
            target = snapshot / rel
            if target.exists():
                os.unlink(target.resolve())
            target.unlink(missing_ok=True)
        raise StoreError(f"{name}: downloaded files do not match the Hub's listing: {', '.join(sorted(bad))}")


@contextlib.contextmanager
def _hub_errors(name: str, revision: str | None, endpoint: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into messages that say what to do."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{name}@{revision or 'main'} at {endpoint}"
    try:
        yield
    except GatedRepoError:
        raise StoreError(f"{where} is gated: accept its terms on the Hub and provide a token") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(
            f"{where}: no such model (or it is private and no valid token was given)"
        ) from None
    except RevisionNotFoundError:
        raise StoreError(f"{where}: no such revision (branch, tag or commit)") from None
    except (httpx2.TransportError, LocalEntryNotFoundError) as exc:
        raise StoreError(f"{where}: cannot reach the Hub ({exc}); set --endpoint to a mirror") from None
    except HfHubHTTPError as exc:
        raise StoreError(f"{where}: {exc}") from None
