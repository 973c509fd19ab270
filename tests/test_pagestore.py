"""The page store: gzipped project pages kept between starts, by ETag."""

from __future__ import annotations

import gzip
import marshal
import os
import random
import shutil
import struct
import zlib

import pytest
from dists import make_sdist, make_wheel

from pypiserver.web import compression, pagestore, responses
from pypiserver.web.pagestore import StoredPages
from pypiserver.web.responses import Page

HTML = "text/html; charset=utf-8"
JSON_V1 = "application/vnd.pypi.simple.v1+json"


def _bodies(count: int) -> list[bytes]:
    chance = random.Random(7)
    return [
        b"<a>" + bytes(chance.choice(b"abcdef0123456789") for _ in range(600 + 97 * n)) + b"</a>"
        for n in range(count)
    ]


@pytest.fixture
def saved(tmp_path):
    bodies = _bodies(12)
    path = tmp_path / pagestore.FILENAME
    # A duplicate and a page too small to compress are left out.
    pagestore.save(path, [Page(b, HTML) for b in bodies] + [Page(bodies[0], HTML), Page(b"tiny", HTML)])
    return path, bodies


def test_a_saved_page_gives_back_its_gzip(saved):
    path, bodies = saved
    stored = StoredPages.open(path)
    assert stored is not None and len(stored) == 12
    for body in bodies:
        etag = Page(body, HTML).etag
        assert gzip.decompress(stored.gzipped(etag, body)) == body
    assert stored.gzipped(Page(b"x" * 600, HTML).etag, b"x" * 600) is None  # never saved
    if os.name == "posix":  # not mkstemp's 0600
        assert path.stat().st_mode & 0o777 == 0o644


def test_a_stored_gzip_is_used_only_for_the_body_it_compresses(saved):
    path, bodies = saved
    stored = StoredPages.open(path)
    # Another body under the first one's ETag (a collision, or a damaged
    # store): the gzip trailer's CRC and length do not describe it.
    etag = Page(bodies[0], HTML).etag
    same_length = bytes(reversed(bodies[0]))
    assert stored.gzipped(etag, same_length) is None
    assert stored.gzipped(etag, bodies[0] + b" ") is None


def test_a_page_takes_its_gzip_from_the_store(saved, monkeypatch):
    path, bodies = saved
    stored = StoredPages.open(path)
    fresh = Page(bodies[3], HTML)
    monkeypatch.setattr(responses, "gzip", lambda body: pytest.fail("compressed again"))
    page = Page(bodies[3], HTML, stored)
    assert page.etag == fresh.etag  # unchanged by where the gzip came from
    assert page.body == bodies[3] and gzip.decompress(page.gzipped) == bodies[3]
    # Under another media type the same bytes are another page: not stored.
    compressed = []
    monkeypatch.setattr(responses, "gzip", lambda body: compressed.append(body) or compression.gzip(body))
    other = Page(bodies[3], "application/vnd.pypi.simple.v1+html", stored)
    assert compressed == [bodies[3]] and gzip.decompress(other.gzipped) == bodies[3]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data.replace(b"page store 2", b"page store 1", 1),
        lambda data: data[:-10],
        lambda data: _flip(data, len(data) - 100),  # inside the last body
        lambda data: _flip(data, 26),  # the CRC
        lambda data: data[:24] + struct.pack("<I", zlib.crc32(marshal.dumps([]))) + marshal.dumps([]),
    ],
    ids=["empty", "another-version", "truncated", "flipped-body", "flipped-crc", "no-dict"],
)
def test_a_damaged_store_is_ignored(saved, damage, caplog):
    path, _ = saved
    path.write_bytes(damage(path.read_bytes()))
    assert StoredPages.open(path) is None
    assert "ignoring the page store" in caplog.text


def test_no_store_is_none_without_a_warning(tmp_path, caplog):
    assert StoredPages.open(tmp_path / pagestore.FILENAME) is None
    assert "page store" not in caplog.text


def test_a_store_older_than_the_snapshot_is_stale(tmp_path):
    path = tmp_path / pagestore.FILENAME
    assert pagestore.is_stale(path, 0)  # missing
    path.write_bytes(b"")
    written = path.stat().st_mtime_ns
    assert not pagestore.is_stale(path, written)
    assert pagestore.is_stale(path, written + 1)


# -- in the application ---------------------------------------------------------


@pytest.fixture
def index_root(tmp_path):
    root = tmp_path / "packages"
    root.mkdir()
    for name in ("alpha", "beta"):
        for version in ("1.0", "2.0"):
            make_wheel(root, name, version, requires_python=">=3.8")
            make_sdist(root, name, version)
    return root


def _pages(app, project):
    """The HTML and JSON pages of ``project``, asked for and sent gzipped
    (webtest decodes them)."""
    html = app.get(f"/simple/{project}/", headers={"Accept-Encoding": "gzip"})
    data = app.get(f"/simple/{project}/", headers={"Accept-Encoding": "gzip", "Accept": JSON_V1})
    assert html.headers["ETag"].endswith('-gz"') and data.headers["ETag"].endswith('-gz"')
    return (html.headers["ETag"], html.text), (data.headers["ETag"], data.json)


def test_the_first_start_saves_every_project_page(wsgi_app, index_root, tmp_path, fork):
    app = wsgi_app(root=str(index_root), state_dir=str(tmp_path / "state"))
    stored = StoredPages.open(tmp_path / "state" / pagestore.FILENAME)
    assert stored is not None and len(stored) == 4  # HTML and JSON of two projects
    context = app.app.config["pypiserver.context"]
    assert context.stored_pages is not None and len(context.stored_pages) == 4


def test_a_restart_answers_from_the_store_what_it_would_render(
    wsgi_app, index_root, tmp_path, monkeypatch
):
    state = str(tmp_path / "state")
    first = wsgi_app(root=str(index_root), state_dir=state)
    rendered = {name: _pages(first, name) for name in ("alpha", "beta")}
    saved_at = (tmp_path / "state" / pagestore.FILENAME).stat().st_mtime_ns

    # A release yanked: the files are as they were, so the snapshot and
    # the store are not saved again, but beta's pages change.
    first.app.config["pypiserver.context"].catalogue.yank("beta", "2.0", reason="broken")
    calls = []
    monkeypatch.setattr(responses, "gzip", lambda body: calls.append(body) or compression.gzip(body))
    second = wsgi_app(root=str(index_root), state_dir=state)
    assert (tmp_path / "state" / pagestore.FILENAME).stat().st_mtime_ns == saved_at

    assert _pages(second, "alpha") == rendered["alpha"]
    assert calls == []  # both of alpha's pages came from the store
    (html_etag, html), (json_etag, document) = _pages(second, "beta")
    assert html.count('data-yanked="broken"') == 2
    assert [f["yanked"] for f in document["files"]] == [False, False, "broken", "broken"]
    assert html_etag != rendered["beta"][0][0] and json_etag != rendered["beta"][1][0]
    assert len(calls) == 2  # beta's pages were compressed afresh


def test_a_store_is_saved_again_with_the_snapshot(wsgi_app, index_root, tmp_path):
    state = tmp_path / "state"
    wsgi_app(root=str(index_root), state_dir=str(state))
    path = state / pagestore.FILENAME
    path.unlink()
    wsgi_app(root=str(index_root), state_dir=str(state))  # missing: saved
    assert len(StoredPages.open(path)) == 4

    # Most files changed while stopped: the snapshot is saved again, and the store.
    shutil.rmtree(index_root)
    index_root.mkdir()
    make_wheel(index_root, "gamma", "1.0")
    make_sdist(index_root, "gamma", "1.0")
    wsgi_app(root=str(index_root), state_dir=str(state))
    assert len(StoredPages.open(path)) == 2


def test_a_store_that_cannot_be_saved_costs_only_time(wsgi_app, index_root, tmp_path, monkeypatch, caplog):
    def refuse(path, pages):
        raise OSError("no room")

    monkeypatch.setattr(pagestore, "save", refuse)
    monkeypatch.delattr(os, "fork", raising=False)  # in this process, to see the log
    app = wsgi_app(root=str(index_root), state_dir=str(tmp_path / "state"))
    assert "cannot save the page store" in caplog.text
    assert app.app.config["pypiserver.context"].stored_pages is None
    (_, html), _ = _pages(app, "alpha")
    assert "alpha-2.0.tar.gz" in html
