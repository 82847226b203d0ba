"""models checks: store ownership and mode through fake stats; pins through a fake store."""

from __future__ import annotations

import stat
from dataclasses import dataclass

from verify_fakes import FakeFs, make_ctx, run_check

from llmlab.verify.result import Status
from llmlab.verify.sources import PathInfo


def store_fs(mode: int, gid: int = 1500) -> FakeFs:
    info = PathInfo(is_dir=True, uid=0, gid=gid, mode=stat.S_IFDIR | mode)
    return FakeFs(paths={"/srv/models": info}, groups={"llmlab": 1500})


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


@dataclass
class Verdict:
    ok: bool
    problems: list[str]


class FakeStore:
    def __init__(self, models: dict[str, Verdict]) -> None:
        self.models = models

    def verify(self, name: str) -> Verdict:
        if name not in self.models:
            raise KeyError(name)
        return self.models[name]


def test_pins_are_delegated_to_the_model_store():
    config = {"verify": {"model_pins": ["org/good", "org/bad", "org/gone"]}}
    store = FakeStore(
        {"org/good": Verdict(True, []), "org/bad": Verdict(False, ["model.safetensors: sha256 mismatch"])}
    )
    result = run_check("models.pins", make_ctx(config, models=lambda: store))
    assert result.status == Status.FAIL
    assert result.value == "1/3 intact"
    assert (
        "org/bad: ['model.safetensors: sha256 mismatch']" in result.message
        and "org/gone: missing" in result.message
    )


def test_pins_skip_when_none_are_configured_or_the_store_package_is_absent():
    assert run_check("models.pins", make_ctx()).status == Status.SKIP
    absent = run_check("models.pins", make_ctx({"verify": {"model_pins": ["org/x"]}}, models=lambda: None))
    assert absent.status == Status.SKIP and "llmlab.models" in absent.message
