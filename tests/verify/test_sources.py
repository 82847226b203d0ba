"""The real data sources on this machine, and how they parse journald, /dev/kmsg and os-release."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from verify_fakes import FakeRunner

from llmlab.verify.sources import (
    CommandResult,
    DockerSdk,
    LocalFilesystem,
    LocalHost,
    SubprocessRunner,
    read_kmsg,
    read_os_release,
)

JOURNAL = "\n".join(
    json.dumps(entry)
    for entry in (
        {"MESSAGE": "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus."},
        {"MESSAGE": list(b"bytes \xff message")},  # journald's encoding of non-UTF-8 text
        {"OTHER": "no message"},
    )
)


def test_kernel_log_comes_from_journald_json_with_the_window_passed_on():
    runner = FakeRunner({("journalctl",): CommandResult(0, JOURNAL + "\n")})
    messages = LocalHost(runner).kernel_log(since=1700000000.5)
    assert messages == [
        "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.",
        "bytes \ufffd message",
    ]
    assert runner.calls[0][-1] == "--since=@1700000000"


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK | os.W_OK), reason="/dev/kmsg is root's")
def test_without_journald_the_kernel_ring_buffer_is_read():
    # A message of our own: the boot messages leave the ring buffer once a long-running host has logged more.
    marker = f"llmlab test marker {uuid.uuid4().hex}"
    with open("/dev/kmsg", "w", encoding="utf-8") as kmsg:
        kmsg.write(marker + "\n")
    assert marker in read_kmsg(None)
    assert read_kmsg(since_uptime=1e12) == []
    assert read_kmsg(None, path="/nonexistent/kmsg") is None
    assert marker in LocalHost(FakeRunner()).kernel_log(None)


def test_subprocess_runner_reports_missing_programs_and_timeouts_as_exit_codes():
    runner = SubprocessRunner()
    assert runner.run(["llmlab-no-such-program"], timeout=5).returncode == 127
    assert runner.run(["sleep", "5"], timeout=0.2).returncode == 124
    assert runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=5) == CommandResult(
        3, "out\n", "err\n"
    )


def test_filesystem_stats_and_groups(tmp_path):
    fs = LocalFilesystem()
    usage = fs.usage(tmp_path)
    assert usage.total_bytes > 0 and 0 <= usage.used_percent <= 100
    info = fs.path_info(tmp_path)
    assert info.is_dir and info.gid == os.stat(tmp_path).st_gid
    assert fs.path_info(tmp_path / "absent") is None
    assert fs.group_id("root") == 0 and fs.group_id("llmlab-no-such-group") is None


def test_host_facts_and_clock_state_on_this_machine():
    host = LocalHost(SubprocessRunner())
    facts = host.facts()
    assert facts.cpu_count == os.cpu_count() and facts.memory_bytes > 0 and facts.kernel == os.uname().release
    assert host.clock_synchronized() in (True, False)  # adjtimex answers on Linux; which one depends on NTP


def test_os_release_parsing(tmp_path):
    path = tmp_path / "os-release"
    path.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n# comment\nID=debian\nVERSION_ID="12"\n')
    assert read_os_release(path) == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
        "ID": "debian",
        "VERSION_ID": "12",
    }
    assert read_os_release(tmp_path / "absent") == {}


def test_without_a_socket_docker_is_not_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr("llmlab.verify.sources.DOCKER_SOCKET", str(tmp_path / "docker.sock"))
    state = DockerSdk().state(timeout=3)
    assert not state.answering and "no daemon socket" in state.error


def test_docker_state_is_an_answer_either_way():
    """dockerd may or may not run here: either it answers with a version, or the state says why not."""
    state = DockerSdk().state(timeout=3)
    assert (state.answering and state.version) or (not state.answering and state.error)
