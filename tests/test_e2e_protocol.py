"""The modern index protocol end to end: a real ``pypi-server`` driven by real
pip, uv, twine and hatch, with a recording proxy in front of it so that the
tests see exactly which URLs the resolvers fetched."""

from __future__ import annotations

import gzip
import http.client
import importlib.metadata
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import Server, client_env, run_client, tool
from dists import make_sdist, make_wheel

pytestmark = pytest.mark.e2e

JSON_V1 = "application/vnd.pypi.simple.v1+json"
OPEN = ("-a", ".", "-P", ".")
# Hop-by-hop headers belong to one connection and are not forwarded.
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
# How long to wait for what the watcher or another worker makes visible;
# how fast that is the benchmark measures (bench/run.py), not the tests.
POLL_SECONDS = 15.0


# --- a recording proxy -------------------------------------------------------


class RecordingProxy:
    """A forwarding HTTP proxy on 127.0.0.1 that records every request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._forward(self)

            do_HEAD = do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def paths(self, method: str = "GET") -> list[str]:
        with self._lock:
            return [path for verb, path, _ in self.requests if verb == method]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        with self._lock:
            path = urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path)
            self.requests.append((handler.command, path, response.status))
        handler.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP and name.lower() != "content-length":
                handler.send_header(name, value)
        declared = response.getheader("Content-Length")
        no_body = handler.command == "HEAD" or response.status in (204, 304)
        if no_body and declared is not None:
            handler.send_header("Content-Length", declared)
        elif not no_body:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if not no_body:
            handler.wfile.write(data)


@pytest.fixture
def proxy_for() -> Iterator:
    proxies: list[RecordingProxy] = []

    def start(server: Server) -> RecordingProxy:
        proxy = RecordingProxy(server.port)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


# --- raw HTTP ----------------------------------------------------------------


def request(
    base: str, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request without any client-side decoding or redirect following."""
    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def post_form(base: str, path: str, fields: Mapping[str, str]) -> int:
    body = urllib.parse.urlencode(fields).encode()
    status, _, _ = request(
        base, "POST", path, {"Content-Type": "application/x-www-form-urlencoded"}, body
    )
    return status


def simple_json(base: str, project: str) -> dict:
    status, headers, body = request(base, "GET", f"/simple/{project}/", {"Accept": JSON_V1})
    assert status == 200, body
    assert headers["Content-Type"] == JSON_V1
    return json.loads(body)


# --- clients -----------------------------------------------------------------


def pip_report(index: str, *requirements: str, home: Path) -> dict:
    """What ``pip install`` would install, without downloading distributions."""
    done = run_client(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--report", "-", "--index-url", f"{index}/simple/", "--no-cache-dir",
            *requirements,
        ],
        env=client_env(f"{index}/simple/", home),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def pip_choices(index: str, *requirements: str, home: Path) -> dict[str, str]:
    report = pip_report(index, *requirements, home=home)
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}


def uv_compile(index: str, *requirements: str, tmp: Path) -> dict[str, str]:
    source = tmp / "requirements.in"
    source.write_text("\n".join(requirements) + "\n")
    done = run_client(
        [
            tool("uv"), "pip", "compile", str(source), "--index-url", f"{index}/simple/",
            "--no-cache", "--python", sys.executable, "--no-header", "--no-annotate",
            "--quiet",
        ],
        env=client_env(f"{index}/simple/", tmp),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    pins = {}
    for line in done.stdout.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[name.lower()] = version
    return pins


# --- a small dependency graph ------------------------------------------------


@pytest.fixture
def graph_dir(packages_dir: Path) -> Path:
    """e2e-app -> lib-a, lib-b; lib-a -> lib-c (each also with an older release)."""
    make_wheel(packages_dir, "e2e-app", "1.0", requires_dist=["lib-a>=1", "lib-b"])
    make_wheel(packages_dir, "lib-a", "0.9")
    make_wheel(packages_dir, "lib-a", "1.1", requires_dist=["lib-c<3"], requires_python=">=3.8")
    make_sdist(packages_dir, "lib-a", "1.1", requires_dist=["lib-c<3"])
    make_wheel(packages_dir, "lib-b", "2.0", requires_python=">=3.8")
    make_wheel(packages_dir, "lib-c", "2.5")
    make_wheel(packages_dir, "lib-c", "3.0")
    make_sdist(packages_dir, "lib-c", "2.5")
    return packages_dir


EXPECTED_GRAPH = {"e2e-app": "1.0", "lib-a": "1.1", "lib-b": "2.0", "lib-c": "2.5"}


def assert_metadata_only(paths: list[str], *, chosen_wheels_after: bool = False) -> None:
    """The resolution read index pages and PEP 658 files, never a distribution.

    With ``chosen_wheels_after``, the chosen wheels may be fetched once the
    resolution is over (and only then), as pip before 25.3 does on --dry-run.
    """
    downloads = [p for p in paths if p.endswith((".whl", ".tar.gz", ".zip"))]
    if chosen_wheels_after:
        first_download = paths.index(downloads[0]) if downloads else len(paths)
        assert not any(p.endswith(".metadata") for p in paths[first_download:]), paths
        assert sorted(d.rsplit("/", 1)[-1] for d in downloads) == [
            "e2e_app-1.0-py3-none-any.whl",
            "lib_a-1.1-py3-none-any.whl",
            "lib_b-2.0-py3-none-any.whl",
            "lib_c-2.5-py3-none-any.whl",
        ], paths
    else:
        assert downloads == [], paths
    metadata = {p.rsplit("/", 1)[-1] for p in paths if p.endswith(".metadata")}
    assert metadata == {
        "e2e_app-1.0-py3-none-any.whl.metadata",
        "lib_a-1.1-py3-none-any.whl.metadata",
        "lib_b-2.0-py3-none-any.whl.metadata",
        "lib_c-2.5-py3-none-any.whl.metadata",
    }, paths
    pages = {p for p in paths if p.startswith("/simple/")}
    assert {f"/simple/{name}/" for name in EXPECTED_GRAPH} <= pages
    assert all(p.startswith(("/simple/", "/packages/")) for p in paths), paths


def test_pip_dry_run_resolves_from_metadata_files(server_factory, proxy_for, graph_dir, tmp_path):
    proxy = proxy_for(server_factory([str(graph_dir)]))
    report = pip_report(proxy.url, "e2e-app", home=tmp_path)
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    assert chosen == EXPECTED_GRAPH
    # pip 25.3 stopped fetching the chosen wheels after a --dry-run resolution
    # (pypa/pip#12603); 23.3 to 25.2 fetch them as 23.2 does.
    old_pip = Version(importlib.metadata.version("pip")) < Version("25.3")
    assert_metadata_only(proxy.paths(), chosen_wheels_after=old_pip)


def test_uv_compile_resolves_from_metadata_files(server_factory, proxy_for, graph_dir, tmp_path):
    proxy = proxy_for(server_factory([str(graph_dir)]))
    assert uv_compile(proxy.url, "e2e-app", tmp=tmp_path) == EXPECTED_GRAPH
    assert_metadata_only(proxy.paths())


def test_clients_ask_for_json_and_get_it(server_factory, graph_dir):
    """pip and uv name the JSON type first; the server must answer with it."""
    server = server_factory([str(graph_dir)])
    for accept in (
        "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
        "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
    ):
        status, headers, body = request(server.url, "GET", "/simple/lib-a/", {"Accept": accept})
        assert status == 200
        assert headers["Content-Type"] == JSON_V1
        assert json.loads(body)["name"] == "lib-a"


# --- yanking -----------------------------------------------------------------


@pytest.fixture
def yank_dir(packages_dir: Path) -> Path:
    make_wheel(packages_dir, "yanky", "1.0")
    make_wheel(packages_dir, "yanky", "2.0")
    return packages_dir


def test_cli_yank_while_serving_is_honoured_by_pip_and_uv(server_factory, yank_dir, tmp_path):
    server = server_factory([str(yank_dir), *OPEN])
    assert simple_json(server.url, "yanky")["files"][1]["yanked"] is False
    done = subprocess.run(
        [sys.executable, "-m", "pypiserver", "yank", "yanky", "2.0", str(yank_dir), "--reason", "broken"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = {f["filename"]: f for f in simple_json(server.url, "yanky")["files"]}
    assert files["yanky-2.0-py3-none-any.whl"]["yanked"] == "broken"
    assert files["yanky-1.0-py3-none-any.whl"]["yanked"] is False

    assert pip_choices(server.url, "yanky", home=tmp_path) == {"yanky": "1.0"}
    assert pip_choices(server.url, "yanky==2.0", home=tmp_path) == {"yanky": "2.0"}
    assert uv_compile(server.url, "yanky", tmp=tmp_path) == {"yanky": "1.0"}
    assert uv_compile(server.url, "yanky==2.0", tmp=tmp_path) == {"yanky": "2.0"}

    # Pinned, the yanked release really installs.
    target = tmp_path / "target"
    done = run_client(
        [
            sys.executable, "-m", "pip", "install", "--target", str(target),
            "--index-url", f"{server.url}/simple/", "--no-cache-dir", "yanky==2.0",
        ],
        env=client_env(f"{server.url}/simple/", tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "yanky-2.0.dist-info").is_dir()
    assert "broken" in done.stdout + done.stderr  # pip shows the reason

    # The yank survives a restart of the server.
    server.stop()
    again = server_factory([str(yank_dir), *OPEN])
    assert {f["filename"]: f["yanked"] for f in simple_json(again.url, "yanky")["files"]} == {
        "yanky-1.0-py3-none-any.whl": False,
        "yanky-2.0-py3-none-any.whl": "broken",
    }
    assert pip_choices(again.url, "yanky", home=tmp_path) == {"yanky": "1.0"}


def test_http_yank_and_unyank(server_factory, yank_dir, tmp_path):
    server = server_factory([str(yank_dir), *OPEN])
    etag = request(server.url, "GET", "/simple/yanky/", {"Accept": JSON_V1})[1]["ETag"]
    assert post_form(server.url, "/pypi/yanky/2.0/yank", {"reason": "bad"}) == 200
    status, headers, _ = request(server.url, "GET", "/simple/yanky/", {"Accept": JSON_V1, "If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag
    assert uv_compile(server.url, "yanky", tmp=tmp_path) == {"yanky": "1.0"}
    document = json.loads(request(server.url, "GET", "/pypi/yanky/2.0/json")[2])
    assert document["info"]["yanked"] is True and document["info"]["yanked_reason"] == "bad"
    assert post_form(server.url, "/pypi/yanky/2.0/unyank", {}) == 200
    assert uv_compile(server.url, "yanky", tmp=tmp_path) == {"yanky": "2.0"}


def test_http_yank_needs_permission(server_factory, yank_dir):
    server = server_factory([str(yank_dir)])  # update needs a password, and there is none
    assert post_form(server.url, "/pypi/yanky/2.0/yank", {"reason": "x"}) in (401, 403)
    assert all(f["yanked"] is False for f in simple_json(server.url, "yanky")["files"])


# --- caching over a real socket ----------------------------------------------


def twine_upload(server: Server, *files: Path, home: Path) -> None:
    done = run_client(
        [
            tool("twine"), "upload", "--repository-url", f"{server.url}/",
            "-u", "someone", "-p", "secret", "--non-interactive", "--disable-progress-bar",
            *map(str, files),
        ],
        env=client_env(f"{server.url}/simple/", home),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("path", "accept"),
    [("/simple/lib-a/", JSON_V1), ("/simple/lib-a/", "text/html"), ("/pypi/lib-a/json", None)],
)
def test_conditional_request_before_and_after_twine_upload(server_factory, graph_dir, tmp_path, path, accept):
    server = server_factory([str(graph_dir), *OPEN])
    headers = {"Accept": accept} if accept else {}
    status, first, body = request(server.url, "GET", path, headers)
    assert status == 200
    etag = first["ETag"]
    assert first["Cache-Control"] == "max-age=0, public"
    status, again, body304 = request(server.url, "GET", path, {**headers, "If-None-Match": etag})
    assert (status, body304, again["ETag"]) == (304, b"", etag)

    twine_upload(server, make_wheel(tmp_path, "lib-a", "1.2"), home=tmp_path)
    status, after, body = request(server.url, "GET", path, {**headers, "If-None-Match": etag})
    assert status == 200
    assert after["ETag"] != etag
    assert b"lib_a-1.2-py3-none-any.whl" in body
    status, _, _ = request(server.url, "GET", path, {**headers, "If-None-Match": after["ETag"]})
    assert status == 304


@pytest.mark.parametrize("path", ["/pypi/lib-a/json", "/simple/lib-a/"])
def test_every_worker_gives_one_document_one_etag(server_factory, graph_dir, tmp_path, path):
    """Worker processes each keep a catalogue; after an upload they must still
    agree on the bytes, or a revalidation fails depending on which one answers."""
    server = server_factory([str(graph_dir), *OPEN, "--workers", "2"])
    twine_upload(server, make_wheel(tmp_path, "lib-a", "1.2"), home=tmp_path)
    deadline = time.monotonic() + POLL_SECONDS
    answers: list[tuple[str, bytes]] = []
    while time.monotonic() < deadline and len(answers) < 20:
        status, headers, body = request(server.url, "GET", path, {"Accept": JSON_V1})
        assert status == 200
        if b"lib_a-1.2-py3-none-any.whl" in body:
            answers.append((headers["ETag"], body))
        else:
            answers.clear()  # a worker has not caught up yet: start again
            time.sleep(0.05)
    assert len(answers) == 20, "not every worker lists the upload"
    bodies = {etag: body for etag, body in answers}
    assert len(bodies) == 1, first_difference(*list(bodies.values())[:2])


def first_difference(one: bytes, other: bytes) -> str:
    at = next(i for i, (a, b) in enumerate(zip(one, other)) if a != b)
    return f"documents differ at byte {at}: {one[at - 40:at + 20]!r} vs {other[at - 40:at + 20]!r}"


def test_new_project_upload_changes_the_project_list(server_factory, graph_dir, tmp_path):
    server = server_factory([str(graph_dir), *OPEN])
    etag = request(server.url, "GET", "/simple/", {"Accept": JSON_V1})[1]["ETag"]
    twine_upload(server, make_wheel(tmp_path, "fresh-project", "0.1"), home=tmp_path)
    status, _, body = request(server.url, "GET", "/simple/", {"Accept": JSON_V1, "If-None-Match": etag})
    assert status == 200
    names = {canonicalize_name(p["name"]) for p in json.loads(body)["projects"]}
    assert "fresh-project" in names


def test_copied_file_changes_the_etag(server_factory, graph_dir, tmp_path):
    server = server_factory([str(graph_dir)])
    etag = request(server.url, "GET", "/simple/lib-b/", {"Accept": JSON_V1})[1]["ETag"]
    staged = make_wheel(tmp_path, "lib-b", "2.1")
    shutil.copy(staged, graph_dir / staged.name)
    deadline = time.monotonic() + POLL_SECONDS
    status = 304
    while time.monotonic() < deadline:
        status, _, body = request(server.url, "GET", "/simple/lib-b/", {"Accept": JSON_V1, "If-None-Match": etag})
        if status == 200:
            break
        time.sleep(0.05)
    assert status == 200, "the copied file never showed up"
    assert "lib_b-2.1-py3-none-any.whl" in {f["filename"] for f in json.loads(body)["files"]}


def test_removal_changes_the_etag(server_factory, graph_dir):
    server = server_factory([str(graph_dir), *OPEN])
    etag = request(server.url, "GET", "/simple/lib-c/")[1]["ETag"]
    assert post_form(server.url, "/", {":action": "remove_pkg", "name": "lib-c", "version": "3.0"}) == 200
    status, _, body = request(server.url, "GET", "/simple/lib-c/", {"If-None-Match": etag})
    assert status == 200 and b"lib_c-3.0" not in body


def test_index_max_age_option(server_factory, graph_dir):
    server = server_factory([str(graph_dir), "--index-max-age", "120"])
    for path in ("/simple/", "/simple/lib-a/", "/pypi/lib-a/json"):
        assert request(server.url, "GET", path)[1]["Cache-Control"] == "max-age=120, public"


def test_gzip_index_pages_but_never_distributions(server_factory, graph_dir):
    for minor in range(20):  # a page long enough to be worth compressing
        make_wheel(graph_dir, "lib-c", f"1.{minor}")
    server = server_factory([str(graph_dir)])
    for accept in ("text/html", JSON_V1):
        _, plain_headers, plain = request(server.url, "GET", "/simple/lib-c/", {"Accept": accept})
        status, headers, zipped = request(
            server.url, "GET", "/simple/lib-c/", {"Accept": accept, "Accept-Encoding": "gzip"}
        )
        assert status == 200
        assert plain_headers["Content-Encoding"] is None
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(zipped) == plain
    for name in ("lib_c-2.5-py3-none-any.whl", "lib_c-2.5.tar.gz"):
        status, headers, body = request(
            server.url, "GET", f"/packages/{name}", {"Accept-Encoding": "gzip, deflate"}
        )
        assert status == 200
        assert headers["Content-Encoding"] is None
        assert body == (graph_dir / name).read_bytes()


@pytest.mark.parametrize("name", ["lib_c-2.5-py3-none-any.whl", "lib_c-2.5.tar.gz"])
def test_download_head_and_ranges(server_factory, graph_dir, name):
    server = server_factory([str(graph_dir)])
    data = (graph_dir / name).read_bytes()
    path = f"/packages/{name}"
    status, headers, body = request(server.url, "HEAD", path)
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(len(data))
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = request(server.url, "GET", path, {"Range": "bytes=10-29"})
    assert (status, body) == (206, data[10:30])
    assert headers["Content-Range"] == f"bytes 10-29/{len(data)}"
    status, headers, body = request(server.url, "GET", path, {"Range": "bytes=-22"})
    assert (status, body) == (206, data[-22:])
    assert headers["Content-Range"] == f"bytes {len(data) - 22}-{len(data) - 1}/{len(data)}"


# --- hatch -------------------------------------------------------------------


def hatch_publish(index: str, artifact: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = client_env(f"{index}/simple/", home)
    config = home / "hatch-config.toml"
    config.touch()
    env.update(
        HATCH_CONFIG=str(config),
        HATCH_CACHE_DIR=str(home / "hatch-cache"),
        HATCH_DATA_DIR=str(home / "hatch-data"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_DATA_HOME=str(home / "data"),
    )
    return run_client(
        [tool("hatch"), "publish", "-r", f"{index}/", "-u", "someone", "-a", "secret", "-n", str(artifact)],
        env=env,
    )


def test_hatch_publish(server_factory, proxy_for, packages_dir, tmp_path):
    server = server_factory([str(packages_dir), *OPEN])
    proxy = proxy_for(server)
    dist = tmp_path / "dist"
    dist.mkdir()
    wheel = make_wheel(dist, "hatched", "1.0", summary="from hatch")
    done = hatch_publish(proxy.url, wheel, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (packages_dir / wheel.name).read_bytes() == wheel.read_bytes()
    assert "/+simple/hatched/" in proxy.paths()
    assert [f["filename"] for f in simple_json(server.url, "hatched")["files"]] == [wheel.name]

    # Publishing again: hatch reads +simple, sees the file and skips it.
    proxy.clear()
    again = hatch_publish(proxy.url, wheel, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already exists" in again.stdout + again.stderr
    assert proxy.paths("POST") == []
