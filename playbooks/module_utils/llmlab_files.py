"""Writing a small root-owned file in the same module run that decides whether it changes.

The kit's modules (playbooks/library) each replace several tasks with one round trip to the host; this is
the part they share: the file is replaced atomically, only when its content differs, in check mode not at all.
"""

from __future__ import annotations

import os
import tempfile


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_file(module, path: str, content: str, mode: str = "0644") -> bool:
    """Make `path` hold `content`, root:root with `mode`, its directory created (0755); True if it changed."""
    changed = read_text(path) != content
    if changed and not module.check_mode:
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        module.atomic_move(temporary, path)
    if os.path.exists(path):
        attributes = module.load_file_common_arguments({"mode": mode, "owner": "root", "group": "root"}, path)
        changed = module.set_fs_attributes_if_different(attributes, changed)
    return changed
