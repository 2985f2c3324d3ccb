"""A Hugging Face Hub stand-in on loopback, serving repositories from folders a test writes: the
few endpoints huggingface_hub calls to download (model info, file HEAD and GET with Range), with
the headers it checks (X-Repo-Commit, ETag, X-Error-Code). Nothing reaches the internet."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_INFO = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?")
_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)")
_RANGE = re.compile(r"bytes=(\d+)-")


@dataclass
class FakeRepo:
    folder: Path
    commit: str
    gated: bool = False

    def files(self) -> dict[str, Path]:
        return {p.relative_to(self.folder).as_posix(): p for p in sorted(self.folder.rglob("*")) if p.is_file()}


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    cut_after: dict[str, int] = field(default_factory=dict)  # file -> bytes sent before its first GET breaks
    fail: set[str] = field(default_factory=set)  # files whose GET answers 500
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def add(self, repo_id: str, folder: Path, gated: bool = False) -> str:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = FakeRepo(folder, commit, gated)
        return commit

    def start(self) -> None:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the port: a client then gets "connection refused", as with no network."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def downloads(self) -> list[str]:
        """The files fetched with GET, in order (without their revision)."""
        return [path.split("/resolve/", 1)[1].split("/", 1)[1] for m, path, _ in self.requests
                if m == "GET" and "/resolve/" in path]  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def _answer(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        self.fake.requests.append((method, path, self.headers.get("Range")))
        if (match := _INFO.fullmatch(path)) and method == "GET":
            self._info(match["repo"], match["rev"] or "main")
        elif match := _RESOLVE.fullmatch(path):
            self._file(method, match["repo"], match["rev"], match["file"])
        else:
            self._error(404, "RepoNotFound")

    def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound")  # as the hub answers an unknown repository without a token
        elif revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", repo.commit)
        else:
            return repo
        return None

    def _info(self, repo_id: str, revision: str) -> None:
        if (repo := self._repo(repo_id, revision)) is None:
            return
        siblings = [{"rfilename": name, "size": p.stat().st_size} for name, p in repo.files().items()]
        body = json.dumps({"id": repo_id, "sha": repo.commit, "siblings": siblings, "private": False,
                           "gated": "manual" if repo.gated else False}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, method: str, repo_id: str, revision: str, name: str) -> None:
        if (repo := self._repo(repo_id, revision)) is None:
            return
        if repo.gated and "authorization" not in {k.lower() for k in self.headers}:
            return self._error(401, "GatedRepo", repo.commit)
        path = repo.files().get(name)
        if path is None:
            return self._error(404, "EntryNotFound", repo.commit)
        if method == "GET" and name in self.fake.fail:
            return self._error(500, "", repo.commit)
        data = path.read_bytes()
        start = int(m[1]) if method == "GET" and (m := _RANGE.fullmatch(self.headers.get("Range") or "")) else 0
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if method == "HEAD":
            return
        cut = self.fake.cut_after.pop(name, None) if not start else None
        self.wfile.write(data[start:cut])
        if cut is not None:  # the connection breaks mid-file
            self.wfile.flush()
            self.close_connection = True

    def _error(self, status: int, code: str, commit: str | None = None) -> None:
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", "0")
        self.end_headers()
