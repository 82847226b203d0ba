"""The per-revision manifest: every file's path, size and SHA-256, recorded when the model entered the store.

`hf cache verify` needs the Hub to know what a file should hash to; the manifest lets a host without the Hub
check its models. It is written last when a model is added, so its presence means the snapshot is complete.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field, ValidationError

from llmlab.config import StrictModel

MANIFEST_SCHEMA = "llmlab.models.manifest/1"


class ManifestError(ValueError):
    """A manifest that cannot be read or does not follow the schema."""


class ManifestFile(StrictModel):
    path: str = Field(description="Path inside the snapshot, '/'-separated.")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(StrictModel):
    schema_: str = Field(MANIFEST_SCHEMA, alias="schema")
    name: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    revision: str = Field(description="The ref or commit it was added as, e.g. 'main'.")
    source: str = Field(description="Where it came from: 'hub:<endpoint>', 'dir:<path>' or 'tar:<path>'.")
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    files: list[ManifestFile]

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        return (json.dumps(self.model_dump(by_alias=True), indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str, source: str) -> Manifest:
        try:
            manifest = cls.model_validate_json(data)
        except ValidationError as exc:
            from llmlab.config import describe_validation_error

            raise ManifestError(describe_validation_error(exc, source)) from None
        if manifest.schema_ != MANIFEST_SCHEMA:
            raise ManifestError(f"{source}: schema {manifest.schema_!r} is not {MANIFEST_SCHEMA!r}")
        return manifest

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            return cls.from_json(path.read_bytes(), str(path))
        except OSError as exc:
            raise ManifestError(f"{path}: {exc.strerror}") from None


def content_commit(files: list[ManifestFile]) -> str:
    """A commit id for content that has none (a local import): the same files always get the same id,
    so importing the same model twice, or on two hosts, yields the same snapshot."""
    digest = hashlib.sha1(usedforsecurity=False)
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{f.sha256}\n".encode())
    return digest.hexdigest()
