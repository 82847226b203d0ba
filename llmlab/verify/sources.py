"""Data sources the checks read, each behind a small interface so tests can feed them.

The real implementations read the machine: statvfs, psutil, /etc/os-release, the kernel log (journald's JSON,
else /dev/kmsg records), adjtimex(2), urllib for HTTP, the docker SDK. Nothing here decides OK or FAIL.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import json
import os
import platform
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str = ""


class CommandRunner(Protocol):
    def run(self, argv: Sequence[str], timeout: float) -> CommandResult: ...


class SubprocessRunner:
    """Runs a command without a shell; a missing program is returncode 127, a timeout 124 (as coreutils)."""

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            return CommandResult(127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return CommandResult(124, "", f"{argv[0]}: timed out after {timeout:g} s")
        return CommandResult(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class FsUsage:
    total_bytes: int
    used_bytes: int
    avail_bytes: int
    inodes_total: int
    inodes_used: int

    @property
    def used_percent(self) -> float:
        # As df computes Use%: blocks reserved for root count as unavailable.
        usable = self.used_bytes + self.avail_bytes
        return 100.0 * self.used_bytes / usable if usable else 0.0

    @property
    def inodes_percent(self) -> float | None:
        # Some filesystems (btrfs, some FUSE) report no inode limit.
        return 100.0 * self.inodes_used / self.inodes_total if self.inodes_total else None


@dataclass(frozen=True)
class PathInfo:
    is_dir: bool
    uid: int
    gid: int
    mode: int


class Filesystem(Protocol):
    def usage(self, path: Path) -> FsUsage: ...
    def path_info(self, path: Path) -> PathInfo | None: ...
    def group_id(self, name: str) -> int | None: ...


class LocalFilesystem:
    def usage(self, path: Path) -> FsUsage:
        st = os.statvfs(path)
        return FsUsage(
            total_bytes=st.f_blocks * st.f_frsize,
            used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
            avail_bytes=st.f_bavail * st.f_frsize,
            inodes_total=st.f_files,
            inodes_used=st.f_files - st.f_ffree,
        )

    def path_info(self, path: Path) -> PathInfo | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return PathInfo(is_dir=path.is_dir(), uid=st.st_uid, gid=st.st_gid, mode=st.st_mode)

    def group_id(self, name: str) -> int | None:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None


@dataclass(frozen=True)
class Listener:
    ip: str
    port: int
    pid: int | None = None
    process: str = ""


@dataclass(frozen=True)
class HttpAnswer:
    status: int | None  # None: no HTTP answer at all (refused, timed out, TLS failure)
    location: str = ""
    error: str = ""


class Network(Protocol):
    def listeners(self) -> list[Listener]: ...
    def http_get(
        self, url: str, timeout: float, verify_tls: bool, ca_file: Path | None = None
    ) -> HttpAnswer: ...
    def peer_certificate(self, url: str, timeout: float) -> bytes | str: ...  # DER, or why not


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect to the login page is the answer we want to see, not follow


class LocalNetwork:
    def listeners(self) -> list[Listener]:
        import psutil

        found = []
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status != psutil.CONN_LISTEN or not conn.laddr:
                continue
            name = ""
            if conn.pid:
                try:
                    name = psutil.Process(conn.pid).name()
                except psutil.Error:
                    name = ""
            found.append(Listener(conn.laddr.ip, conn.laddr.port, conn.pid, name))
        return found

    def http_get(self, url: str, timeout: float, verify_tls: bool, ca_file: Path | None = None) -> HttpAnswer:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if not verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=context))
        try:
            with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
                return HttpAnswer(resp.status, resp.headers.get("Location", ""))
        except urllib.error.HTTPError as exc:
            return HttpAnswer(exc.code, exc.headers.get("Location", "") if exc.headers else "")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return HttpAnswer(None, error=str(reason))

    def peer_certificate(self, url: str, timeout: float) -> bytes | str:
        """The DER certificate the server at an https:// URL presents (unverified: the caller compares it)."""
        parts = urllib.parse.urlsplit(url)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as raw,
                context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
            ):
                return tls.getpeercert(binary_form=True) or "no certificate presented"
        except (OSError, ssl.SSLError) as exc:
            return str(exc)


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    os_id: str
    os_version_id: str
    os_name: str
    kernel: str
    cpu_count: int
    memory_bytes: int
    swap_total_bytes: int
    swap_used_bytes: int
    boot_time: float


@dataclass(frozen=True)
class KernelState:
    reboot_flag: bool  # /var/run/reboot-required (Debian/Ubuntu's update-notifier convention)
    running: str
    installed: list[str] = field(default_factory=list)


class Host(Protocol):
    def facts(self) -> HostFacts: ...
    def clock_synchronized(self) -> bool | None: ...
    def kernel_state(self) -> KernelState: ...
    def kernel_log(self, since: float | None) -> list[str] | None: ...  # None: unreadable
    def loadable_library(self, names: list[str]) -> str | None: ...  # the first name that loads


def read_os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    values = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return values
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


# adjtimex(2) returns TIME_ERROR while the kernel's clock is marked unsynchronised (what timedatectl reports).
_TIME_ERROR = 5


class LocalHost:
    def __init__(self, runner: CommandRunner) -> None:
        self._runner = runner

    def facts(self) -> HostFacts:
        import psutil

        release = read_os_release()
        swap = psutil.swap_memory()
        return HostFacts(
            hostname=socket.gethostname(),
            os_id=release.get("ID", platform.system().lower()),
            os_version_id=release.get("VERSION_ID", ""),
            os_name=release.get("PRETTY_NAME", platform.platform()),
            kernel=platform.release(),
            cpu_count=psutil.cpu_count(logical=True) or 0,
            memory_bytes=psutil.virtual_memory().total,
            swap_total_bytes=swap.total,
            swap_used_bytes=swap.used,
            boot_time=psutil.boot_time(),
        )

    def loadable_library(self, names: list[str]) -> str | None:
        for name in names:
            try:
                ctypes.CDLL(name)
            except OSError:
                continue
            return name
        return None

    def clock_synchronized(self) -> bool | None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            state = libc.adjtimex(ctypes.create_string_buffer(512))  # modes=0: read only
        except (OSError, AttributeError):
            return None
        return None if state < 0 else state != _TIME_ERROR

    def kernel_state(self) -> KernelState:
        installed = sorted(p.name.removeprefix("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*"))
        return KernelState(Path("/var/run/reboot-required").exists(), platform.release(), installed)

    def kernel_log(self, since: float | None) -> list[str] | None:
        """Kernel messages of this boot (or since an epoch time): journald if it has them, else /dev/kmsg."""
        argv = ["journalctl", "-k", "-b", "-o", "json", "--no-pager"]
        if since is not None:
            argv.append(f"--since=@{int(since)}")
        result = self._runner.run(argv, timeout=30)
        if result.returncode == 0 and result.stdout.strip():
            return [msg for line in result.stdout.splitlines() if (msg := _journal_message(line))]
        boot = self.facts().boot_time
        return read_kmsg(None if since is None else since - boot)


def _journal_message(line: str) -> str:
    try:
        message = json.loads(line).get("MESSAGE", "")
    except json.JSONDecodeError:
        return ""
    if isinstance(message, list):  # journald encodes non-UTF-8 messages as a byte array
        return bytes(message).decode("utf-8", "replace")
    return message if isinstance(message, str) else ""


def read_kmsg(since_uptime: float | None, path: str = "/dev/kmsg") -> list[str] | None:
    """Kernel ring buffer records (`prio,seq,usec,flags;message`, one per read); None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    messages = []
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # the record was overwritten while we read: go on
                    continue
                break
            header, _, message = record.partition(";")
            parts = header.split(",")
            if since_uptime is not None and len(parts) > 2 and int(parts[2]) / 1e6 < since_uptime:
                continue
            messages.append(message.split("\n", 1)[0])
    finally:
        os.close(fd)
    return messages


_KERNEL_VERSION = re.compile(r"^(\d+(?:[.-]\d+)*)(.*)$")


def kernel_sort_key(release: str) -> tuple[str, tuple[int, ...]]:
    """(flavour, numeric version): '6.1.0-18-amd64' -> ('amd64', (6, 1, 0, 18)). Compare within a flavour."""
    match = _KERNEL_VERSION.match(release)
    if not match:
        return (release, ())
    numbers = tuple(int(n) for n in re.split(r"[.-]", match.group(1)))
    flavour = re.split(r"[.-]", match.group(2))[-1] if match.group(2) else ""
    return (flavour, numbers)


@dataclass(frozen=True)
class DockerState:
    answering: bool
    version: str = ""
    runtimes: tuple[str, ...] = ()
    error: str = ""


class Docker(Protocol):
    def state(self, timeout: float) -> DockerState: ...


DOCKER_SOCKET = "/var/run/docker.sock"


class DockerSdk:
    def state(self, timeout: float) -> DockerState:
        if "DOCKER_HOST" not in os.environ and not Path(DOCKER_SOCKET).exists():
            return DockerState(False, error=f"no daemon socket at {DOCKER_SOCKET} (and DOCKER_HOST is unset)")
        try:
            import docker
            from docker.errors import DockerException
        except ImportError as exc:
            return DockerState(False, error=f"docker SDK not installed: {exc}")
        try:
            client = docker.from_env(timeout=max(1, int(timeout)))
            try:
                version = client.version().get("Version", "")
                runtimes = tuple(sorted((client.info().get("Runtimes") or {}).keys()))
            finally:
                client.close()
        except (DockerException, OSError) as exc:
            return DockerState(False, error=str(exc).splitlines()[0][:200])
        return DockerState(True, version, runtimes)
