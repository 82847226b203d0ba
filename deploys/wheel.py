"""Build the llmlab wheel on the controller, and fingerprint what a wheel (or an installed copy) contains.

The one wheel build of the kit: `python -m deploys deploy` calls `build_wheel`, and the llmlab role's install
step runs `python -m deploys.wheel --source CHECKOUT --wheel-dir DIR`, which prints the wheel's path, version
and fingerprint as JSON (exit 2 and a message naming the problem when the checkout cannot be built). Only the
standard library is imported, so the controller's Python needs nothing beyond pip.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from deploys.inventory import DeployError

# Fixed zip timestamps: an unchanged checkout builds the same bytes, so a re-run (of deploy or of the llmlab
# role) uploads nothing.
SOURCE_DATE_EPOCH = "315532800"
# What the build reads from the checkout; copied to a scratch directory first, so a stale build/ tree or
# another build in the same checkout never leaks into the wheel.
SOURCE_FILES = ("pyproject.toml", "README.md", "setup.cfg", "setup.py", "MANIFEST.in", "LICENSE")
PACKAGE = "llmlab"

# Run on the host by the lab environment's python: the same fingerprint as `fingerprint_wheel`, computed
# from the installed distribution's RECORD (pip copies the wheel's hashes there), or "absent".
INSTALLED_FINGERPRINT_SCRIPT = "; ".join(
    [
        "import hashlib, importlib.metadata as m",
        "d = next(iter(m.distributions(name='llmlab')), None)",
        "rows = [] if d is None else sorted(f'{f.as_posix()},{f.hash.mode}={f.hash.value}' "
        "for f in (d.files or ()) if f.hash and f.parts[0] == 'llmlab')",
        "print('absent' if d is None else hashlib.sha256("
        "'\\n'.join([d.version, *rows]).encode()).hexdigest())",
    ]
)


@dataclass(frozen=True)
class Wheel:
    path: Path
    version: str
    fingerprint: (
        str  # sha256 over the version and every package file's hash (see INSTALLED_FINGERPRINT_SCRIPT)
    )


def fingerprint_wheel(path: Path) -> tuple[str, str]:
    """(version, fingerprint) of a wheel, from its RECORD."""
    with zipfile.ZipFile(path) as archive:
        records = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
        metas = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        if len(records) != 1 or len(metas) != 1:
            raise DeployError(f"{path}: not a wheel with one .dist-info (RECORD and METADATA)")
        record = archive.read(records[0]).decode()
        metadata = archive.read(metas[0]).decode()
    version = next(
        (line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Version:")), ""
    )
    if not version:
        raise DeployError(f"{path}: its METADATA has no Version")
    rows = sorted(
        f"{row[0]},{row[1]}"
        for row in csv.reader(io.StringIO(record))
        if len(row) >= 2 and row[1] and row[0].split("/", 1)[0] == PACKAGE
    )
    if not rows:
        raise DeployError(f"{path}: holds no {PACKAGE}/ files; is it an llmlab wheel?")
    return version, hashlib.sha256("\n".join([version, *rows]).encode()).hexdigest()


def build_wheel(source: Path, out_dir: Path) -> Wheel:
    """`pip wheel --no-deps` of the checkout at `source` into `out_dir` (dependencies: pip on the host)."""
    if not (source / "pyproject.toml").is_file():
        raise DeployError(f"--source {source}: holds no pyproject.toml; point it at an llmlab checkout")
    if not (source / PACKAGE).is_dir():
        raise DeployError(f"--source {source}: holds no {PACKAGE}/ package directory")
    with tempfile.TemporaryDirectory(prefix="llmlab-deploys-src.") as scratch:
        tree = Path(scratch) / "src"
        tree.mkdir()
        for name in SOURCE_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tree / name)
        shutil.copytree(
            source / PACKAGE, tree / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out_dir)]
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        done = subprocess.run([*command, str(tree)], env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DeployError(f"pip wheel {source} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    wheels = sorted(out_dir.glob(f"{PACKAGE}-*.whl"))
    if len(wheels) != 1:
        raise DeployError(
            f"pip wheel {source} built {[w.name for w in wheels]}; expected one {PACKAGE} wheel"
        )
    version, fingerprint = fingerprint_wheel(wheels[0])
    return Wheel(wheels[0], version, fingerprint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploys.wheel", description="Build the llmlab wheel; print its path as JSON."
    )
    parser.add_argument("--source", type=Path, required=True, help="the llmlab checkout")
    parser.add_argument("--wheel-dir", type=Path, required=True, help="an existing directory for the wheel")
    args = parser.parse_args(argv)
    try:
        wheel = build_wheel(args.source, args.wheel_dir)
    except DeployError as exc:
        print(f"python -m deploys.wheel: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"path": str(wheel.path), "version": wheel.version, "fingerprint": wheel.fingerprint}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
