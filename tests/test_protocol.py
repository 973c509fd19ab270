"""The modern index protocol at the WSGI level: PEP 691 negotiation, the
JSON and HTML simple API (PEP 592, 629, 658/714, 700), yanking, the PyPI
JSON API and HTTP caching.  ``test_web.py`` covers the plain read routes;
these tests cover what a resolver such as pip or uv relies on."""

from __future__ import annotations

import gzip
import io
import hashlib
import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
import webtest

import pypiserver
from dists import make_sdist, make_wheel

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
HTML = "text/html; charset=utf-8"

# The Accept headers real clients send, copied from their sources.
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
POETRY_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.1"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
FILE_KEYS = {"filename", "url", "hashes", "requires-python", "size", "upload-time", "yanked", "core-metadata"}
OPEN = {"authenticate": ".", "password_file": "."}
# How long to wait for the watcher; its speed is the benchmark's to measure.
POLL_SECONDS = 15.0


def write_wheel(directory: Path, filename: str, members: dict[str, bytes]) -> Path:
    """A wheel-named zip holding exactly ``members``."""
    target = directory / filename
    with zipfile.ZipFile(target, "w") as archive:
        for path, data in members.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return target


def wheel_metadata(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "Foo_Bar", "1.0", summary="The foo", requires_python=">=3.8,<4")
    make_sdist(root, "Foo_Bar", "1.0", requires_python=">=3.8,<4")
    make_wheel(root, "Foo_Bar", "2.0", requires_dist=["lib-a>=1", "lib-b; python_version<'4'"])
    make_wheel(root, "lib-a", "1.0")
    # A zip with no .dist-info at all, and bytes that are not a zip.
    write_wheel(root, "nometa-1.0-py3-none-any.whl", {"nometa/__init__.py": b""})
    (root / "notzip-1.0-py3-none-any.whl").write_bytes(b"this is not a zip archive")
    urls = write_wheel(
        root,
        "urls-1.0-py3-none-any.whl",
        {
            "urls/__init__.py": b"",
            "urls-1.0.dist-info/METADATA": (
                b"Metadata-Version: 2.1\nName: urls\nVersion: 1.0\nSummary: with urls\n"
                b"Project-URL: Homepage, https://example.invalid/home\n"
                b"Project-URL: Source, https://example.invalid/src\n"
                b"Requires-Dist: lib-a\n"
            ),
            "urls-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        },
    )
    assert urls.exists()
    return root


@pytest.fixture
def make_app(wsgi_app, tmp_path):
    def factory(root: Path, **config) -> webtest.TestApp:
        config.setdefault("root", str(root))
        # One state directory for the test: a later app sees earlier yanks.
        config.setdefault("state_dir", str(tmp_path / "state"))
        return wsgi_app(**config)

    return factory


@pytest.fixture
def app(make_app, root) -> webtest.TestApp:
    return make_app(root, **OPEN)


def raw_get(app: webtest.TestApp, path: str, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    """GET through the bare WSGI callable: webtest would undo a gzip encoding."""
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO(),
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    }  # fmt: skip
    answer: dict[str, str] = {}

    def start_response(status: str, header_list: list, exc_info: object = None) -> None:
        answer.update({k.lower(): v for k, v in header_list}, status=status)

    body = b"".join(app.app(environ, start_response))
    return answer, body


def anchors_by_name(page: webtest.TestResponse) -> dict:
    return {a.text: a for a in page.html.find_all("a")}


def files_by_name(document: dict) -> dict:
    return {f["filename"]: f for f in document["files"]}


# --- PEP 691 content negotiation ---------------------------------------------


@pytest.mark.parametrize("path", ["/simple/", "/simple/foo-bar/"])
@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, HTML),
        (PIP_ACCEPT, JSON_V1),
        (UV_ACCEPT, JSON_V1),
        (POETRY_ACCEPT, JSON_V1),
        ("text/html", HTML),
        (HTML_V1, HTML_V1),
        (JSON_V1, JSON_V1),
        ("application/vnd.pypi.simple.latest+json", JSON_V1),
        ("application/vnd.pypi.simple.latest+html", HTML_V1),
        (f"{JSON_V1};q=0.5, text/html;q=0.9", HTML),
        (f"{JSON_V1};q=0.9, {HTML_V1};q=0.95", HTML_V1),
        ("*/*", HTML),
        (BROWSER_ACCEPT, HTML),
    ],
)
def test_accept_chooses_the_representation(app, path, accept, content_type):
    headers = {"Accept": accept} if accept is not None else {}
    response = app.get(path, headers=headers)
    assert response.headers["Content-Type"] == content_type
    assert "Accept" in [v.strip() for v in response.headers["Vary"].split(",")]
    if content_type == JSON_V1:
        assert json.loads(response.body)["meta"] == {"api-version": "1.1"}
    else:
        assert '<meta name="pypi:repository-version" content="1.1">' in response.text


@pytest.mark.parametrize("path", ["/simple/", "/simple/foo-bar/"])
@pytest.mark.parametrize(
    "accept",
    ["application/json", "image/png", "text/html;q=0", "application/vnd.pypi.simple.v2+json"],
)
def test_nothing_acceptable_is_406(app, path, accept):
    response = app.get(path, headers={"Accept": accept}, status=406)
    assert "Accept" in response.headers["Vary"]
    assert JSON_V1 in response.text  # tells the client what it could have had


@pytest.mark.parametrize("path", ["/simple/", "/simple/foo-bar/"])
@pytest.mark.parametrize(
    ("query", "accept", "content_type"),
    [
        ("format=json", None, JSON_V1),
        ("format=json", "text/html", JSON_V1),
        ("format=html", PIP_ACCEPT, HTML),
        (f"format={JSON_V1}", None, JSON_V1),
        (f"format={HTML_V1}", None, HTML_V1),
        ("format=text/html", JSON_V1, HTML),
    ],
)
def test_format_query_overrides_accept(app, path, query, accept, content_type):
    headers = {"Accept": accept} if accept else {}
    name, _, value = query.partition("=")
    response = app.get(f"{path}?{urlencode({name: value})}", headers=headers)
    assert response.headers["Content-Type"] == content_type
    assert "Accept" in response.headers["Vary"]


@pytest.mark.parametrize("query", ["format=xml", "format=application/json"])
def test_unknown_format_query_is_406(app, query):
    app.get(f"/simple/?{query}", status=406)


def test_vary_accept_on_a_304(app):
    first = app.get("/simple/foo-bar/", headers={"Accept": UV_ACCEPT})
    again = app.get(
        "/simple/foo-bar/",
        headers={"Accept": UV_ACCEPT, "If-None-Match": first.headers["ETag"]},
        status=304,
    )
    assert "Accept" in again.headers["Vary"]


# --- JSON (PEP 691 + PEP 700) ------------------------------------------------


def test_json_project_list_document(app):
    document = json.loads(app.get("/simple/", headers={"Accept": JSON_V1}).body)
    assert set(document) == {"meta", "projects"}
    assert document["meta"] == {"api-version": "1.1"}
    assert all(set(p) == {"name"} for p in document["projects"])
    names = {p["name"].lower().replace("_", "-") for p in document["projects"]}
    assert names == {"foo-bar", "lib-a", "nometa", "notzip", "urls"}


def test_json_project_detail_document(app, root):
    response = app.get("/simple/foo-bar/", headers={"Accept": JSON_V1})
    document = json.loads(response.body)
    assert document["meta"] == {"api-version": "1.1"}
    assert document["name"] == "foo-bar"
    assert set(document["versions"]) == {"1.0", "2.0"}
    files = files_by_name(document)
    assert set(files) == {
        "foo_bar-1.0-py3-none-any.whl",
        "foo_bar-1.0.tar.gz",
        "foo_bar-2.0-py3-none-any.whl",
    }
    for name, entry in files.items():
        data = (root / name).read_bytes()
        assert FILE_KEYS <= set(entry), name
        assert entry["hashes"]["sha256"] == sha256(data)
        assert entry["size"] == len(data)
        assert ISO_Z.match(entry["upload-time"]), entry["upload-time"]
        assert entry["yanked"] is False
        assert not entry["url"].startswith(("http:", "https:", "/"))  # relative
        absolute = urljoin("http://localhost/simple/foo-bar/", entry["url"])
        assert app.get(absolute.removeprefix("http://localhost")).body == data
    assert files["foo_bar-1.0-py3-none-any.whl"]["requires-python"] == ">=3.8,<4"
    assert files["foo_bar-1.0.tar.gz"]["requires-python"] == ">=3.8,<4"
    assert files["foo_bar-2.0-py3-none-any.whl"]["requires-python"] is None
    wheel = root / "foo_bar-2.0-py3-none-any.whl"
    assert files[wheel.name]["core-metadata"] == {"sha256": sha256(wheel_metadata(wheel))}
    assert files["foo_bar-1.0.tar.gz"]["core-metadata"] is False


def test_json_page_text_is_what_json_dumps_would_write():
    """The JSON page is written out as text for speed: it must parse to the
    PEP 691 document and be exactly json.dumps' compact form, with strings
    that need escaping (quotes, non-ASCII, "<") and every kind of value."""
    from pathlib import Path as _Path

    from pypiserver import render
    from pypiserver.distributions import parse_filename
    from pypiserver.index import IndexedFile, Project
    from pypiserver.state import Digests, FileFacts
    from pypiserver.storage import StoredFile

    def indexed(filename, *, yanked=None, signed=False, metadata=None, requires=None):
        dist = parse_filename(filename)
        digests = Digests([("sha256", "a" * 64), ("md5", "b" * 32)])
        mtime_ns = 1_700_000_000_123_456_789
        facts = FileFacts(10, mtime_ns, digests, requires, None, metadata, None, dist)
        stored = StoredFile(_Path("/x"), filename, 10, mtime_ns)
        return IndexedFile(dist, stored, facts, signed, yanked)

    project = Project(
        "cafe",
        "Cafe",
        (
            indexed("cafe-1.0+local.1-py3-none-any.whl", metadata="c" * 64, requires="<4,>=3.8"),
            indexed("cafe-1.1.tar.gz", yanked='broken "build" \u2014 use 1.2', signed=True),
            indexed("cafe-1.2.tar.gz", yanked=""),
        ),
        1,
    )
    for hash_algo in ("sha256", "md5", None):
        body = render.project_page_json(project, hash_algo)
        document = json.loads(body)
        assert body == json.dumps(document, separators=(",", ":")).encode()
        assert document["name"] == "cafe"
        assert document["versions"] == ["1.0+local.1", "1.1", "1.2"]
        first, yanked_with_reason, yanked = document["files"]
        assert first["url"] == "../../packages/cafe-1.0%2Blocal.1-py3-none-any.whl"
        expected_hashes = {"sha256": "a" * 64, **({"md5": "b" * 32} if hash_algo == "md5" else {})}
        assert first["hashes"] == expected_hashes
        assert first["requires-python"] == "<4,>=3.8"
        assert first["core-metadata"] == {"sha256": "c" * 64}
        assert first["upload-time"] == "2023-11-14T22:13:20.123456Z"
        assert (first["yanked"], first["gpg-sig"], first["size"]) == (False, False, 10)
        assert yanked_with_reason["yanked"] == 'broken "build" \u2014 use 1.2'
        assert yanked_with_reason["gpg-sig"] is True
        assert yanked_with_reason["requires-python"] is None
        assert yanked_with_reason["core-metadata"] is False
        assert yanked["yanked"] is True


def test_upload_time_is_the_mtime_in_utc_to_the_microsecond() -> None:
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    from pypiserver import render

    special = [
        0, 1, 999_999_999, -1, -86_400 * 10**9 - 1,  # the epoch and before it
        951_782_400 * 10**9,  # 2000-02-29
        1_700_006_399 * 10**9 + 999_999_999,  # the last microsecond of a day
        4_102_444_800 * 10**9 + 5_000,  # 2100
    ]  # fmt: skip
    spread = [n * 7_919_000_123_457 for n in range(0, 600_000, 6_007)]  # 1970 to 2120
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for mtime_ns in special + spread:
        file = SimpleNamespace(facts=SimpleNamespace(mtime_ns=mtime_ns))
        expected = epoch + timedelta(microseconds=mtime_ns // 1000)
        assert render._iso8601(file) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), mtime_ns


def test_json_has_no_dist_info_metadata_key(app):
    """PEP 714: JSON responses carry only the ``core-metadata`` name."""
    body = app.get("/simple/foo-bar/", headers={"Accept": JSON_V1}).text
    assert "dist-info-metadata" not in body
    assert "core-metadata" in body


@pytest.mark.parametrize("project", ["nometa", "notzip"])
def test_json_wheel_without_readable_metadata(app, project):
    document = json.loads(app.get(f"/simple/{project}/", headers={"Accept": JSON_V1}).body)
    (entry,) = document["files"]
    assert entry["filename"] == f"{project}-1.0-py3-none-any.whl"
    assert entry["core-metadata"] is False


# --- HTML (PEP 503, 592, 629, 658/714) ---------------------------------------


@pytest.mark.parametrize("accept", ["text/html", HTML_V1])
def test_html_project_page_attributes(app, root, accept):
    page = app.get("/simple/foo-bar/", headers={"Accept": accept})
    assert '<meta name="pypi:repository-version" content="1.1">' in page.text
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in page.text
    assert ">=3.8,<4" not in page.text
    anchors = anchors_by_name(page)
    wheel = root / "foo_bar-2.0-py3-none-any.whl"
    expected = "sha256=" + sha256(wheel_metadata(wheel))
    assert anchors[wheel.name]["data-core-metadata"] == expected
    assert anchors[wheel.name]["data-dist-info-metadata"] == expected
    for anchor in anchors.values():
        assert not anchor.has_attr("data-yanked")
    assert not anchors["foo_bar-1.0.tar.gz"].has_attr("data-core-metadata")
    assert not anchors["foo_bar-1.0.tar.gz"].has_attr("data-dist-info-metadata")


@pytest.mark.parametrize("project", ["nometa", "notzip"])
def test_html_wheel_without_readable_metadata(app, project):
    page = app.get(f"/simple/{project}/")
    anchor = page.html.find("a")
    assert anchor.text == f"{project}-1.0-py3-none-any.whl"
    assert not anchor.has_attr("data-core-metadata")
    assert not anchor.has_attr("data-dist-info-metadata")
    app.get(f"/packages/{project}-1.0-py3-none-any.whl.metadata", status=404)


# --- PEP 658 metadata files --------------------------------------------------


@pytest.mark.parametrize(
    "filename", ["foo_bar-1.0-py3-none-any.whl", "foo_bar-2.0-py3-none-any.whl", "urls-1.0-py3-none-any.whl"]
)
def test_metadata_file_is_byte_exact_and_matches_advertised_hash(app, root, filename):
    expected = wheel_metadata(root / filename)
    project = filename.split("-")[0].replace("_", "-")
    document = json.loads(app.get(f"/simple/{project}/", headers={"Accept": JSON_V1}).body)
    entry = files_by_name(document)[filename]
    url = urljoin(f"/simple/{project}/", entry["url"]) + ".metadata"
    served = app.get(url)
    assert served.body == expected
    assert entry["core-metadata"]["sha256"] == sha256(served.body)
    # A client that accepts gzip still gets the same bytes once decoded.
    headers, body = raw_get(app, url, {"Accept-Encoding": "gzip"})
    assert headers["status"].startswith("200")
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    assert body == expected


# --- yanking over HTTP (PEP 592) ---------------------------------------------


def simple_json(app: webtest.TestApp, project: str) -> dict:
    return files_by_name(json.loads(app.get(f"/simple/{project}/", headers={"Accept": JSON_V1}).body))


@pytest.mark.parametrize(
    ("form", "html_value", "json_value"),
    [
        ({"reason": "broken build"}, "broken build", "broken build"),
        ({}, "", True),
        ({"reason": 'a <b> & "c"'}, 'a <b> & "c"', 'a <b> & "c"'),
    ],
)
def test_yank_a_release_over_http(app, form, html_value, json_value):
    app.post("/pypi/foo-bar/1.0/yank", form)
    anchors = anchors_by_name(app.get("/simple/foo-bar/"))
    files = simple_json(app, "foo-bar")
    for name in ("foo_bar-1.0-py3-none-any.whl", "foo_bar-1.0.tar.gz"):
        assert anchors[name]["data-yanked"] == html_value
        assert files[name]["yanked"] == json_value
    assert not anchors["foo_bar-2.0-py3-none-any.whl"].has_attr("data-yanked")
    assert files["foo_bar-2.0-py3-none-any.whl"]["yanked"] is False
    info = app.get("/pypi/foo-bar/1.0/json").json["info"]
    assert info["yanked"] is True
    assert info["yanked_reason"] == (form.get("reason") or None)

    app.post("/pypi/foo-bar/1.0/unyank")
    files = simple_json(app, "foo-bar")
    assert all(entry["yanked"] is False for entry in files.values())
    assert not app.get("/pypi/foo-bar/1.0/json").json["info"]["yanked"]


def test_yank_one_file_over_http(app):
    app.post("/pypi/foo-bar/1.0/yank", {"filename": "foo_bar-1.0.tar.gz", "reason": "bad sdist"})
    files = simple_json(app, "foo-bar")
    assert files["foo_bar-1.0.tar.gz"]["yanked"] == "bad sdist"
    assert files["foo_bar-1.0-py3-none-any.whl"]["yanked"] is False
    document = app.get("/pypi/foo-bar/1.0/json").json
    assert document["info"]["yanked"] is False  # the release still has a good file
    by_name = {u["filename"]: u for u in document["urls"]}
    assert by_name["foo_bar-1.0.tar.gz"]["yanked"] is True
    assert by_name["foo_bar-1.0.tar.gz"]["yanked_reason"] == "bad sdist"
    assert by_name["foo_bar-1.0-py3-none-any.whl"]["yanked"] is False
    app.post("/pypi/foo-bar/1.0/unyank", {"filename": "foo_bar-1.0.tar.gz"})
    assert simple_json(app, "foo-bar")["foo_bar-1.0.tar.gz"]["yanked"] is False


def test_yanked_latest_is_not_the_latest_version(app):
    app.post("/pypi/foo-bar/2.0/yank", {"reason": "regression"})
    assert app.get("/pypi/foo-bar/json").json["info"]["version"] == "1.0"


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/pypi/foo-bar/9.9/yank", {}),
        ("/pypi/nope/1.0/yank", {}),
        ("/pypi/foo-bar/1.0/yank", {"filename": "foo_bar-2.0-py3-none-any.whl"}),
        ("/pypi/foo-bar/9.9/unyank", {}),
    ],
)
def test_yank_of_something_absent_is_404(app, path, form):
    app.post(path, form, status=404)


@pytest.mark.parametrize("verb", ["yank", "unyank"])
def test_yank_needs_the_update_permission(make_app, root, verb):
    closed = make_app(root)  # update is protected and there is no password file
    response = closed.post(f"/pypi/foo-bar/1.0/{verb}", {"reason": "x"}, expect_errors=True)
    assert response.status_int in (401, 403)
    assert all(entry["yanked"] is False for entry in simple_json(closed, "foo-bar").values())


# --- yanking with the CLI ----------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pypiserver", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_cli_yank_reaches_a_running_app_with_the_default_state_dir(tmp_path, root):
    app = webtest.TestApp(pypiserver.app(root=str(root), **OPEN))
    try:
        assert simple_json(app, "foo-bar")["foo_bar-1.0.tar.gz"]["yanked"] is False
        done = cli("yank", "Foo_Bar", "1.0", str(root), "--reason", "use 2.0")
        assert done.returncode == 0, done.stderr
        assert (root / ".pypiserver").is_dir()
        files = simple_json(app, "foo-bar")
        assert files["foo_bar-1.0.tar.gz"]["yanked"] == "use 2.0"
        assert files["foo_bar-1.0-py3-none-any.whl"]["yanked"] == "use 2.0"
        done = cli("unyank", "foo-bar", "1.0", str(root))
        assert done.returncode == 0, done.stderr
        assert simple_json(app, "foo-bar")["foo_bar-1.0.tar.gz"]["yanked"] is False
    finally:
        app.app.config["pypiserver.context"].close()


def test_cli_yank_one_file_with_a_state_dir_survives_restart(make_app, root, tmp_path):
    state = tmp_path / "elsewhere"
    done = cli(
        "yank", "foo-bar", "1.0", str(root), "--file", "foo_bar-1.0-py3-none-any.whl",
        "--reason", "wheel broken", "--state-dir", str(state),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for _ in range(2):  # a fresh app is a restarted server
        files = simple_json(make_app(root, state_dir=str(state), **OPEN), "foo-bar")
        assert files["foo_bar-1.0-py3-none-any.whl"]["yanked"] == "wheel broken"
        assert files["foo_bar-1.0.tar.gz"]["yanked"] is False
    other = simple_json(make_app(root, state_dir=str(tmp_path / "other-state"), **OPEN), "foo-bar")
    assert other["foo_bar-1.0-py3-none-any.whl"]["yanked"] is False


@pytest.mark.parametrize(
    "args",
    [
        ("yank", "foo-bar", "9.9"),
        ("yank", "nope", "1.0"),
        ("yank", "foo-bar", "1.0", "--file", "foo_bar-2.0-py3-none-any.whl"),
        ("unyank", "foo-bar", "9.9"),
    ],
)
def test_cli_yank_of_something_absent_fails(root, args):
    done = cli(*args[:3], str(root), *args[3:])
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip()
    assert "unrecognized arguments" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "order",
    [
        # The documented form: PROJECT VERSION [--file F] [--reason R] [DIRS]
        ("P", "V", "--file", "F", "--reason", "R", "DIR"),
        ("P", "V", "--reason", "R", "DIR", "--state-dir", "S"),
        ("P", "V", "DIR", "--file", "F", "--reason", "R"),
        ("--reason", "R", "P", "V", "DIR"),
    ],
)
def test_cli_yank_options_anywhere(make_app, root, tmp_path, order):
    state = tmp_path / "state"
    values = {
        "P": "foo-bar", "V": "1.0", "F": "foo_bar-1.0.tar.gz", "R": "why",
        "DIR": str(root), "S": str(state),
    }  # fmt: skip
    done = cli("yank", *(values.get(part, part) for part in order))
    assert done.returncode == 0, done.stderr
    if "--state-dir" not in order:
        state = root / ".pypiserver"
    files = simple_json(make_app(root, state_dir=str(state), **OPEN), "foo-bar")
    assert files["foo_bar-1.0.tar.gz"]["yanked"] == "why"


# --- the PyPI JSON API -------------------------------------------------------

URL_KEYS = {
    "filename", "url", "digests", "size", "packagetype", "python_version",
    "requires_python", "upload_time", "upload_time_iso_8601", "yanked", "yanked_reason",
}  # fmt: skip
INFO_KEYS = {
    "name", "version", "summary", "requires_python", "requires_dist",
    "project_urls", "yanked", "yanked_reason",
}  # fmt: skip


@pytest.mark.parametrize("path", ["/pypi/foo-bar/json", "/foo-bar/json", "/pypi/foo-bar/2.0/json"])
def test_pypi_json_latest(app, root, path):
    response = app.get(path)
    assert response.content_type == "application/json"
    document = response.json
    info = document["info"]
    assert INFO_KEYS <= set(info)
    assert info["name"] == "Foo_Bar"
    assert info["version"] == "2.0"
    assert info["requires_dist"] == ["lib-a>=1", "lib-b; python_version<'4'"]
    assert info["yanked"] is False and info["yanked_reason"] is None
    assert set(document["releases"]) == {"1.0", "2.0"}
    assert len(document["releases"]["1.0"]) == 2
    (url,) = document["urls"]
    assert url["filename"] == "foo_bar-2.0-py3-none-any.whl"
    assert url["url"] == "http://localhost:80/packages/foo_bar-2.0-py3-none-any.whl"


def test_pypi_json_release_files(app, root):
    document = app.get("/pypi/foo-bar/1.0/json").json
    info = document["info"]
    assert info["version"] == "1.0"
    assert info["summary"] == "The foo"
    assert info["requires_python"] == ">=3.8,<4"
    by_name = {u["filename"]: u for u in document["urls"]}
    assert set(by_name) == {"foo_bar-1.0-py3-none-any.whl", "foo_bar-1.0.tar.gz"}
    assert document["releases"]["1.0"] == document["urls"]
    for name, entry in by_name.items():
        data = (root / name).read_bytes()
        assert URL_KEYS <= set(entry)
        assert entry["digests"] == {
            "md5": hashlib.md5(data).hexdigest(),
            "sha256": sha256(data),
            "blake2b_256": hashlib.blake2b(data, digest_size=32).hexdigest(),
        }
        assert entry["size"] == len(data)
        assert entry["requires_python"] == ">=3.8,<4"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", entry["upload_time"])
        assert ISO_Z.match(entry["upload_time_iso_8601"])
        assert entry["upload_time_iso_8601"].startswith(entry["upload_time"])
        assert entry["yanked"] is False and entry["yanked_reason"] is None
        assert app.get(entry["url"].removeprefix("http://localhost:80")).body == data
    wheel, sdist = by_name["foo_bar-1.0-py3-none-any.whl"], by_name["foo_bar-1.0.tar.gz"]
    assert (wheel["packagetype"], wheel["python_version"]) == ("bdist_wheel", "py3")
    assert (sdist["packagetype"], sdist["python_version"]) == ("sdist", "source")


def test_pypi_json_project_urls(app):
    info = app.get("/pypi/urls/json").json["info"]
    assert info["project_urls"] == {
        "Homepage": "https://example.invalid/home",
        "Source": "https://example.invalid/src",
    }
    assert info["summary"] == "with urls"
    assert info["requires_dist"] == ["lib-a"]


def test_pypi_json_of_unnormalised_name(app):
    response = app.get("/pypi/Foo_Bar/json").maybe_follow()
    assert response.json["info"]["version"] == "2.0"


@pytest.mark.parametrize("path", ["/pypi/nope/json", "/pypi/foo-bar/9.9/json", "/nope/json"])
def test_pypi_json_unknown_is_404_json(app, path):
    response = app.get(path, status=404)
    assert response.content_type == "application/json"
    assert isinstance(response.json, dict)


# --- caching -----------------------------------------------------------------

CACHED_PATHS = [
    ("/simple/", {}),
    ("/simple/", {"Accept": JSON_V1}),
    ("/simple/foo-bar/", {}),
    ("/simple/foo-bar/", {"Accept": PIP_ACCEPT}),
    ("/simple/foo-bar/", {"Accept": HTML_V1}),
    ("/pypi/foo-bar/json", {}),
    ("/pypi/foo-bar/1.0/json", {}),
    ("/foo-bar/json", {}),
]


@pytest.mark.parametrize(("path", "headers"), CACHED_PATHS)
def test_etag_and_conditional_get(app, path, headers):
    first = app.get(path, headers=headers)
    etag = first.headers["ETag"]
    assert re.fullmatch(r'(W/)?"[^"]+"', etag)
    assert first.headers["Cache-Control"] == "max-age=0, public"
    again = app.get(path, headers={**headers, "If-None-Match": etag}, status=304)
    assert again.body == b""
    assert again.headers["ETag"] == etag
    app.get(path, headers={**headers, "If-None-Match": f"W/{etag}"}, status=304)
    app.get(path, headers={**headers, "If-None-Match": f'"other", {etag}'}, status=304)
    assert app.get(path, headers={**headers, "If-None-Match": '"other"'}, status=200).body == first.body


def test_etag_differs_by_representation(app):
    html = app.get("/simple/foo-bar/").headers["ETag"]
    json_tag = app.get("/simple/foo-bar/", headers={"Accept": JSON_V1}).headers["ETag"]
    html_v1 = app.get("/simple/foo-bar/", headers={"Accept": HTML_V1}).headers["ETag"]
    assert len({html, json_tag, html_v1}) == 3
    app.get("/simple/foo-bar/", headers={"Accept": JSON_V1, "If-None-Match": html}, status=200)


@pytest.mark.parametrize("max_age", [0, 60, 3600])
def test_index_max_age(make_app, root, max_age):
    app = make_app(root, index_max_age=max_age)
    for path, headers in CACHED_PATHS:
        assert app.get(path, headers=headers).headers["Cache-Control"] == f"max-age={max_age}, public"


def etags(app: webtest.TestApp) -> dict[str, str]:
    return {
        f"{path} {headers}": app.get(path, headers=headers).headers["ETag"]
        for path, headers in CACHED_PATHS
    }


def upload(app: webtest.TestApp, path: Path, **fields: str) -> webtest.TestResponse:
    return app.post(
        "/",
        {":action": "file_upload", **fields},
        upload_files=[("content", path.name, path.read_bytes())],
    )


def test_upload_changes_etags_at_once(app, tmp_path):
    before = etags(app)
    new = make_wheel(tmp_path, "Foo_Bar", "3.0")
    upload(app, new, name="foo-bar", version="3.0")
    after = etags(app)
    # Every document of the project lists all its releases, so each changed;
    # the project list names projects only and stays the same.
    for key in before:
        if key.startswith("/simple/ "):
            assert after[key] == before[key], key
        else:
            assert after[key] != before[key], key
    list_tag = app.get("/simple/").headers["ETag"]
    upload(app, make_wheel(tmp_path, "brand-new", "1.0"))
    listing = app.get("/simple/", headers={"If-None-Match": list_tag})
    assert listing.status_int == 200 and "brand-new" in listing.text
    assert app.get("/pypi/foo-bar/json").json["info"]["version"] == "3.0"


def test_removal_changes_etags_at_once(app):
    list_tag = app.get("/simple/").headers["ETag"]
    page_tag = app.get("/simple/foo-bar/", headers={"Accept": JSON_V1}).headers["ETag"]
    app.post("/", {":action": "remove_pkg", "name": "foo-bar", "version": "2.0"})
    page = app.get("/simple/foo-bar/", headers={"Accept": JSON_V1, "If-None-Match": page_tag})
    assert page.status_int == 200
    assert "foo_bar-2.0-py3-none-any.whl" not in page.text
    app.post("/", {":action": "remove_pkg", "name": "lib-a", "version": "1.0"})
    listing = app.get("/simple/", headers={"If-None-Match": list_tag})
    assert listing.status_int == 200 and "lib-a" not in listing.text


def test_yank_changes_etags_at_once(app):
    before = etags(app)
    app.post("/pypi/foo-bar/1.0/yank", {"reason": "r"})
    after = etags(app)
    for key in before:
        if key.startswith(("/simple/foo-bar/", "/pypi/foo-bar/1.0/json")):
            assert after[key] != before[key], key


def test_copied_file_changes_etag(app, root):
    tag = app.get("/simple/foo-bar/", headers={"Accept": JSON_V1}).headers["ETag"]
    list_tag = app.get("/simple/").headers["ETag"]
    make_wheel(root, "Foo_Bar", "4.0")
    make_wheel(root, "brand-new", "1.0")
    deadline = time.monotonic() + POLL_SECONDS
    while time.monotonic() < deadline:
        response = app.get("/simple/foo-bar/", headers={"Accept": JSON_V1, "If-None-Match": tag}, expect_errors=True)
        if response.status_int == 200 and "foo_bar-4.0" in response.text:
            break
        time.sleep(0.05)
    assert response.status_int == 200 and "foo_bar-4.0-py3-none-any.whl" in response.text
    listing = app.get("/simple/", headers={"If-None-Match": list_tag}, expect_errors=True)
    assert listing.status_int == 200 and "brand-new" in listing.text


@pytest.mark.parametrize("deflate", ["held", "isal", "zlib"])
def test_gzip_a_large_project_page(make_app, tmp_path, monkeypatch, deflate):
    from pypiserver.web import compression

    if deflate == "held":
        # The system's zlib, which every Linux has: it must be found.
        assert compression._held is not None
    else:  # a platform without a shared zlib to load
        monkeypatch.setattr(compression, "_held", None)
    if deflate == "isal":
        # Installed with pypiserver where it has wheels, as here: it must be used.
        pytest.importorskip("isal")
        assert compression.isal_zlib is not None
    elif deflate == "zlib":  # where it has none
        monkeypatch.setattr(compression, "isal_zlib", None)
    root = tmp_path / "many"
    root.mkdir()
    for minor in range(30):
        make_wheel(root, "many", f"1.{minor}")
    app = make_app(root)
    for path in ("/simple/many/", "/pypi/many/json"):
        for accept in ("text/html", JSON_V1):
            plain_headers, plain = raw_get(app, path, {"Accept": accept})
            headers, zipped = raw_get(app, path, {"Accept": accept, "Accept-Encoding": "gzip"})
            assert "content-encoding" not in plain_headers
            assert headers["content-encoding"] == "gzip", path
            assert "Accept-Encoding" in headers["vary"]
            assert gzip.decompress(zipped) == plain
            assert int(headers["content-length"]) == len(zipped) < len(plain)
    refused, _ = raw_get(app, "/simple/many/", {"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused


@pytest.mark.parametrize(
    "filename", ["foo_bar-1.0-py3-none-any.whl", "foo_bar-1.0.tar.gz", "notzip-1.0-py3-none-any.whl"]
)
def test_distributions_never_get_a_content_encoding(app, root, filename):
    headers, body = raw_get(app, f"/packages/{filename}", {"Accept-Encoding": "gzip, deflate, br"})
    assert "content-encoding" not in headers
    assert body == (root / filename).read_bytes()


# --- hatch -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/+simple/foo-bar/", "/+simple/Foo_Bar/", "/legacy/+simple/foo-bar/"]
)
def test_plus_simple_answers_in_place_with_working_links(app, path):
    # hatch does not follow redirects, so the page is served where it asks.
    response = app.get(path)
    assert response.status_int == 200
    hrefs = re.findall(r'href="([^"#]+)', response.text)
    assert any(h.endswith("foo_bar-2.0-py3-none-any.whl") for h in hrefs)
    for href in hrefs:
        target = urljoin("http://localhost" + path, href)
        assert app.get(urlsplit(target).path).status_int == 200
