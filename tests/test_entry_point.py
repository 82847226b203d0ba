"""The `llmlab` entry point: it installs, answers --version and --help, and exits with meaningful codes."""

import subprocess
import sys

from llmlab import __version__
from llmlab.cli import main


def run_llmlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmlab.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_version_names_the_installed_package():
    result = run_llmlab("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"llmlab {__version__}"
    assert __version__ != "0.0.0+unknown"


def test_help_lists_the_sub_commands():
    result = run_llmlab("--help")
    assert result.returncode == 0
    assert "usage: llmlab" in result.stdout
    for command in ("verify", "models", "train", "plan", "generate"):
        assert f"    {command} " in result.stdout, command


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: llmlab" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error():
    result = run_llmlab("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
