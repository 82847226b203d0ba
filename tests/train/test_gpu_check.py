"""benchmarks/gpu_check.sh, the prepared GPU check, on a CPU: the script parses, and a dry run of the tiny
size writes its JSON (configs and plans for every method; the training itself needs the GPU host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def test_script_parses_and_documents_its_wheel_dir() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shown = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "pip download --dest wheels" in shown and "--dry-run" in shown
    wrong = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown argument --bogus" in wrong.stderr


@pytest.mark.slow
def test_dry_run_of_the_tiny_size_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    command = ["bash", str(SCRIPT), "--size", "tiny", "--verify-level", "0", "--dry-run", "--out", str(out)]
    result = subprocess.run(
        [*command, "--work", str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["schema"] == "llmlab.gpu_check/1" and report["size"] == "tiny"
    for method in ("lora", "full"):
        run = report["runs"][method]
        assert run["skipped"] == "--dry-run" and run["planned_gib"] > 1  # plan's 1 GiB runtime overhead
    qlora = report["runs"]["qlora"]["skipped"]
    assert qlora == "--dry-run" or "bitsandbytes is not installed" in qlora
