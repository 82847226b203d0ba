"""The `llmlab` entry point: it installs, answers --version and --help, and exits with meaningful codes."""

import json
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
    for command in ("verify", "models", "train", "plan"):
        assert f"    {command} " in result.stdout, command


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: llmlab" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error():
    result = run_llmlab("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_verify_honours_a_contract_beside_the_given_config(tmp_path):
    (tmp_path / "config.yaml").write_text("verify: {expect: {docker: false}}\n")
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "docker.yaml").write_text("verify: {expect: {docker: true}}\n")
    shown = run_llmlab("--config", str(tmp_path / "config.yaml"), "config", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["config"]["verify"]["expect"]["docker"] is True
    assert report["origins"]["verify.expect.docker"] == str(tmp_path / "config.d" / "docker.yaml")
    verify = run_llmlab(
        "--config", str(tmp_path / "config.yaml"), "verify", "--json", "--only", "services.docker"
    )
    [result] = json.loads(verify.stdout)["checks"]
    assert result["id"] == "services.docker"
    assert result["status"] != "SKIP"  # expected by the contract; config.yaml alone would SKIP it


def test_a_bad_verify_key_in_a_contract_exits_3_naming_the_file(tmp_path):
    (tmp_path / "config.yaml").write_text("{}\n")
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "docker.yaml").write_text("verify: {expect: {dokcer: true}}\n")
    for args in (["config"], ["verify", "--json"]):
        result = run_llmlab("--config", str(tmp_path / "config.yaml"), *args)
        assert result.returncode == 3
        assert f"{tmp_path}/config.d/docker.yaml: verify.expect.dokcer: unknown key" in result.stderr
