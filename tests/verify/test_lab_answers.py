"""The lab python's slow answers (the probe, `pip check`) are reused while the environment is unchanged,
and only then."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from verify_fakes import FakeRunner, cuda_torch, lab_probe_output, make_ctx, run_check

from llmlab.verify.lab import lab_report
from llmlab.verify.lab_answers import LabAnswers
from llmlab.verify.result import Status
from llmlab.verify.sources import CommandResult


def lab_env(root: Path) -> Path:
    """A lab environment's layout: bin/python and one installed distribution."""
    site = root / "lib" / "python3.11" / "site-packages"
    (site / "torch-2.6.0.dist-info").mkdir(parents=True)
    (root / "bin").mkdir()
    python = root / "bin" / "python"
    python.write_text("#!/bin/sh\n", encoding="utf-8")
    return python


def probe_runs(python: Path, torch_version: str = "2.6.0") -> tuple[str, int]:
    """One verify run's probe: the torch version it reports and how often the lab python was started."""
    probe = lab_probe_output(cuda_torch(count=0, cuda=None, version=torch_version))
    runner = FakeRunner({(str(python), "-c"): probe})
    ctx = make_ctx({"verify": {"lab_python": str(python)}}, runner=runner, lab_answers=LabAnswers())
    report = lab_report(ctx)
    assert report.torch is not None
    return report.torch["version"], len(runner.calls)


def test_an_unchanged_environment_is_not_probed_again(tmp_path: Path):
    python = lab_env(tmp_path / "env")
    assert probe_runs(python) == ("2.6.0", 1)
    assert probe_runs(python, torch_version="9.9.9") == ("2.6.0", 0)  # the kept answer, no probe


def test_an_installed_upgraded_or_removed_distribution_is_probed_again(tmp_path: Path):
    python = lab_env(tmp_path / "env")
    site = python.parent.parent / "lib" / "python3.11" / "site-packages"
    assert probe_runs(python)[1] == 1
    (site / "peft-0.17.0.dist-info").mkdir()  # pip install peft
    assert probe_runs(python, "2.7.0") == ("2.7.0", 1)
    (site / "torch-2.6.0.dist-info").rename(site / "torch-2.7.0.dist-info")  # pip install -U torch
    assert probe_runs(python, "2.7.1") == ("2.7.1", 1)
    (site / "peft-0.17.0.dist-info").rmdir()  # pip uninstall peft
    assert probe_runs(python, "2.7.2") == ("2.7.2", 1)
    assert probe_runs(python, "0") == ("2.7.2", 0)


def test_pip_check_is_kept_per_environment_and_a_broken_one_stays_broken(tmp_path: Path):
    python = lab_env(tmp_path / "env")
    broken = CommandResult(1, "peft 0.17.0 has requirement torch>=2.7, but you have torch 2.6.0.\n")

    def pip_check(answer: CommandResult) -> tuple[Status, int]:
        runner = FakeRunner({(str(python), "-m", "pip", "check"): answer})
        ctx = make_ctx({"verify": {"lab_python": str(python)}}, runner=runner, lab_answers=LabAnswers())
        return run_check("software.pip_check", ctx).status, len(runner.calls)

    assert pip_check(broken) == (Status.FAIL, 1)
    assert pip_check(CommandResult(0, "")) == (Status.FAIL, 0)  # unchanged environment: still broken
    (python.parent.parent / "lib" / "python3.11" / "site-packages" / "torch-2.6.0.dist-info").rename(
        python.parent.parent / "lib" / "python3.11" / "site-packages" / "torch-2.7.0.dist-info"
    )
    assert pip_check(CommandResult(0, "")) == (Status.OK, 1)


def test_a_timeout_is_not_kept(tmp_path: Path):
    python = lab_env(tmp_path / "env")
    timeout = CommandResult(124, "", f"{python}: timed out after 30 s")
    runner = FakeRunner({(str(python), "-m", "pip", "check"): timeout})
    for _ in range(2):
        ctx = make_ctx({"verify": {"lab_python": str(python)}}, runner=runner, lab_answers=LabAnswers())
        run_check("software.pip_check", ctx)
    assert len(runner.calls) == 2


def test_another_driver_means_another_key(tmp_path: Path):
    python = lab_env(tmp_path / "env")
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15\n", encoding="utf-8")
    answers = LabAnswers(driver=driver)
    first = answers.key([str(python), "-c", "probe"])
    assert first is not None and first == answers.key([str(python), "-c", "probe"])
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  575.51.03\n", encoding="utf-8")
    assert answers.key([str(python), "-c", "probe"]) != first


def test_an_environment_that_cannot_be_listed_is_asked_every_time(tmp_path: Path):
    python = tmp_path / "bare" / "bin" / "python"  # no lib/python3*/site-packages
    assert LabAnswers().key([str(python), "-c", "probe"]) is None
    runner = FakeRunner({(str(python), "-c"): lab_probe_output(cuda_torch(count=0, cuda=None))})
    for _ in range(2):
        lab_report(make_ctx({"verify": {"lab_python": str(python)}}, runner=runner, lab_answers=LabAnswers()))
    assert len(runner.calls) == 2


def test_a_corrupt_cache_file_is_asked_over(tmp_path: Path):
    python = lab_env(tmp_path / "env")
    path = LabAnswers().path  # under the test's own XDG_CACHE_HOME (tests/conftest.py)
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    assert probe_runs(python) == ("2.6.0", 1)
    (kept,) = json.loads(path.read_text(encoding="utf-8")).values()
    assert kept["returncode"] == 0 and '"python": "3.11.2"' in kept["stdout"]


def test_level_1_never_imports_torch_in_the_verify_process(tmp_path: Path):
    """torch is imported by the lab python's probe (a child process), never by verify itself."""
    config = tmp_path / "config.yaml"
    config.write_text(f"lab_env: {Path(sys.executable).parent.parent}\nreports_dir: {tmp_path}\n", "utf-8")
    code = (
        "import sys; from llmlab.cli import main\n"
        f"try: main(['--config', {str(config)!r}, 'verify', '--level', '1', '--json'])\n"
        "except SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'verify imported torch'\n"
        "print('no torch', file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and "no torch" in done.stderr, done.stderr[-2000:]
    assert json.loads(done.stdout)["checks"][0]["id"]  # verify really ran and reported
