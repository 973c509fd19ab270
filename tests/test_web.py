"""WSGI-level tests of every read route, with webtest over real files."""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import os
import time
import xmlrpc.client
import zipfile
from pathlib import Path

import pytest
import webtest

import pypiserver
from pypiserver.web.files import KeptFiles
from dists import make_sdist, make_wheel

JSON_V1 = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def make_app(wsgi_app, tmp_path):
    def factory(root: Path | None = None, **config) -> webtest.TestApp:
        config.setdefault("root", str(root or tmp_path / "packages"))
        return wsgi_app(**config)

    return factory


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "Foo_Bar", "1.0", summary="The foo", requires_python=">=3.8,<4")
    make_sdist(root, "Foo_Bar", "1.0")
    make_wheel(root, "Foo_Bar", "1.10", requires_dist=["dep>=1"])
    make_wheel(root, "Foo_Bar", "1.9")
    make_wheel(root, "dep", "2.0")
    sub = root / "sub" / "deeper"
    sub.mkdir(parents=True)
    make_wheel(sub, "nested", "0.1")
    (root / "README.txt").write_text("not a distribution")
    (root / ".hidden").mkdir()
    make_wheel(root / ".hidden", "secret", "1.0")
    make_wheel(root, "visible", "1.0")
    (root / "visible-1.0-py3-none-any.whl").rename(root / ".visible-1.0-py3-none-any.whl")
    return root


@pytest.fixture
def app(make_app, root) -> webtest.TestApp:
    return make_app(root)


def test_project_list(app):
    page = app.get("/simple/")
    assert page.content_type == "text/html"
    assert '<meta name="pypi:repository-version" content="1.1">' in page.text
    hrefs = [a["href"] for a in page.html.find_all("a")]
    assert hrefs == ["dep/", "foo-bar/", "nested/"]


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple", "/simple/"),
        ("/simple/Foo_Bar/", "/simple/foo-bar/"),
        ("/simple/foo-bar", "/simple/foo-bar/"),
        ("/simple/FOO.BAR", "/simple/foo-bar/"),
        ("/foo-bar/", "/simple/foo-bar/"),
        ("/Foo_Bar", "/simple/foo-bar/"),
        ("/packages", "/packages/"),
    ],
)
def test_normalising_redirects(app, path, location):
    response = app.get(path, status=301)
    assert response.headers["Location"] == "http://localhost:80" + location


def test_project_page_links(app, root):
    page = app.get("/simple/foo-bar/")
    anchors = page.html.find_all("a")
    assert [a.text for a in anchors] == [
        "foo_bar-1.0-py3-none-any.whl",
        "foo_bar-1.0.tar.gz",
        "foo_bar-1.9-py3-none-any.whl",
        "foo_bar-1.10-py3-none-any.whl",
    ]
    wheel = anchors[0]
    digest = hashlib.sha256((root / "foo_bar-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    assert wheel["href"] == f"../../packages/foo_bar-1.0-py3-none-any.whl#sha256={digest}"
    assert wheel["data-requires-python"] == ">=3.8,<4"
    assert "data-requires-python=\"&gt;=3.8,&lt;4\"" in page.text
    assert wheel["data-core-metadata"].startswith("sha256=")
    assert wheel["data-dist-info-metadata"] == wheel["data-core-metadata"]
    assert not anchors[1].has_attr("data-core-metadata")


def test_hash_algo_choice(make_app, root):
    page = make_app(root, hash_algo="md5").get("/simple/dep/")
    digest = hashlib.md5((root / "dep-2.0-py3-none-any.whl").read_bytes()).hexdigest()
    assert page.html.a["href"].endswith(f"#md5={digest}")


@pytest.mark.parametrize("off", ["off", "0", "no", "false"])
def test_hash_algo_off(make_app, root, off):
    page = make_app(root, hash_algo=off).get("/simple/dep/")
    assert "#" not in page.html.a["href"]


def test_unknown_project_redirects_to_fallback(app):
    response = app.get("/simple/unknown/", status=303)
    assert response.headers["Location"] == "https://pypi.org/simple/unknown/"


@pytest.mark.parametrize(
    "path",
    [
        "/simple/%00/", "/simple/a%0d%0aSet-Cookie:x/", "/simple/a%0d%0ab", "/a%0d%0ab", "/%00/",
        "/simple/%C3%A9/", "/%C3%A9", "/+simple/%00/", "/simple/-dash/",
    ],
)  # fmt: skip
def test_what_no_project_is_named_is_not_found_without_a_redirect(app, path):
    # A control character in a Location header made these 500 errors.
    response = app.get(path, status=404)
    assert "Location" not in response.headers
    assert response.content_type == "text/plain"


def test_custom_fallback_and_disabled_fallback(make_app, root):
    custom = make_app(root, fallback_url="https://mirror.example/simple")
    assert custom.get("/simple/nope/", status=303).headers["Location"] == "https://mirror.example/simple/nope/"
    disabled = make_app(root, disable_fallback=True)
    assert "not in this index" in disabled.get("/simple/nope/", status=404).text


def test_download_and_listing(app, root):
    listing = app.get("/packages/")
    hrefs = [a["href"].split("#")[0] for a in listing.html.find_all("a")]
    assert "sub/deeper/nested-0.1-py3-none-any.whl" in hrefs
    assert not any("secret" in h or "visible" in h or "README" in h for h in hrefs)
    body = app.get("/packages/sub/deeper/nested-0.1-py3-none-any.whl").body
    assert body == (root / "sub/deeper/nested-0.1-py3-none-any.whl").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/packages/README.txt",
        "/packages/.hidden/secret-1.0-py3-none-any.whl",
        "/packages/.visible-1.0-py3-none-any.whl",
        "/packages/../packages/dep-2.0-py3-none-any.whl",
        "/packages/%2e%2e/%2e%2e/etc/passwd",
        "/packages/sub/../../outside.whl",
        "/packages//etc/passwd",
    ],
)
def test_nothing_outside_the_index_is_served(app, path, root):
    (root.parent / "outside.whl").write_bytes(b"TOP-SECRET-BYTES")
    response = app.get(path, expect_errors=True)
    assert response.status_int in (301, 404)
    assert b"TOP-SECRET" not in response.body
    assert not response.body.startswith(b"PK")  # no wheel (zip) was sent


def test_download_headers_head_range_and_conditional(make_app, root):
    app = make_app(root, cache_control=3600)
    path = "/packages/foo_bar-1.0.tar.gz"
    data = (root / "foo_bar-1.0.tar.gz").read_bytes()
    full = app.get(path, headers={"Accept-Encoding": "gzip"})
    assert full.body == data
    assert "Content-Encoding" not in full.headers
    assert full.headers["Cache-Control"] == "public, max-age=3600"
    assert full.headers["Accept-Ranges"] == "bytes"
    mtime = (root / "foo_bar-1.0.tar.gz").stat().st_mtime
    assert full.headers["Last-Modified"] == email.utils.formatdate(mtime, usegmt=True)
    head = app.head(path)
    assert head.headers["Content-Length"] == str(len(data)) and head.body == b""
    part = app.get(path, headers={"Range": "bytes=0-9"}, status=206)
    assert part.body == data[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(data)}"
    suffix = app.get(path, headers={"Range": "bytes=-5"}, status=206)
    assert suffix.body == data[-5:]
    app.get(path, headers={"If-Modified-Since": full.headers["Last-Modified"]}, status=304)


def test_each_download_is_dated_by_its_own_file(app, root):
    # Dates are cached by the second: a file touched since, or another file,
    # must not be sent a date cached for a different second.
    paths = {name: root / name for name in ("foo_bar-1.0.tar.gz", "dep-2.0-py3-none-any.whl")}
    for seconds in (1_500_000_000, 1_600_000_000.7):
        for n, path in enumerate(paths.values()):
            os.utime(path, (seconds + n, seconds + n))
        for n, name in enumerate(paths):
            response = app.get(f"/packages/{name}")
            expected = email.utils.formatdate(int(seconds) + n, usegmt=True)
            assert response.headers["Last-Modified"] == expected


def test_no_cache_control_by_default(app):
    assert "Cache-Control" not in app.get("/packages/dep-2.0-py3-none-any.whl").headers


def test_core_metadata_file(app, root):
    page = app.get("/simple/foo-bar/")
    anchor = page.html.find("a", string="foo_bar-1.10-py3-none-any.whl")
    metadata = app.get("/packages/foo_bar-1.10-py3-none-any.whl.metadata")
    with zipfile.ZipFile(root / "foo_bar-1.10-py3-none-any.whl") as wheel:
        expected = wheel.read("foo_bar-1.10.dist-info/METADATA")
    assert metadata.body == expected
    assert anchor["data-core-metadata"] == "sha256=" + hashlib.sha256(expected).hexdigest()
    app.get("/packages/foo_bar-1.0.tar.gz.metadata", status=404)


def test_welcome_and_health(make_app, root, tmp_path):
    app = make_app(root)
    page = app.get("/")
    assert "pypiserver" in page.text and pypiserver.__version__ in page.text
    assert "3 projects" in page.text
    assert app.get("/health").text == "Ok"
    welcome = tmp_path / "welcome.html"
    welcome.write_text("<p>Hello {{URL}} v{{VERSION}} n={{NUMPKGS}}</p>")
    custom = make_app(root, welcome_file=str(welcome), health_endpoint="/ready")
    assert custom.get("/").text == f"<p>Hello http://localhost:80/ v{pypiserver.__version__} n=3</p>"
    assert custom.get("/ready").text == "Ok"
    custom.get("/health", status=301)  # now an ordinary short project URL


def test_short_json(app, root):
    document = app.get("/foo-bar/json").json
    assert list(document["releases"]) == ["1.0", "1.9", "1.10"]
    assert document["info"]["version"] == "1.10"
    wheel = document["releases"]["1.10"][0]
    assert wheel["url"] == "http://localhost:80/packages/foo_bar-1.10-py3-none-any.whl"
    assert wheel["digests"]["sha256"] == hashlib.sha256(
        (root / "foo_bar-1.10-py3-none-any.whl").read_bytes()
    ).hexdigest()


@pytest.mark.parametrize(
    ("headers", "location"),
    [
        ({"X-Forwarded-Host": "proxy.example:8443", "X-Forwarded-Proto": "https"}, "https://proxy.example:8443/simple/foo-bar/"),
        ({"X-Forwarded-Host": "proxy.example/pypi", "X-Forwarded-Proto": "https"}, "https://proxy.example/pypi/simple/foo-bar/"),
        ({"X-Forwarded-Host": "proxy.example", "X-Forwarded-Prefix": "/pypi/"}, "http://proxy.example/pypi/simple/foo-bar/"),
        ({"Host": "index.internal:9000"}, "http://index.internal:9000/simple/foo-bar/"),
    ],
)
def test_redirects_behind_a_proxy(app, headers, location):
    assert app.get("/simple/Foo_Bar/", headers=headers, status=301).headers["Location"] == location


def test_server_base_url_wins(make_app, root):
    app = make_app(root, server_base_url="https://pypi.corp/base/")
    response = app.get("/simple/Foo_Bar/", headers={"X-Forwarded-Host": "other"}, status=301)
    assert response.headers["Location"] == "https://pypi.corp/base/simple/foo-bar/"
    assert app.get("/dep/json").json["urls"][0]["url"].startswith("https://pypi.corp/base/packages/")


def test_scan_ignores_files_outside_grammar_and_dot_entries(app):
    projects = [a.text for a in app.get("/simple/").html.find_all("a")]
    assert "secret" not in projects and "visible" not in projects


def test_simple_dir_backend_sees_new_files_on_next_request(make_app, root):
    app = make_app(root, backend_arg="simple-dir")
    make_wheel(root, "fresh", "1.0")
    assert "fresh/" in app.get("/simple/").text
    (root / "fresh-1.0-py3-none-any.whl").unlink()
    assert "fresh/" not in app.get("/simple/").text


def test_cached_dir_backend_sees_new_files(make_app, root):
    app = make_app(root)
    make_wheel(root / "sub", "fresh", "1.0")
    newdir = root / "brand-new"
    newdir.mkdir()
    make_wheel(newdir, "newer", "1.0")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        text = app.get("/simple/").text
        if "fresh/" in text and "newer/" in text:
            break
        time.sleep(0.05)
    assert "fresh/" in text and "newer/" in text
    os.unlink(newdir / "newer-1.0-py3-none-any.whl")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and "newer/" in app.get("/simple/").text:
        time.sleep(0.05)
    assert "newer/" not in app.get("/simple/").text


def test_files_changed_while_the_catalogue_loads_are_not_missed(make_app, root, monkeypatch):
    """A file copied in, and one removed, after the start-up scan saw the
    directory but before the catalogue was ready, as on a large tree."""
    from pypiserver.storage import DirectoryStorage

    scan = DirectoryStorage.scan

    def scan_then_change(self):
        yield from scan(self)
        make_wheel(root, "late", "1.0")
        (root / "dep-2.0-py3-none-any.whl").unlink()

    monkeypatch.setattr(DirectoryStorage, "scan", scan_then_change)
    app = make_app(root)
    monkeypatch.setattr(DirectoryStorage, "scan", scan)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        text = app.get("/simple/").text
        if "late/" in text and "dep/" not in text:
            break
        time.sleep(0.05)
    assert "late/" in text and "dep/" not in text


def test_digest_cache_survives_restart(make_app, root, tmp_path):
    make_app(root, state_dir=str(tmp_path / "shared-state"))
    database = tmp_path / "shared-state" / "state.sqlite3"
    assert database.exists()
    # Change the bytes but keep size and mtime: the cached digest is used,
    # which shows the file was not read again.
    wheel = root / "dep-2.0-py3-none-any.whl"
    stat = wheel.stat()
    data = bytearray(wheel.read_bytes())
    data[-1] ^= 0xFF
    wheel.write_bytes(bytes(data))
    os.utime(wheel, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = make_app(root, state_dir=str(tmp_path / "shared-state"))
    listed = again.get("/simple/dep/").html.a["href"].split("=")[1]
    assert listed != hashlib.sha256(bytes(data)).hexdigest()


def test_bottle_is_reexported():
    from pypiserver import bottle

    assert "waitress" in bottle.server_names


def test_app_returns_new_app_each_call(make_app, root):
    assert make_app(root).app is not make_app(root).app


def test_unknown_app_keyword_is_an_error(root):
    with pytest.raises(ValueError, match="unknown configuration keyword 'nonsense'"):
        pypiserver.app(root=str(root), nonsense=1)


def test_paste_factory_takes_ini_strings(root, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    make_wheel(other, "extra", "1.0")
    app = pypiserver.paste_app_factory({}, root=f"{root}\n  {other}", disable_fallback="true", state_dir=str(tmp_path / "st"))
    try:
        test = webtest.TestApp(app)
        assert "extra/" in test.get("/simple/").text
        test.get("/simple/nope/", status=404)
    finally:
        app.config["pypiserver.context"].close()


def test_json_project_list(app):
    document = app.get("/simple/", headers={"Accept": JSON_V1})
    assert document.content_type == JSON_V1
    assert json.loads(document.body)["projects"][0] == {"name": "dep"}


# --- the fast path for installers' reads ------------------------------------------


def _wsgi(application, path: str, headers: dict[str, str], method: str = "GET"):
    """Status, headers and body of one request, straight through WSGI."""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "HTTP_HOST": "localhost",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO(),
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    }  # fmt: skip
    started = []
    body = application(environ, lambda status, hdrs, exc=None: started.append((status, hdrs)))
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    status, hdrs = started[0]
    return status, sorted((k.title(), v) for k, v in hdrs), data


WHEEL_PATH = "/packages/foo_bar-1.10-py3-none-any.whl"
FAST_READS = [
    ("/simple/", {}),
    ("/simple/", {"Accept": JSON_V1, "Accept-Encoding": "gzip"}),
    ("/simple/foo-bar/", {}),
    ("/simple/foo-bar/", {"Accept": JSON_V1}),
    ("/simple/foo-bar/", {"Accept-Encoding": "gzip, deflate"}),
    (WHEEL_PATH, {}),
    (WHEEL_PATH, {"Range": "bytes=5-20"}),
    (WHEEL_PATH, {"Range": "bytes=100000-"}),
    (WHEEL_PATH + ".metadata", {}),
    (WHEEL_PATH + ".metadata", {"Accept-Encoding": "gzip"}),
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(("path", "headers"), FAST_READS)
def test_fast_reads_answer_exactly_as_the_routes_do(make_app, root, path, headers, method):
    application = make_app(root, cache_control=60).app
    assert application.fast_reads(*_fast_probe(path, headers, method)) is not None
    fast = _wsgi(application, path, headers, method)
    routed = _wsgi(application.wsgi, path, headers, method)  # Bottle alone
    assert fast == routed
    # And conditionally: the validator of either path gets a 304 from both.
    tag = dict(fast[1]).get("Etag")
    if tag and fast[0].startswith("200"):
        again = {**headers, "If-None-Match": tag}
        assert _wsgi(application, path, again, method)[0] == "304 Not Modified"
        assert _wsgi(application.wsgi, path, again, method)[0] == "304 Not Modified"


def _fast_probe(path, headers, method):
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    }  # fmt: skip
    return environ, lambda *args: None


@pytest.mark.parametrize(
    ("path", "config"),
    [
        ("/simple/Foo_Bar/", {}),  # a redirect to the normalised name
        ("/simple/unknown/", {}),  # the fallback
        ("/packages/missing-1.0.tar.gz", {}),
        ("/packages/missing-1.0-py3-none-any.whl.metadata", {}),
        ("/simple/foo-bar/", {"authenticated": ["list"], "passwords": "."}),
        (WHEEL_PATH, {"authenticated": ["download"], "passwords": "."}),
    ],
)
def test_fast_reads_leave_the_rest_to_the_routes(make_app, root, path, config):
    application = make_app(root, **config).app
    assert application.fast_reads(*_fast_probe(path, {}, "GET")) is None


def _answers(app: webtest.TestApp, path: str, etag: str) -> list[tuple]:
    """Status, headers (but the date) and body of every kind of download."""
    requests = [
        {},
        {"Range": "bytes=0-9"},
        {"Range": "bytes=-5"},
        {"Range": "bytes=5-"},
        {"Range": "bytes=999999-"},
        {"If-None-Match": etag},
        {"If-None-Match": '"other"'},
        {"If-Modified-Since": "Sun, 01 Jan 2040 00:00:00 GMT"},
    ]
    answers = [app.get(path, headers=headers, expect_errors=True) for headers in requests]
    answers.append(app.head(path))
    return [
        (a.status_int, sorted(h for h in a.headerlist if h[0] != "Date"), a.body) for a in answers
    ]


def test_a_small_file_sent_again_from_memory_is_answered_as_from_disk(app, root):
    path, data = "/packages/dep-2.0-py3-none-any.whl", (root / "dep-2.0-py3-none-any.whl").read_bytes()
    context = app.app.config["pypiserver.context"]
    context.kept_files = KeptFiles(max_bytes=0)  # keeps nothing: every answer read from disk
    etag = app.get(path).headers["ETag"]
    from_disk = _answers(app, path, etag)
    context.kept_files = KeptFiles()

    assert app.get(path).body == data
    assert context.kept_files.size == len(data)
    assert _answers(app, path, etag) == from_disk
    assert [a[0] for a in from_disk] == [200, 206, 206, 206, 416, 304, 200, 304, 200]


def test_a_file_changed_on_disk_is_read_again_not_sent_from_memory(app, root):
    wheel = root / "dep-2.0-py3-none-any.whl"
    old = wheel.read_bytes()
    assert app.get("/packages/" + wheel.name).body == old  # now kept
    staging = root.parent / "staging"
    staging.mkdir()
    new = make_wheel(staging, "dep", "2.0", summary="rebuilt").read_bytes()
    assert new != old
    (staging / wheel.name).replace(wheel)
    digest = hashlib.sha256(new).hexdigest()
    for _ in range(100):  # the watcher tells the catalogue within moments
        if digest in app.get("/simple/dep/").text:
            break
        time.sleep(0.05)

    response = app.get("/packages/" + wheel.name)

    assert response.body == new
    assert response.headers["ETag"] == f'"{digest}"'


def test_kept_files_stay_within_their_bounds():
    kept = KeptFiles(max_bytes=100, max_file=60)
    facts = {name: object() for name in "abcde"}
    kept.keep("a", facts["a"], b"a" * 50)
    kept.keep("b", facts["b"], b"b" * 40)
    kept.keep("c", facts["c"], b"c" * 30)  # over 100 in all: the oldest goes
    kept.keep("d", facts["d"], b"d" * 61)  # larger than any file kept
    kept.keep("b", facts["b"], b"B" * 40)  # the same file again: replaced, not counted twice

    assert [kept.get(n, facts[n]) for n in "abcd"] == [None, b"B" * 40, b"c" * 30, None]
    assert kept.size == 70
    assert kept.get("c", object()) is None  # facts of another version of the file


def test_large_downloads_past_their_places_are_refused_until_one_ends(make_app, root, tmp_path):
    # Zeros, then a wheel: a zip archive may be preceded by anything.
    big = root / "big-1.0-py3-none-any.whl"
    big.write_bytes(bytes(3 << 20) + make_wheel(tmp_path, "big", "1.0").read_bytes())
    app = make_app(root, threads=4)  # so three files over 1 MiB at once

    def start(path: str) -> tuple[str, dict, object]:
        answers = []
        environ = webtest.TestRequest.blank(path).environ
        body = app.app(environ, lambda status, headers, exc_info=None: answers.append((status, dict(headers))))
        return (*answers[0], body)

    # Through the fast path and, with a query string, through Bottle's route.
    paths = ["/packages/big-1.0-py3-none-any.whl", "/packages/big-1.0-py3-none-any.whl?from=ci"]
    held = [start(paths[n % 2]) for n in range(3)]
    assert [status for status, _, _ in held] == ["200 OK"] * 3
    for path in paths:
        status, headers, body = start(path)
        assert (status, headers["Retry-After"]) == ("503 Service Unavailable", "5")
        assert b"already busy with 3 transfers" in b"".join(body)
    # Small files, pages and HEAD requests need no place.
    assert app.get("/packages/dep-2.0-py3-none-any.whl").body == (root / "dep-2.0-py3-none-any.whl").read_bytes()
    assert app.head(paths[0]).headers["Content-Length"] == str(big.stat().st_size)
    assert app.get("/simple/big/").status_int == 200

    # One sent to the end and closed, as a server does: its place is free.
    status, _, body = held.pop(0)  # the fast path's
    assert b"".join(body) == big.read_bytes()
    body.close()
    status, _, again = start(paths[1])
    assert status == "200 OK"
    # A client gone half way: the server closes the body all the same.
    next(iter(again))
    again.close()
    for _, _, body in held:
        body.close()
    fresh = [start(paths[0]) for _ in range(3)]
    assert [status for status, _, _ in fresh] == ["200 OK"] * 3
    # Bodies dropped without being closed give their places back too.
    del fresh, body, again
    last = [start(paths[0]) for _ in range(3)]
    assert [status for status, _, _ in last] == ["200 OK"] * 3
    for _, _, body in last:
        body.close()


def test_posts_read_their_bodies_in_the_places_large_downloads_take(make_app, root, tmp_path):
    big = root / "big-1.0-py3-none-any.whl"
    big.write_bytes(bytes(3 << 20) + make_wheel(tmp_path, "big", "1.0").read_bytes())
    # Anyone may update: the places are all that stands before the body.
    app = make_app(root, threads=4, authenticated=[], passwords=".")
    search = xmlrpc.client.dumps(({"name": "dep"},), "search").encode()
    posts = [
        ("/", search, "text/xml"),
        ("/legacy/", b"--x\r\n", "multipart/form-data; boundary=x"),
        ("/pypi/dep/2.0/yank", b"reason=broken", "application/x-www-form-urlencoded"),
        ("/pypi/dep/2.0/unyank", b"", "application/x-www-form-urlencoded"),
    ]

    def download() -> tuple[str, object]:
        statuses: list[str] = []
        environ = webtest.TestRequest.blank(f"/packages/{big.name}").environ
        body = app.app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        return statuses[0], body

    held = [download() for _ in range(3)]
    assert [status for status, _ in held] == ["200 OK"] * 3
    for path, body, content_type in posts:
        refused = app.post(path, body, content_type=content_type, status=503)
        assert refused.headers["Retry-After"] == "5"
        assert "already busy with 3 transfers" in refused.text
    assert app.get("/simple/dep/").status_int == 200  # pages take no place

    held.pop()[1].close()
    # Answered well or badly, each gives its place back: 24 of them in the
    # one place free, and a download still finds it after them.
    for _ in range(4):
        hits = xmlrpc.client.loads(app.post("/", search, content_type="text/xml").body)[0][0]
        assert [hit["name"] for hit in hits] == ["dep"]
        app.post("/", b"<not xml", content_type="text/xml", status=400)
        app.post("/legacy/", b"--x\r\n", content_type="multipart/form-data; boundary=x", status=400)
        app.post("/pypi/dep/2.0/yank", b"reason=broken", content_type="application/x-www-form-urlencoded")
        app.post("/pypi/dep/2.0/unyank", b"", content_type="application/x-www-form-urlencoded")
        app.post("/pypi/nothing/1.0/yank", b"", content_type="application/x-www-form-urlencoded", status=404)
    held.append(download())
    assert held[-1][0] == "200 OK"
    app.post("/", search, content_type="text/xml", status=503)
    for _, body in held:
        body.close()


@pytest.mark.parametrize(("threads", "places"), [(1, 1), (2, 1), (3, 2), (4, 3), (16, 12), (64, 48)])
def test_transfers_leave_a_quarter_of_the_threads_and_at_least_one(tmp_path, threads, places):
    assert pypiserver.config.Config(roots=(tmp_path,), threads=threads).transfer_places == places
