"""The page store: project pages kept between starts, each with a digest of
what it was made from."""

from __future__ import annotations

import dataclasses
import marshal
import os
import shutil
import struct
import zlib

import pytest
from dists import make_sdist, make_wheel

from pypiserver import render
from pypiserver.index import IndexedFile, Project
from pypiserver.storage import StoredFile
from pypiserver.web import pagestore, simple
from pypiserver.web.pagestore import StoredPages
from pypiserver.web.responses import Page

HTML = "text/html"
HTML_TYPE = "text/html; charset=utf-8"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
EDITION = "sha256 test"


def _pages(n: int) -> dict[str, Page]:
    links = "".join(f'<a href="x-{n}-{i}.whl">x-{n}-{i}.whl</a>\n' for i in range(20 + n))
    return {HTML: Page(links.encode(), HTML_TYPE), JSON_V1: Page(b'{"files":[]}', JSON_V1)}


@pytest.fixture
def saved(tmp_path):
    projects = [(f"p{n}", bytes([n]) * 16, _pages(n)) for n in range(5)]
    path = tmp_path / pagestore.FILENAME
    pagestore.save(path, EDITION, projects)
    return path, projects


def test_a_saved_page_is_given_back_for_the_inputs_it_was_made_from(saved):
    path, projects = saved
    stored = StoredPages.open(path, EDITION)
    assert stored is not None and len(stored) == 10
    for name, inputs, pages in projects:
        for media, page in pages.items():
            back = stored.page(name, media, inputs)
            assert (back.etag, back.content_type, back.body) == (page.etag, page.content_type, page.body)
            assert back.gzipped == page.gzipped  # None for the JSON page: too small
    assert projects[0][2][HTML].gzipped is not None
    assert stored.page("p1", HTML, bytes([2]) * 16) is None  # made from other inputs
    assert stored.page("p1", "application/vnd.pypi.simple.v1+html", bytes([1]) * 16) is None
    assert stored.page("p9", HTML, bytes([9]) * 16) is None
    if os.name == "posix":  # not mkstemp's 0600
        assert path.stat().st_mode & 0o777 == 0o644


def test_a_store_of_another_edition_is_not_used(saved, caplog):
    path, _ = saved
    caplog.set_level("INFO")
    assert StoredPages.open(path, "sha256 other code") is None
    assert "saved by other code or settings" in caplog.text


def test_the_edition_follows_the_settings_and_the_code(tmp_path):
    assert pagestore.edition("sha256") != pagestore.edition("md5")
    package = tmp_path / "package"
    shutil.copytree(pagestore.Path(pagestore.__file__).parents[1], package)
    before = pagestore.code_digest(package)
    module = package / "render.py"
    module.write_text(module.read_text() + "\n# changed\n")
    pagestore.code_digest.cache_clear()
    assert pagestore.code_digest(package) != before


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def _with_payload(value: object) -> bytes:
    payload = marshal.dumps(value)
    return b"pypiserver page store 3\n" + struct.pack("<I", zlib.crc32(payload)) + payload


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data.replace(b"page store 3", b"page store 2", 1),
        lambda data: data[:-10],
        lambda data: _flip(data, len(data) - 100),  # inside the last page
        lambda data: _flip(data, 26),  # the CRC
        lambda data: _with_payload([]),
        lambda data: _with_payload((EDITION, [])),
    ],
    ids=["empty", "another-version", "truncated", "flipped-body", "flipped-crc", "no-tuple", "no-dict"],
)
def test_a_damaged_store_is_ignored(saved, damage, caplog):
    path, _ = saved
    path.write_bytes(damage(path.read_bytes()))
    assert StoredPages.open(path, EDITION) is None
    assert "ignoring the page store" in caplog.text


def test_no_store_is_none_without_a_warning(tmp_path, caplog):
    assert StoredPages.open(tmp_path / pagestore.FILENAME, EDITION) is None
    assert "page store" not in caplog.text


def test_a_store_older_than_the_snapshot_is_stale(tmp_path):
    path = tmp_path / pagestore.FILENAME
    assert pagestore.is_stale(path, 0)  # missing
    path.write_bytes(b"")
    written = path.stat().st_mtime_ns
    assert not pagestore.is_stale(path, written)
    assert pagestore.is_stale(path, written + 1)


def test_the_page_inputs_name_every_field_a_page_is_made_from():
    # Catalogue._page_inputs digests each of these; a field added to one of
    # them must be added there too, or a stored page could outlive a change.
    assert IndexedFile._fields == ("dist", "stored", "facts", "signed", "yanked")
    assert StoredFile._fields == ("root", "relpath", "size", "mtime_ns")
    # The revision is local to a process, and the display name comes from the files.
    assert [f.name for f in dataclasses.fields(Project)] == ["name", "display_name", "files", "revision"]


# -- in the application ---------------------------------------------------------


@pytest.fixture
def index_root(tmp_path):
    root = tmp_path / "packages"
    root.mkdir()
    for name in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"):
        for version in ("1.0", "2.0"):
            make_wheel(root, name, version, requires_python=">=3.8")
            make_sdist(root, name, version)
    return root


def _answers(app, project):
    """The HTML and JSON pages of ``project`` as sent, gzipped (the ETag
    says so; webtest decodes the body)."""
    sent = []
    for accept in (HTML, JSON_V1):
        response = app.get(f"/simple/{project}/", headers={"Accept-Encoding": "gzip", "Accept": accept})
        assert response.headers["ETag"].endswith('-gz"')
        sent.append((response.headers["ETag"], response.headers["Content-Type"], response.body))
    return sent


def _rendered(app, project):
    """What the application renders for ``project``, without the store."""
    context = app.app.config["pypiserver.context"]
    stored, context.stored_pages = context.stored_pages, None
    context.pages._entries.clear()
    try:
        return _answers(app, project)
    finally:
        context.stored_pages = stored
        context.pages._entries.clear()


def _no_rendering(monkeypatch):
    def refuse(*args):
        pytest.fail("rendered, not taken from the store")

    monkeypatch.setattr(render, "project_page_html", refuse)
    monkeypatch.setattr(render, "project_page_json", refuse)


def test_the_first_start_saves_every_project_page(wsgi_app, index_root, tmp_path, fork):
    app = wsgi_app(root=str(index_root), state_dir=str(tmp_path / "state"))
    stored = StoredPages.open(tmp_path / "state" / pagestore.FILENAME, pagestore.edition("sha256"))
    assert stored is not None and len(stored) == 20  # HTML and JSON of ten projects
    context = app.app.config["pypiserver.context"]
    assert context.stored_pages is not None and len(context.stored_pages) == 20


def _yank(catalogue, root):
    catalogue.yank("beta", "2.0", reason="broken")


def _add(catalogue, root):
    make_wheel(root, "beta", "3.0")


def _replace(catalogue, root):
    # The same name and size, written a second later.
    wheel = root / "beta-2.0-py3-none-any.whl"
    stat = wheel.stat()
    os.utime(wheel, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def _remove(catalogue, root):
    (root / "beta-1.0.tar.gz").unlink()


def _sign(catalogue, root):
    (root / "beta-2.0.tar.gz.asc").write_text("-----BEGIN PGP SIGNATURE-----\n")


@pytest.mark.parametrize("change", [_yank, _add, _replace, _remove, _sign])
def test_a_restart_takes_from_the_store_only_the_pages_of_unchanged_projects(
    wsgi_app, index_root, tmp_path, monkeypatch, change
):
    state = str(tmp_path / "state")
    first = wsgi_app(root=str(index_root), state_dir=state)
    before = {name: _answers(first, name) for name in ("alpha", "beta")}
    saved_at = (tmp_path / "state" / pagestore.FILENAME).stat().st_mtime_ns

    # One of 40 files or their yanks changed while stopped: too few to save
    # the facts snapshot, or the store, again.
    change(first.app.config["pypiserver.context"].catalogue, index_root)
    second = wsgi_app(root=str(index_root), state_dir=state)
    assert (tmp_path / "state" / pagestore.FILENAME).stat().st_mtime_ns == saved_at

    with monkeypatch.context() as patched:
        _no_rendering(patched)
        assert _answers(second, "alpha") == before["alpha"]
    assert _rendered(second, "alpha") == before["alpha"]  # as it would render them
    changed = _answers(second, "beta")
    assert changed == _rendered(second, "beta")
    assert [etag for etag, _, _ in changed] != [etag for etag, _, _ in before["beta"]]


def test_a_page_changed_since_the_start_is_not_taken_from_the_store(wsgi_app, index_root, tmp_path):
    state = str(tmp_path / "state")
    wsgi_app(root=str(index_root), state_dir=state)
    app = wsgi_app(root=str(index_root), state_dir=state)
    app.app.config["pypiserver.context"].catalogue.yank("gamma", "1.0", reason="old")
    (_, _, html), _ = _answers(app, "gamma")
    assert html.count(b'data-yanked="old"') == 2
    assert _answers(app, "gamma") == _rendered(app, "gamma")


def test_another_hash_in_links_saves_the_store_again(wsgi_app, index_root, tmp_path):
    state = str(tmp_path / "state")
    wsgi_app(root=str(index_root), state_dir=state)
    app = wsgi_app(root=str(index_root), state_dir=state, hash_algo="md5")
    (_, _, html), _ = _answers(app, "alpha")
    assert b"#md5=" in html
    assert _answers(app, "alpha") == _rendered(app, "alpha")
    path = tmp_path / "state" / pagestore.FILENAME
    assert StoredPages.open(path, pagestore.edition("md5")) is not None


def test_a_store_is_saved_again_with_the_snapshot(wsgi_app, index_root, tmp_path):
    state = tmp_path / "state"
    wsgi_app(root=str(index_root), state_dir=str(state))
    path = state / pagestore.FILENAME
    path.unlink()
    wsgi_app(root=str(index_root), state_dir=str(state))  # missing: saved
    assert len(StoredPages.open(path, pagestore.edition("sha256"))) == 20

    # Most files changed while stopped: the snapshot is saved again, and the store.
    shutil.rmtree(index_root)
    index_root.mkdir()
    make_wheel(index_root, "omega", "1.0")
    make_sdist(index_root, "omega", "1.0")
    wsgi_app(root=str(index_root), state_dir=str(state))
    assert len(StoredPages.open(path, pagestore.edition("sha256"))) == 2


def test_a_store_that_cannot_be_saved_costs_only_time(wsgi_app, index_root, tmp_path, monkeypatch, caplog):
    def refuse(path, edition, projects):
        raise OSError("no room")

    monkeypatch.setattr(pagestore, "save", refuse)
    monkeypatch.delattr(os, "fork", raising=False)  # in this process, to see the log
    app = wsgi_app(root=str(index_root), state_dir=str(tmp_path / "state"))
    assert "cannot save the page store" in caplog.text
    assert app.app.config["pypiserver.context"].stored_pages is None
    (_, _, html), _ = _answers(app, "alpha")
    assert b"alpha-2.0.tar.gz" in html


def test_a_project_changed_while_its_pages_are_stored_is_left_out(wsgi_app, index_root):
    catalogue = wsgi_app(root=str(index_root)).app.config["pypiserver.context"].catalogue
    assemble = catalogue.project

    def yank_first(name):
        if name == "beta":  # after its inputs were read, before its pages are rendered
            catalogue.project = assemble  # yank() asks for the project too
            catalogue.yank("beta", "1.0")
        return assemble(name)

    catalogue.project = yank_first
    stored = [name for name, _, _ in simple.pages_to_store(catalogue, "sha256")]
    assert "beta" not in stored and len(stored) == 9
