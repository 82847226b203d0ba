"""models checks: store ownership and mode through fake stats; pins through a fake store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from verify_fakes import FakeFs, make_ctx, run_check

from llmlab.models.store import ModelStore
from llmlab.verify.result import Status
from llmlab.verify.sources import PathInfo


def store_fs(mode: int, gid: int = 1500) -> FakeFs:
    info = PathInfo(is_dir=True, uid=0, gid=gid, mode=stat.S_IFDIR | mode)
    return FakeFs(paths={"/models": info}, groups={"llmlab": 1500})


def test_store_must_belong_to_the_lab_group_be_group_writable_and_setgid():
    assert run_check("models.store_writable", make_ctx(fs=store_fs(0o2775))).status == Status.OK
    assert run_check("models.store_writable", make_ctx(fs=store_fs(0o2755))).status == Status.FAIL
    assert run_check("models.store_writable", make_ctx(fs=store_fs(0o2775, gid=0))).status == Status.FAIL
    no_sgid = run_check("models.store_writable", make_ctx(fs=store_fs(0o0775)))
    assert no_sgid.status == Status.WARN and "chmod g+s" in no_sgid.hint


def test_missing_store_or_group_fails_unless_no_store_is_expected():
    assert run_check("models.store_writable", make_ctx(fs=FakeFs())).status == Status.FAIL
    no_group = FakeFs(paths=store_fs(0o2775).paths)
    assert (
        "group 'llmlab' does not exist" in run_check("models.store_writable", make_ctx(fs=no_group)).message
    )
    off = make_ctx({"verify": {"expect": {"model_store": False}}}, fs=FakeFs())
    assert run_check("models.store_writable", off).status == Status.SKIP


@pytest.fixture
def store_with_two_models(tmp_path: Path) -> ModelStore:
    """A real model store (llmlab.models) holding two small models."""
    store = ModelStore(tmp_path / "store", group=None)
    for name in ("org/good", "org/bad"):
        src = tmp_path / name.replace("/", "-")
        src.mkdir()
        (src / "config.json").write_text('{"model_type": "llama"}')
        (src / "model.safetensors").write_bytes(os.urandom(4096))
        store.add_local(src, name)
    return store


def pins_ctx(store: ModelStore, level: int) -> object:
    config = {"verify": {"model_pins": ["org/good", "org/bad", "org/gone"]}}
    return make_ctx(config, level=level, models=lambda: store)


def test_pins_missing_or_damaged_fail_through_the_real_model_store(store_with_two_models):
    store = store_with_two_models
    result = run_check("models.pins", pins_ctx(store, level=1))
    assert result.status == Status.FAIL and result.value == "2/3 intact"
    assert result.message.startswith("org/gone: not in the store")
    # Same size, different bytes: only the re-hash of level 2 can tell.
    weights = store.resolve("org/bad") / "model.safetensors"
    weights.resolve().chmod(0o644)
    weights.resolve().write_bytes(os.urandom(4096))
    assert "org/bad" not in run_check("models.pins", pins_ctx(store, level=1)).message
    deep = run_check("models.pins", pins_ctx(store, level=2))
    assert deep.value == "1/3 intact" and "org/bad: corrupt: model.safetensors" in deep.message
    # A truncated file is caught at level 1 already.
    weights.resolve().write_bytes(b"short")
    assert "org/bad: corrupt: model.safetensors" in run_check("models.pins", pins_ctx(store, level=1)).message


def test_pins_pass_when_every_pinned_model_is_intact(store_with_two_models):
    config = {"verify": {"model_pins": ["org/good", "org/bad"]}}
    result = run_check("models.pins", make_ctx(config, level=2, models=lambda: store_with_two_models))
    assert result.status == Status.OK and result.value == "2/2 intact"


def test_pins_skip_when_none_are_configured_or_the_store_package_is_absent():
    assert run_check("models.pins", make_ctx()).status == Status.SKIP
    absent = run_check("models.pins", make_ctx({"verify": {"model_pins": ["org/x"]}}, models=lambda: None))
    assert absent.status == Status.SKIP and "llmlab.models" in absent.message
