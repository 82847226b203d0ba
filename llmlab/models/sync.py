"""`sync MANIFEST.yaml`: make the store hold exactly the models a host should have, and say what changed.

endpoint: https://hf-mirror.example.org   # optional; default $HF_ENDPOINT or the Hub
prune: false                              # true: remove unpinned managed models not listed
verify: true                              # re-hash models already present, repair damaged ones
models:
  - name: Qwen/Qwen2.5-0.5B-Instruct
    revision: 7ae557604adf67be50417f59c2c2f167def9a775   # a commit pins exactly; a branch follows it
    pin: true
  - name: lab/tutor-7b
    path: /srv/seed/tutor-7b.tar                          # import a directory or tarball, not the Hub
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from llmlab.config import ConfigError, StrictModel, describe_validation_error, read_yaml_mapping
from llmlab.models import layout
from llmlab.models.store import ModelNotFound, ModelStore, StoreError

SYNC_SCHEMA = "llmlab.models.sync/1"


class SyncEntry(StrictModel):
    name: str = Field(description="Hub repo id, 'org/name'.")
    revision: str | None = Field(None, description="Branch, tag or 40-hex commit; default main.")
    path: Path | None = Field(None, description="Import this directory or tarball instead of pulling.")
    include: list[str] | None = Field(
        None, description="File patterns to pull; default weights+config+tokenizer."
    )
    pin: bool = Field(False, description="Protect from gc eviction and rm.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return layout.check_name(v)

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str | None) -> str | None:
        return v if v is None else layout.check_ref(v)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.revision}" if self.revision else self.name


class SyncManifest(StrictModel):
    models: list[SyncEntry] = Field(default_factory=list)
    endpoint: str | None = None
    prune: bool = False
    verify: bool = True

    @field_validator("models")
    @classmethod
    def _unique(cls, entries: list[SyncEntry]) -> list[SyncEntry]:
        names = [e.name for e in entries]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        return entries


def load_sync_manifest(path: Path) -> SyncManifest:
    try:
        return SyncManifest.model_validate(read_yaml_mapping(path))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path))) from None


@dataclass
class SyncAction:
    name: str
    action: str  # added | unchanged | repaired | pinned | unpinned | removed | kept | failed
    changed: bool
    commit: str | None = None
    detail: str | None = None


@dataclass
class SyncReport:
    actions: list[SyncAction] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(a.action == "failed" for a in self.actions)

    @property
    def changed(self) -> bool:
        return any(a.changed for a in self.actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SYNC_SCHEMA,
            "ok": self.ok,
            "changed": self.changed,
            "models": [a.__dict__ for a in self.actions],
        }


def sync(
    store: ModelStore, manifest: SyncManifest, token: str | None = None, progress: bool = True
) -> SyncReport:
    report = SyncReport()
    for entry in manifest.models:
        try:
            report.actions.append(_sync_entry(store, manifest, entry, token, progress))
        except (StoreError, ModelNotFound, OSError) as exc:
            report.actions.append(SyncAction(entry.name, "failed", False, detail=str(exc)))
            continue
        with contextlib.suppress(ModelNotFound):
            if store.set_pinned(entry.name, entry.pin):
                report.actions.append(SyncAction(entry.name, "pinned" if entry.pin else "unpinned", True))
    if manifest.prune:
        listed = {e.name for e in manifest.models}
        for name in store.managed_names():
            if name in listed or not store.manifests(name):
                continue
            if store.is_pinned(name):
                report.actions.append(SyncAction(name, "kept", False, detail="not listed, but pinned"))
            else:
                store.remove(name)
                report.actions.append(SyncAction(name, "removed", True))
    return report


def _fetch(store: ModelStore, manifest: SyncManifest, entry: SyncEntry, token: str | None, progress: bool):
    if entry.path is not None:
        return store.add_local(entry.path, entry.name, entry.revision, progress=progress)
    from llmlab.models.pull import pull

    return pull(store, entry.spec, manifest.endpoint, token, entry.include, progress)


def _sync_entry(
    store: ModelStore, manifest: SyncManifest, entry: SyncEntry, token: str | None, progress: bool
) -> SyncAction:
    added = _fetch(store, manifest, entry, token, progress)
    action = SyncAction(entry.name, "added" if added.changed else "unchanged", added.changed, added.commit)
    if not manifest.verify or added.changed:
        return action  # a fresh add was hashed on the way in
    checked = store.verify(f"{entry.name}@{added.commit}", progress=progress)
    if checked.ok:
        return action
    store.discard_damaged(checked)
    _fetch(store, manifest, entry, token, progress)
    again = store.verify(f"{entry.name}@{added.commit}", progress=progress)
    if not again.ok:
        return SyncAction(entry.name, "failed", True, added.commit, "; ".join(again.problems))
    return SyncAction(entry.name, "repaired", True, added.commit, "; ".join(checked.problems))
