"""Rows of a dataset file, whatever its type: JSONL line by line, JSON / CSV / Parquet through `datasets`.

JSONL is read here, one line at a time, so that a bad line is reported as `file:line` and the check can go
on past it; the other types are loaded with `datasets` (pyarrow underneath), imported only when one is
used. Rows are yielded as `(where, record)`: `record` is a dict, or a `BadRow` saying why it is not one.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASETS_BUILDERS = {".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class BadRow:
    """A row that is not a JSON object (invalid JSON, or another JSON type)."""

    reason: str


def read_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadRow]]:
    """Every row of `path` as (where, record); `where` is `file:line` (JSONL, CSV) or `file:row N`."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(path)
    else:
        yield from _datasets_rows(path, suffix)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadRow]]:
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, BadRow(f"not valid JSON: {exc.msg}")
                continue
            if isinstance(record, dict):
                yield where, record
            else:
                yield where, BadRow(f"expected a JSON object, got {type(record).__name__}")


def _datasets_rows(path: Path, suffix: str) -> Iterator[tuple[str, dict[str, Any] | BadRow]]:
    from llmlab.config import ConfigError

    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"datasets: {path}: {suffix} files are read with the datasets package (pip install datasets); "
            "JSONL needs nothing extra"
        ) from None
    builder = DATASETS_BUILDERS.get(suffix)
    if builder is None:
        raise ConfigError(f"datasets: {path}: unsupported file type {suffix!r}")
    datasets.disable_progress_bars()
    # A throw-away cache: the Arrow copy `datasets` builds is only read here, and would otherwise stay in
    # the user's cache for every version of every data file checked or trained on.
    with tempfile.TemporaryDirectory(prefix="llmlab-datasets-") as cache:
        try:
            table = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache)
        except Exception as exc:  # datasets raises its own and pyarrow's errors for a malformed file
            raise ConfigError(f"datasets: {path}: could not be read as {builder}: {exc}") from None
        # CSV: the header is line 1, so row i is line i + 2 (unless a field spans lines).
        first_line = 2 if builder == "csv" else None
        for index, record in enumerate(table):
            where = f"{path}:{index + first_line}" if first_line else f"{path}:row {index + 1}"
            yield where, record
