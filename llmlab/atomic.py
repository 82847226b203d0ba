"""Writing a file so that readers see the old content or the new, never half of it.

One helper for the whole package: the model store's manifests and refs, verify's Prometheus textfile and a
training run's metrics.json all go through `atomic_write`. Its temp files are named by `temp_name`, which
records the writer's host and pid, so that whoever finds one later can tell whether its writer still runs.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path


def temp_name(prefix: str) -> str:
    """`prefix-host-pid-random`: whoever finds it later can tell whether its writer is still alive."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def local_owner(name: str) -> int | None:
    """The pid that made a temp entry, when it was a process of this host; None otherwise."""
    head = name.rpartition("-")[0]  # drop the random part
    head, _, pid = head.rpartition("-")
    if not pid.isdigit() or not head.endswith(f"-{socket.gethostname()}"):
        return None
    return int(pid)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write a temp file beside `path`, fsync, chmod, rename over `path`.

    The temp file starts with a dot and ends in its random part, so collectors that glob for a suffix
    (node_exporter's `*.prom`) or a name never read it half-written. Text is written as UTF-8.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{temp_name('tmp')}")
    try:
        with open(tmp, "xb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
