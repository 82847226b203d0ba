"""Build the llmlab wheel on the controller, and fingerprint what a wheel (or an installed copy) contains.

The one wheel build of the kit, behind a content-addressed cache: `cached_wheel` serves the wheel of a
checkout from `CACHE_DIR/<digest>/`, where the digest covers every file the build reads (and this module),
and runs `pip wheel` only for a checkout it has not seen. `python -m deploys deploy` uses it with
`default_cache_dir()`, and the llmlab role's install step runs `python -m deploys.wheel --source CHECKOUT`
(the same cache; --cache-dir DIR for another), which prints the wheel's path, version and fingerprint as
JSON (exit 2 and a message naming the problem when the checkout cannot be built). Only the standard library
is imported, so the controller's Python needs nothing beyond pip.
"""

from __future__ import annotations

import argparse
import contextlib
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
# What the scratch copy leaves out of the package tree; the cache digest skips the same names.
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
# Digests kept in the cache after a build: every edit of the checkout adds one (about 170 kB), and only the
# current checkout and a branch or two switched back to are worth a cache hit.
KEEP_BUILDS = 3

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
        shutil.copytree(source / PACKAGE, tree / PACKAGE, ignore=IGNORED)
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


def default_cache_dir() -> Path:
    """The controller user's wheel cache, shared by `deploy` and the llmlab role (the CLI's default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmlab" / "wheels"


def source_digest(source: Path) -> str:
    """sha256 over the relative path and bytes of every file `build_wheel` copies from `source`, and of this
    module, whose recipe (the pip command, SOURCE_DATE_EPOCH) shapes the wheel as well."""
    files = {name: source / name for name in SOURCE_FILES if (source / name).is_file()}
    # os.walk the way copytree copies: the same ignore function, symlinked directories followed.
    for top, dirs, names in os.walk(source / PACKAGE, followlinks=True):
        ignored = IGNORED(top, [*dirs, *names])
        dirs[:] = [d for d in dirs if d not in ignored]
        for name in names:
            if name not in ignored:
                path = Path(top, name)
                files[path.relative_to(source).as_posix()] = path
    rows = [f"{rel}\0{hashlib.sha256(files[rel].read_bytes()).hexdigest()}" for rel in sorted(files)]
    rows.append(f"deploys/wheel.py\0{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}")
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _cached(entry: Path) -> Wheel:
    wheels = sorted(entry.glob(f"{PACKAGE}-*.whl"))
    if len(wheels) != 1:
        raise DeployError(f"{entry}: holds {[w.name for w in wheels]}, not one {PACKAGE} wheel; remove it")
    return Wheel(wheels[0], *fingerprint_wheel(wheels[0]))


def cached_wheel(source: Path, cache_dir: Path) -> Wheel:
    """The wheel of the checkout at `source`: from `cache_dir/<digest>/` when it was built before, else
    built by `build_wheel` and stored there."""
    entry = cache_dir / source_digest(source)
    if entry.is_dir():
        os.utime(entry)  # pruning keeps the entries used last, not only those built last
        return _cached(entry)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Built beside the entry and renamed into place whole: a concurrent run sees no entry or a finished one.
    with tempfile.TemporaryDirectory(prefix=".build.", dir=cache_dir) as scratch:
        built = Path(scratch) / "wheel"
        built.mkdir()
        build_wheel(source, built)
        try:
            built.rename(entry)
        except OSError:
            if not entry.is_dir():
                raise
            return _cached(entry)  # another run built the same checkout first: its wheel has the same bytes
    _prune(cache_dir, keep=entry)
    return _cached(entry)


def _prune(cache_dir: Path, keep: Path) -> None:
    entries = []
    for path in cache_dir.iterdir():
        # Digest entries only: the dot-named .build.* directories are builds in flight.
        if path != keep and not path.name.startswith("."):
            with contextlib.suppress(FileNotFoundError):  # a concurrent run pruned it first
                entries.append((path.stat().st_mtime, path))
    for _, old in sorted(entries, reverse=True)[KEEP_BUILDS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploys.wheel",
        description="Build the llmlab wheel, or take it from the cache; print its path as JSON.",
    )
    parser.add_argument("--source", type=Path, required=True, help="the llmlab checkout")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="the wheel cache, created if missing (default: %(default)s, which `deploy` uses too)",
    )
    args = parser.parse_args(argv)
    try:
        wheel = cached_wheel(args.source, args.cache_dir)
    except (DeployError, OSError) as exc:  # OSError: an unusable --cache-dir or --source
        print(f"python -m deploys.wheel: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"path": str(wheel.path), "version": wheel.version, "fingerprint": wheel.fingerprint}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
