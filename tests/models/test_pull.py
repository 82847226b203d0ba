"""`pull` through huggingface_hub's real download code, against a local stand-in of the Hub's HTTP API."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmlab.models.pull import pull, read_token
from llmlab.models.store import ModelNotFound, ModelStore, StoreError

from .helpers import llmlab_process
from .hub_server import FakeHub, HubServer

WEIGHTS = os.urandom(300_000)
FILES = {
    "config.json": b'{"model_type": "llama"}',
    "tokenizer.json": b'{"version": "1.0"}',
    "model.safetensors": WEIGHTS,
    "pytorch_model.bin": b"legacy weights the default patterns skip",
    "README.md": b"# card",
}


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


def _gets(hub: FakeHub) -> list[str]:
    return [path for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path]


def test_pull_stores_the_pinned_commit_and_only_the_needed_files(store: ModelStore, hub: FakeHub) -> None:
    commit = hub.add("org/tiny", FILES)
    with HubServer(hub) as server:
        result = pull(store, "org/tiny", endpoint=server.url, progress=False)
        assert result.changed and result.commit == commit
        assert sorted(p.name for p in result.path.iterdir()) == [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
        ]
        assert (store.repo_dir("org/tiny") / "refs" / "main").read_text() == commit
        assert store.manifest("org/tiny").source == f"hub:{server.url}"
        assert store.verify("org/tiny").ok
        assert list((store.repo_dir("org/tiny") / ".incoming").iterdir()) == []  # download cache removed

        hub.requests.clear()
        again = pull(store, "org/tiny", endpoint=server.url, progress=False)
        assert not again.changed and _gets(hub) == []  # asked for the commit, downloaded nothing
        hub.requests.clear()
        assert not pull(store, f"org/tiny@{commit}", endpoint=server.url, progress=False).changed
        assert hub.requests == []  # a commit id needs no network at all when present


def test_pull_a_tag_and_include_patterns(store: ModelStore, hub: FakeHub) -> None:
    hub.add("org/tiny", FILES)
    v2 = hub.add("org/tiny", {**FILES, "config.json": b'{"model_type": "llama", "v": 2}'}, ref="v2")
    with HubServer(hub) as server:
        result = pull(store, "org/tiny@v2", endpoint=server.url, patterns=["*.json", "*.bin"], progress=False)
    assert result.commit == v2
    assert sorted(p.name for p in result.path.iterdir()) == [
        "config.json",
        "pytorch_model.bin",
        "tokenizer.json",
    ]
    assert (
        store.resolve("org/tiny@v2") == store.resolve("org/tiny") == result.path
    )  # main set by the first add


def test_pull_errors_are_clear_and_leave_nothing(store: ModelStore, hub: FakeHub, tmp_path: Path) -> None:
    hub.add("org/tiny", FILES)
    hub.add("org/bin-only", {"config.json": b"{}", "pytorch_model.bin": b"w"})
    hub.add("org/dataset-like", {"README.md": b"# data", "train.safetensors": b"rows"})
    with HubServer(hub) as server:
        with pytest.raises(ModelNotFound, match=r"org/absent@main at http://127\.0\.0\.1:\d+: no such model"):
            pull(store, "org/absent", endpoint=server.url, progress=False)
        with pytest.raises(StoreError, match="no such revision"):
            pull(store, "org/tiny@v9", endpoint=server.url, progress=False)
        with pytest.raises(StoreError, match=r"no \*\.safetensors weights.*--include '\*\.bin'"):
            pull(store, "org/bin-only", endpoint=server.url, progress=False)
        with pytest.raises(StoreError, match=r"not a model.*none of config\.json.*has README\.md, train\."):
            pull(store, "org/dataset-like", endpoint=server.url, progress=False)
    with pytest.raises(StoreError, match="cannot reach the Hub"):
        pull(store, "org/tiny", endpoint="http://127.0.0.1:9", progress=False)
    assert store.list_models() == []
    token = tmp_path / "token"
    token.write_text("hf_secret\n")
    os.chmod(token, 0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        read_token(token)
    os.chmod(token, 0o600)
    assert read_token(token) == "hf_secret" and read_token(tmp_path / "absent") is None


def test_pull_refuses_files_that_differ_from_the_hub_listing(store: ModelStore, hub: FakeHub) -> None:
    commit = hub.add("org/tiny", FILES)
    with HubServer(hub) as server:
        # The listing (and ETag) say one thing, the bytes another: a broken mirror or a man in the middle.
        hub.repos["org/tiny"].commits[commit] = {**FILES, "tokenizer.json": b'{"version": "6.6"}'}
        hub.listing_override = {"tokenizer.json": FILES["tokenizer.json"]}
        with pytest.raises(StoreError, match=r"do not match the Hub's listing: tokenizer\.json"):
            pull(store, "org/tiny", endpoint=server.url, progress=False)
    assert store.list_models() == []


def test_pull_refuses_early_when_the_disk_is_too_small(store: ModelStore, hub: FakeHub, monkeypatch) -> None:
    import shutil

    hub.add("org/tiny", FILES)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with HubServer(hub) as server, pytest.raises(StoreError, match=r"needs 0\.0 GiB, .* has 0\.0 GiB free"):
        pull(store, "org/tiny", endpoint=server.url, progress=False)
    assert _gets(hub) == []


def test_kill_9_mid_pull_then_resume_file_by_file(store: ModelStore, hub: FakeHub) -> None:
    small, big = os.urandom(256 << 10), os.urandom(4 << 20)
    files = {
        "config.json": b"{}",
        "model-00001-of-00002.safetensors": small,
        "model-00002-of-00002.safetensors": big,
    }
    commit = hub.add("org/big", files)
    hub.seconds_per_mib = 0.5  # the big shard takes ~2 s: time to kill the client in the middle of it
    with HubServer(hub) as server:
        args = ("models", "pull", "org/big", "--endpoint", server.url, "--store", str(store.root), "--quiet")
        child = llmlab_process(*args)
        incoming = store.repo_dir("org/big") / ".incoming"
        small_blob = f"hub-*/models--org--big/blobs/{hashlib.sha256(small).hexdigest()}"
        deadline = time.monotonic() + 60
        while not (any(incoming.glob(small_blob)) and any(incoming.glob("hub-*/*/blobs/*.incomplete"))):
            assert time.monotonic() < deadline and child.poll() is None, child.communicate()
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert store.list_models() == []
        with pytest.raises(ModelNotFound):
            store.resolve("org/big")
        assert not (store.repo_dir("org/big") / "snapshots" / commit).exists()

        hub.seconds_per_mib = 0
        hub.requests.clear()
        result = pull(store, "org/big", endpoint=server.url, progress=False)
    assert result.commit == commit and store.verify("org/big").ok
    fetched = [p.rsplit("/", 1)[1] for p in _gets(hub)]
    assert "model-00001-of-00002.safetensors" not in fetched  # finished before the kill: kept
    assert fetched.count("model-00002-of-00002.safetensors") == 1
    assert list(incoming.iterdir()) == []  # the adopted download cache is gone after the add


# A pull in a child process with the per-model lock made a no-op, as flock is on some NFS and Lustre mounts.
PULL_WITHOUT_LOCK = """
import contextlib, sys
from pathlib import Path
from llmlab.models.pull import pull
from llmlab.models.store import ModelStore

ModelStore.lock = lambda self, name, timeout=None: contextlib.nullcontext()
store = ModelStore(Path(sys.argv[1]), group=None)
print(pull(store, "org/tiny", endpoint=sys.argv[2], progress=False).changed)
"""


@pytest.mark.parametrize("lock", [True, False])
def test_two_processes_pulling_at_once_both_succeed(store: ModelStore, hub: FakeHub, lock: bool) -> None:
    commit = hub.add("org/tiny", {"config.json": b"{}", "model.safetensors": os.urandom(1 << 20)})
    # Without the lock both must overlap for the test to mean anything: a slow download (4 s) covers the
    # start-up skew of the two children on a loaded machine.
    hub.seconds_per_mib = 0.5 if lock else 4
    with HubServer(hub) as server:
        if lock:
            args = (
                "models",
                "pull",
                "org/tiny",
                "--endpoint",
                server.url,
                "--store",
                str(store.root),
                "--json",
            )
            children = [llmlab_process(*args, "--quiet") for _ in range(2)]
        else:
            command = [sys.executable, "-c", PULL_WITHOUT_LOCK, str(store.root), server.url]
            children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                        for _ in range(2)]  # fmt: skip
        outputs = [child.communicate(timeout=60) for child in children]
    assert [c.returncode for c in children] == [0, 0], outputs
    assert [m.commit for m in store.list_models()] == [commit] and store.verify("org/tiny").ok
    assert list((store.repo_dir("org/tiny") / ".incoming").iterdir()) == []
    downloads = [p for m, p, _ in hub.requests if m == "GET" and p.endswith("model.safetensors")]
    if lock:  # one downloads; the other waits for the lock, then finds the model present
        assert sorted('"changed": true' in out for out, _ in outputs) == [False, True]
        assert len(downloads) == 1
    else:  # each downloads into its own cache; both publish the same content
        assert len(downloads) == 2
