"""Faults injected for real on this machine, caught by the real data sources (and by the CLI itself)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import yaml

from llmlab.config import HostConfig
from llmlab.verify.context import VerifyContext, real_sources
from llmlab.verify.result import REGISTRY, Status


def run_real(check_id: str, config: dict) -> object:
    import llmlab.verify.checks  # noqa: F401 - registers the catalogue

    host_config = HostConfig.model_validate(config)
    ctx = VerifyContext(host_config, real_sources(host_config))
    (entry,) = [c for c in REGISTRY if c.id == check_id]
    return entry.func(ctx)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root, as on this machine's CI)."""
    mount = tmp_path / "store"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(path: Path, percent: float) -> None:
    st = os.statvfs(path)
    (path / "ballast").write_bytes(b"\0" * int(st.f_blocks * st.f_frsize * percent / 100))


def test_a_filesystem_filled_past_the_threshold_fails(small_fs):
    config = {"model_store": str(small_fs)}
    assert run_real("system.disk_model_store", config).status == Status.OK
    fill(small_fs, 90)
    result = run_real("system.disk_model_store", config)
    assert result.status == Status.FAIL
    assert result.value >= 83


@pytest.fixture
def open_port() -> Iterator[int]:
    """A listener on all interfaces, as a forgotten debug server would be."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_listener_on_a_disallowed_port_fails(open_port):
    result = run_real("services.listening_ports", {"verify": {"allowed_ports": [22]}})
    assert result.status == Status.FAIL
    me = psutil.Process()
    assert f"0.0.0.0:{open_port} ({me.name()} pid {me.pid})" in result.message
    allowed = run_real("services.listening_ports", {"verify": {"allowed_ports": [22, open_port]}})
    assert f":{open_port} " not in allowed.message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_jupyter_url_that_does_not_answer_fails():
    config = {"verify": {"expect": {"jupyter": True}, "jupyter_url": f"http://127.0.0.1:{free_port()}/"}}
    result = run_real("services.jupyter", config)
    assert result.status == Status.FAIL and "does not answer" in result.message


class FakeJupyter(BaseHTTPRequestHandler):
    """Answers like a Jupyter server: `mode` is open (200), token (403) or login (302 to /login)."""

    mode = "open"

    def do_GET(self) -> None:
        if self.mode == "open" or not self.path.startswith("/api/"):
            self.send_response(200)
        elif self.mode == "token":
            self.send_response(403)
        else:
            self.send_response(302)
            self.send_header("Location", f"/login?next={self.path}")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def jupyter_server() -> Iterator[tuple[str, type[FakeJupyter]]]:
    handler = type("Handler", (FakeJupyter,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("mode", "status"), [("open", Status.FAIL), ("token", Status.OK), ("login", Status.OK)]
)
def test_jupyter_that_answers_without_a_token_fails(jupyter_server, mode, status):
    url, handler = jupyter_server
    handler.mode = mode
    config = {"verify": {"expect": {"jupyter": True}, "jupyter_url": url}}
    assert run_real("services.jupyter", config).status == Status.OK
    assert run_real("services.jupyter_auth", config).status == status


def test_the_cli_catches_the_injected_faults_and_writes_json_and_metrics(
    tmp_path, small_fs, open_port, jupyter_server
):
    url, handler = jupyter_server
    handler.mode = "open"
    fill(small_fs, 90)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_store": str(small_fs),
                "verify": {"expect": {"jupyter": True}, "jupyter_url": url, "allowed_ports": [22]},
            }
        )
    )
    prom = tmp_path / "llmlab_verify.prom"
    done = subprocess.run(
        [sys.executable, "-m", "llmlab.cli", "--config", str(config), "verify", "--json",
         "--only", "services,system.disk_model_store", "--skip", "services.docker,services.firewall",
         "--prometheus-textfile", str(prom)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    report = json.loads(done.stdout)
    status = {c["id"]: c["status"] for c in report["checks"]}
    assert status == {
        "system.disk_model_store": "FAIL",
        "services.nvidia_runtime": "SKIP",
        "services.jupyter": "OK",
        "services.jupyter_auth": "FAIL",
        "services.jupyter_tls": "SKIP",
        "services.listening_ports": "FAIL",
    }
    assert report["summary"]["exit_code"] == 2 and report["summary"]["counts"]["FAIL"] == 3
    metrics = prom.read_text()
    assert (
        'llmlab_verify_check_status{check="services.jupyter_auth",category="services",status="fail"} 1'
        in metrics
    )
    assert "llmlab_verify_exit_code 2" in metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "llmlab_verify.prom", "store"]
