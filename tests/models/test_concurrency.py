"""Real processes: concurrent imports (with and without a working lock) and kill -9 in the middle of one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmlab.models.store import ModelNotFound, ModelStore

from .helpers import llmlab_process, make_model_dir

# Runs an import in a child process. `nolock` makes the per-model lock a no-op (as flock is on some NFS and
# Lustre mounts); `pause-at-blob` / `pause-at-manifest` stop the import at that step so the test can kill it.
CHILD = """
import contextlib, sys, time
from pathlib import Path
from llmlab import atomic
from llmlab.models import ingest
from llmlab.models.store import ModelStore

mode, store_root, source, marker = sys.argv[1:5]  # marker: a file, or the start time for nolock
store = ModelStore(Path(store_root), group=None)

def pause():
    Path(marker).write_text("paused")
    time.sleep(120)

if mode == "nolock":  # no mutual exclusion; both start together and go slowly, so their steps interleave
    ModelStore.lock = lambda self, name, timeout=None: contextlib.nullcontext()
    materialise = ingest._materialise
    def slow(*args):
        time.sleep(0.1)
        return materialise(*args)
    ingest._materialise = slow
    time.sleep(max(0.0, float(marker) - time.time()))
elif mode == "pause-at-blob":
    materialise, calls = ingest._materialise, []
    def slow(*args):
        how = materialise(*args)
        calls.append(1)
        if len(calls) == 3:  # two blobs are in blobs/, the third sits in .incoming/
            pause()
        return how
    ingest._materialise = slow
elif mode == "pause-at-manifest":
    write = atomic.atomic_write
    def slow_write(path, data, mode=0o664):
        if path.parent.name == "manifests":  # the snapshot is published, its manifest not yet written
            pause()
        write(path, data, mode)
    atomic.atomic_write = slow_write
store.import_model(Path(source), "org/tiny")
"""


def _child(mode: str, store: ModelStore, source: Path, marker: Path) -> subprocess.Popen:
    args = [sys.executable, "-c", CHILD, mode, str(store.root), str(source), str(marker)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_one_intact_copy(store: ModelStore) -> None:
    models = store.list_models()
    assert [m.name for m in models] == ["org/tiny"]
    assert store.verify("org/tiny").ok
    repo = store.repo_dir("org/tiny")
    assert [p.name for p in (repo / "snapshots").iterdir()] == [models[0].commit]
    assert len(list((repo / "blobs").iterdir())) == models[0].files  # no stray blobs


@pytest.mark.parametrize("mode", ["cli", "nolock"])
def test_two_processes_importing_at_once_both_succeed(store: ModelStore, tmp_path: Path, mode: str) -> None:
    source = make_model_dir(tmp_path / "src", weight_bytes=8 << 20)
    if mode == "cli":
        args = ("models", "import", str(source), "--name", "org/tiny", "--store", str(store.root), "--quiet")
        children = [llmlab_process(*args) for _ in range(2)]
    else:
        start_at = str(time.time() + 3)  # after both children have imported llmlab
        children = [_child("nolock", store, source, Path(start_at)) for _ in range(2)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [c.returncode for c in children] == [0, 0], outputs
    _assert_one_intact_copy(store)


@pytest.mark.parametrize("step", ["pause-at-blob", "pause-at-manifest"])
def test_kill_9_mid_import_leaves_nothing_present_and_the_next_run_cleans_up(
    store: ModelStore, tmp_path: Path, step: str
) -> None:
    source = make_model_dir(tmp_path / "src")
    marker = tmp_path / "marker"
    child = _child(step, store, source, marker)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()

    repo = store.repo_dir("org/tiny")
    leftover = repo / (".incoming" if step == "pause-at-blob" else "snapshots")
    assert any(leftover.iterdir())  # the killed run's temp blob, or its snapshot without a manifest
    assert store.list_models() == []
    with pytest.raises(ModelNotFound):
        store.resolve("org/tiny")
    assert not (repo / "refs" / "main").exists()  # transformers cannot find a half-made model either

    result = store.add_local(source, "org/tiny")
    assert result.changed
    _assert_one_intact_copy(store)
    assert list((repo / ".incoming").iterdir()) == []  # the dead process's temp files are gone
