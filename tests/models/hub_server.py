"""A local stand-in for the Hub's HTTP API: the routes snapshot_download and HfApi use, served from memory.

The real Hub is not reachable from these machines. This server answers the same URLs (`/api/models/<id>/
revision/<rev>`, `/api/models/<id>/tree/<rev>`, `HEAD|GET /<id>/resolve/<rev>/<file>` with Range support)
with the same headers (X-Repo-Commit, ETag, X-Error-Code), so huggingface_hub's real download code runs
against it. Files are served as LFS (ETag = SHA-256) when they are weights, as git blobs otherwise.
Not covered: Xet transfers, redirects to a CDN, pagination of long listings, auth.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]]  # commit -> {path: content}
    refs: dict[str, str]  # ref -> commit


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    seconds_per_mib: float = 0.0  # slows file bodies down, so a test can kill a client mid-download
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    listing_override: dict[str, bytes] = field(default_factory=dict)  # list these bytes, serve the real ones

    def add(self, repo_id: str, files: dict[str, bytes], ref: str = "main") -> str:
        commit = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        repo = self.repos.setdefault(repo_id, FakeRepo({}, {}))
        repo.commits[commit] = files
        repo.refs[ref] = commit
        return commit

    def add_directory(self, repo_id: str, directory: Path, ref: str = "main") -> str:
        files = {
            p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()
        }
        return self.add(repo_id, files, ref)


def is_lfs(path: str) -> bool:
    return path.endswith((".safetensors", ".bin"))


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append((self.command, path, self.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            for verb in ("revision", "tree"):
                if verb in parts:
                    at = parts.index(verb)
                    repo_id, rest = "/".join(parts[2:at]), parts[at + 1 :]
                    return self._api(verb, repo_id, rest[0], "/".join(rest[1:]))
        if "resolve" in parts:
            at = parts.index("resolve")
            return self._file("/".join(parts[:at]), parts[at + 1], "/".join(parts[at + 2 :]), head)
        self._error(404, "EntryNotFound")

    def _lookup(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound")
            return None
        commit = repo.refs.get(revision, revision)
        if commit not in repo.commits:
            self._error(404, "RevisionNotFound")
            return None
        return commit, repo.commits[commit]

    def _api(self, verb: str, repo_id: str, revision: str, _subpath: str) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        commit, files = found
        if verb == "revision":
            body = {"id": repo_id, "sha": commit, "siblings": [{"rfilename": p} for p in files]}
        else:
            listed = {**files, **{p: d for p, d in self.hub.listing_override.items() if p in files}}
            body = [_tree_entry(p, data) for p, data in sorted(listed.items())]
        self._json(body)

    def _file(self, repo_id: str, revision: str, name: str, head: bool) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        commit, files = found
        if name not in files:
            return self._error(404, "EntryNotFound")
        data = files[name]
        etag = hashlib.sha256(data).hexdigest() if is_lfs(name) else git_oid(data)
        start = 0
        if (ranged := self.headers.get("Range")) and ranged.startswith("bytes="):
            start = int(ranged[6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        step = 1 << 16
        for offset in range(start, len(data), step):
            if self.hub.seconds_per_mib:
                time.sleep(self.hub.seconds_per_mib * step / (1 << 20))
            try:
                self.wfile.write(data[offset : offset + step])
            except (BrokenPipeError, ConnectionResetError):
                return

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str) -> None:
        data = json.dumps({"error": code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _tree_entry(path: str, data: bytes) -> dict:
    entry = {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
    if is_lfs(path):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


class HubServer:
    """Serve a FakeHub on 127.0.0.1 in a thread; `url` is the endpoint to hand to huggingface_hub."""

    def __init__(self, hub: FakeHub) -> None:
        handler = type("Handler", (_Handler,), {"hub": hub})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
