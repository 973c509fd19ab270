"""The upload API (``POST /``) at the WSGI level, with webtest.

These are the fast versions of the rules ``test_e2e_publish`` checks against a
real server: what is stored, what is refused with which status and message,
and that a refused upload leaves the package directory exactly as it was.
"""

from __future__ import annotations

import hashlib
import threading
import time
import xmlrpc.client
from pathlib import Path

import pytest
import webtest
from packaging.utils import canonicalize_name as normalize
from passlib.apache import HtpasswdFile

from dists import make_sdist, make_wheel

from pypiserver.web import transfers

WHEEL = "demo_pkg-1.0-py3-none-any.whl"


# --- fixtures and helpers ---------------------------------------------------------


@pytest.fixture
def root(packages_dir: Path) -> Path:
    return packages_dir


@pytest.fixture
def make_app(wsgi_app, root: Path):
    """Open TestApps over ``root``: anyone may upload."""

    def factory(**config) -> webtest.TestApp:
        config.setdefault("root", str(root))
        config.setdefault("authenticate", [])
        config.setdefault("password_file", ".")
        return wsgi_app(**config)

    return factory


@pytest.fixture
def app(make_app) -> webtest.TestApp:
    return make_app()


@pytest.fixture
def dists(tmp_path: Path) -> Path:
    """Distributions to upload, built outside the package directory."""
    directory = tmp_path / "dists"
    directory.mkdir()
    make_wheel(directory, "demo-pkg", "1.0", summary="A demo package")
    make_sdist(directory, "demo-pkg", "1.0")
    make_wheel(directory, "demo-pkg", "2.0")
    return directory


def listing(root: Path) -> list[str]:
    """Every entry below ``root``, dot-files included (temporary uploads)."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))


def upload(
    app: webtest.TestApp,
    filename: str,
    content: bytes,
    *,
    path: str = "/",
    fields: dict[str, str] | None = None,
    signature: tuple[str, bytes] | None = None,
    **kwargs,
) -> webtest.TestResponse:
    params = {":action": "file_upload", "sha256_digest": hashlib.sha256(content).hexdigest()}
    params.update(fields or {})
    params = {key: value for key, value in params.items() if value is not None}
    files = [("content", filename, content)]
    if signature is not None:
        files.append(("gpg_signature", *signature))
    return app.post(path, params=params, upload_files=files, expect_errors=True, **kwargs)


def post_form(app: webtest.TestApp, fields: dict[str, str], **kwargs) -> webtest.TestResponse:
    return app.post("/", params=fields, expect_errors=True, **kwargs)


# --- successful uploads ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/legacy/", "/upload/", "/legacy", "/upload"])
def test_upload_stores_file_and_lists_it(app, root, dists, path):
    content = (dists / WHEEL).read_bytes()

    response = upload(app, WHEEL, content, path=path, fields={"name": "demo-pkg", "version": "1.0"})

    assert response.status_int == 200
    assert (root / WHEEL).read_bytes() == content
    assert listing(root) == [WHEEL]
    page = app.get("/simple/demo-pkg/")
    assert WHEEL in page.text
    assert hashlib.sha256(content).hexdigest() in page.text
    assert app.get(f"/packages/{WHEEL}").body == content


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("Demo.Pkg", "1.0"),
        ("DEMO_PKG", "01.0"),
        ("demo--pkg", "1.0"),
        ("demo-pkg", "v1.0"),
        (None, None),
    ],
)
def test_form_name_and_version_are_compared_normalised(app, root, dists, name, version):
    content = (dists / WHEEL).read_bytes()

    response = upload(app, WHEEL, content, fields={"name": name, "version": version})

    assert response.status_int == 200, response.text
    assert listing(root) == [WHEEL]


def test_sdist_and_wheel_of_one_release_both_stored(app, root, dists):
    for filename in (WHEEL, "demo_pkg-1.0.tar.gz"):
        content = (dists / filename).read_bytes()
        assert upload(app, filename, content).status_int == 200
    assert listing(root) == ["demo_pkg-1.0-py3-none-any.whl", "demo_pkg-1.0.tar.gz"]


def test_identical_reupload_is_accepted_and_leaves_file_untouched(app, root, dists):
    content = (dists / WHEEL).read_bytes()
    assert upload(app, WHEEL, content).status_int == 200
    before = (root / WHEEL).stat()

    again = upload(app, WHEEL, content)

    assert again.status_int == 200
    after = (root / WHEEL).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert listing(root) == [WHEEL]


def test_different_content_under_existing_name_conflicts(app, root, dists):
    original = (dists / WHEEL).read_bytes()
    assert upload(app, WHEEL, original).status_int == 200

    response = upload(app, WHEEL, original + b"\0")

    assert response.status_int == 409
    assert "File already exists" in response.status
    assert "File already exists" in response.text
    assert (root / WHEEL).read_bytes() == original
    assert listing(root) == [WHEEL]


def test_overwrite_replaces_existing_file(make_app, root, dists):
    app = make_app(overwrite=True)
    original = (dists / WHEEL).read_bytes()
    replacement = original + b"\0"
    assert upload(app, WHEEL, original).status_int == 200
    assert app.get(f"/packages/{WHEEL}").body == original  # and now kept in memory

    response = upload(app, WHEEL, replacement)

    assert response.status_int == 200
    assert (root / WHEEL).read_bytes() == replacement
    assert listing(root) == [WHEEL]
    assert hashlib.sha256(replacement).hexdigest() in app.get("/simple/demo-pkg/").text
    assert app.get(f"/packages/{WHEEL}").body == replacement


def test_file_existing_in_subdirectory_conflicts_and_is_not_duplicated(make_app, root, dists):
    # A file put in a sub-directory by hand is the same file for the index.
    (root / "team").mkdir()
    original = (dists / WHEEL).read_bytes()
    (root / "team" / WHEEL).write_bytes(original)
    app = make_app()

    response = upload(app, WHEEL, original + b"changed")

    assert response.status_int == 409
    assert listing(root) == ["team", f"team/{WHEEL}"]


# --- refused uploads: 400 and nothing written -------------------------------------------


def _wheel_bytes(dists: Path) -> bytes:
    return (dists / WHEEL).read_bytes()


BAD_UPLOADS = [
    # id, filename, extra fields, expected words in the message
    ("not-a-distribution", "README.txt", {}, "README.txt"),
    ("no-extension", "demo_pkg-1.0", {}, "demo_pkg-1.0"),
    ("name-mismatch", WHEEL, {"name": "other-pkg"}, "other-pkg"),
    ("version-mismatch", WHEEL, {"version": "2.0"}, "2.0"),
    ("parent-directory", "../" + WHEEL, {}, ".."),
    ("dotdot-in-name", "demo_pkg-1.0..tar.gz", {}, ".."),
    ("slash", "sub/" + WHEEL, {}, "sub/"),
    ("backslash", "sub\\" + WHEEL, {}, "sub"),
    ("absolute", "/tmp/" + WHEEL, {}, "/tmp/"),
    ("hidden-file", "." + WHEEL, {}, "dot"),
    ("digest-mismatch", WHEEL, {"sha256_digest": "0" * 64}, "sha256_digest"),
    # Longer than a file system takes: it was a 500 "File name too long".
    ("too-long", "demo_pkg-1.0-" + "a" * 240 + "-none-any.whl", {"name": "", "version": ""}, "longer than 251 bytes"),
]


@pytest.mark.parametrize(
    ("filename", "fields", "mentions"),
    [row[1:] for row in BAD_UPLOADS],
    ids=[row[0] for row in BAD_UPLOADS],
)
def test_bad_upload_is_refused_and_writes_nothing(app, root, dists, tmp_path, filename, fields, mentions):
    response = upload(app, filename, _wheel_bytes(dists), fields=fields)

    assert response.status_int == 400, response.text
    assert mentions in response.text
    assert listing(root) == []
    # Nothing escaped the package directory either.
    assert not (tmp_path / WHEEL).exists()
    assert not (root.parent / "tmp").exists()


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({":action": "file_upload", "name": "demo-pkg", "version": "1.0"}, "content"),
        ({"name": "demo-pkg"}, ":action"),
        ({":action": "frobnicate"}, "frobnicate"),
    ],
    ids=["missing-content", "missing-action", "unknown-action"],
)
def test_form_without_upload_is_refused(app, root, fields, mentions):
    response = post_form(app, fields)

    assert response.status_int == 400
    assert mentions in response.text
    assert listing(root) == []


def test_content_sent_as_plain_field_is_refused(app, root):
    response = post_form(app, {":action": "file_upload", "content": "not a file"})

    assert response.status_int == 400
    assert "content" in response.text
    assert listing(root) == []


def test_signature_with_wrong_name_is_refused(app, root, dists):
    response = upload(app, WHEEL, _wheel_bytes(dists), signature=("other.asc", b"sig"))

    assert response.status_int == 400
    assert f"{WHEEL}.asc" in response.text
    assert listing(root) == []


def _multipart(boundary: str, filename: str, content: bytes) -> bytes:
    return (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name=":action"\r\n\r\n'
        "file_upload\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="content"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("content_type", "cut"),
    [
        ("multipart/form-data", 0),
        ("multipart/form-data; boundary=b0undary", 40),
        ("multipart/form-data; boundary=b0undary", 14),
        ("multipart/form-data; boundary=b0undary", 6),
        ("multipart/form-data; boundary=wrong", 0),
    ],
    ids=["no-boundary", "cut-in-content", "no-closing-boundary", "cut-closing-boundary", "boundary-not-in-body"],
)
def test_malformed_multipart_is_refused(app, root, dists, content_type, cut):
    body = _multipart("b0undary", WHEEL, _wheel_bytes(dists))
    if cut:
        body = body[:-cut]

    response = app.request(
        "/", method="POST", body=body, content_type=content_type, expect_errors=True
    )

    assert response.status_int == 400, response.text
    assert response.text.strip()
    assert listing(root) == []


def test_upload_over_size_limit_is_413_naming_the_limit(make_app, root, dists):
    app = make_app(max_upload_size=1024)
    content = _wheel_bytes(dists) + b"\0" * 2048

    response = upload(app, WHEEL, content)

    assert response.status_int == 413
    assert "1024" in response.text
    assert listing(root) == []


def test_upload_under_size_limit_is_stored(make_app, root, dists):
    app = make_app(max_upload_size=1024 * 1024)

    assert upload(app, WHEEL, _wheel_bytes(dists)).status_int == 200
    assert listing(root) == [WHEEL]


# --- signatures ----------------------------------------------------------------------


def test_signature_is_stored_beside_file_and_served(app, root, dists):
    signature = b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n"

    response = upload(app, WHEEL, _wheel_bytes(dists), signature=(f"{WHEEL}.asc", signature))

    assert response.status_int == 200
    assert listing(root) == [WHEEL, f"{WHEEL}.asc"]
    served = app.get(f"/packages/{WHEEL}.asc")
    assert served.body == signature


# --- other actions ------------------------------------------------------------------------


def test_remove_pkg_by_unnormalised_name_removes_release_and_signature(app, root, dists):
    for filename in (WHEEL, "demo_pkg-1.0.tar.gz", "demo_pkg-2.0-py3-none-any.whl"):
        content = (dists / filename).read_bytes()
        signature = (f"{filename}.asc", b"sig") if filename == WHEEL else None
        assert upload(app, filename, content, signature=signature).status_int == 200

    response = post_form(app, {":action": "remove_pkg", "name": "Demo.PKG", "version": "1.0"})

    assert response.status_int == 200
    assert listing(root) == ["demo_pkg-2.0-py3-none-any.whl"]
    page = app.get("/simple/demo-pkg/").text
    assert "demo_pkg-1.0" not in page
    assert "demo_pkg-2.0" in page


@pytest.mark.parametrize(
    ("name", "version"), [("demo-pkg", "3.0"), ("no-such-project", "1.0")]
)
def test_remove_pkg_of_missing_release_is_404(app, root, dists, name, version):
    assert upload(app, WHEEL, _wheel_bytes(dists)).status_int == 200

    response = post_form(app, {":action": "remove_pkg", "name": name, "version": version})

    assert response.status_int == 404
    assert version in response.text
    assert listing(root) == [WHEEL]


@pytest.mark.parametrize("action", ["doc_upload", "submit", "verify"])
def test_ignored_actions_are_accepted(app, root, action):
    response = post_form(app, {":action": action, "name": "demo-pkg", "version": "1.0"})

    assert response.status_int == 200
    assert listing(root) == []


# --- access control on uploads -------------------------------------------------------------


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    users = HtpasswdFile(str(path), new=True)
    users.set_password("alice", "s3cret")
    users.save()
    return path


def _basic(user: str, password: str) -> tuple[str, tuple[str, str]]:
    return ("Basic", (user, password))


@pytest.mark.parametrize(
    ("credentials", "status"),
    [(None, 401), (("alice", "wrong"), 403), (("mallory", "s3cret"), 403), (("alice", "s3cret"), 200)],
    ids=["none", "wrong-password", "unknown-user", "right"],
)
def test_upload_needs_credentials_when_update_protected(make_app, root, dists, htpasswd, credentials, status):
    app = make_app(authenticate=["update"], password_file=str(htpasswd))
    if credentials is not None:
        app.authorization = _basic(*credentials)

    response = upload(app, WHEEL, _wheel_bytes(dists))

    assert response.status_int == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert listing(root) == ([WHEEL] if status == 200 else [])


def test_remove_pkg_needs_credentials_when_update_protected(make_app, root, dists, htpasswd):
    (root / WHEEL).write_bytes(_wheel_bytes(dists))
    app = make_app(authenticate=["update"], password_file=str(htpasswd))
    fields = {":action": "remove_pkg", "name": "demo-pkg", "version": "1.0"}

    assert post_form(app, fields).status_int == 401
    assert listing(root) == [WHEEL]
    app.authorization = _basic("alice", "s3cret")
    assert post_form(app, fields).status_int == 200
    assert listing(root) == []


def test_a_signed_in_upload_waits_for_a_place_and_others_are_refused_at_once(
    make_app, root, dists, htpasswd, tmp_path, monkeypatch
):
    monkeypatch.setattr(transfers, "SIGNED_IN_WAIT", 1.0)
    big = root / "big-1.0-py3-none-any.whl"
    big.write_bytes(bytes(3 << 20) + make_wheel(tmp_path, "big", "1.0").read_bytes())
    app = make_app(authenticate=["update"], password_file=str(htpasswd), threads=4)
    environ = webtest.TestRequest.blank(f"/packages/{big.name}").environ
    held = [app.app(dict(environ), lambda *args: None) for _ in range(3)]  # every place
    content = _wheel_bytes(dists)

    # A search needs no credentials: refused without waiting.
    started = time.monotonic()
    app.post("/", xmlrpc.client.dumps(({"name": "demo"},), "search"), content_type="text/xml", status=503)
    assert time.monotonic() - started < 0.5
    # Signed in, with no place given back: refused once the wait is over.
    app.authorization = _basic("alice", "s3cret")
    started = time.monotonic()
    refused = upload(app, WHEEL, content)
    assert (refused.status_int, refused.headers["Retry-After"]) == (503, "5")
    assert time.monotonic() - started >= 1.0
    assert listing(root) == ["big-1.0-py3-none-any.whl"]
    # Signed in, with a place given back meanwhile: stored.
    threading.Timer(0.3, held.pop().close).start()
    assert upload(app, WHEEL, content).status_int == 200
    assert (root / WHEEL).read_bytes() == content
    for body in held:
        body.close()


def test_an_upload_gives_its_place_back_once_its_body_is_read(make_app, root, dists, monkeypatch):
    app = make_app(threads=2)  # one place
    catalogue = app.app.config["pypiserver.context"].catalogue
    storing, stored = threading.Event(), threading.Event()
    store = catalogue.store

    def slow_store(*args, **kwargs):
        storing.set()
        assert stored.wait(10)
        return store(*args, **kwargs)

    monkeypatch.setattr(catalogue, "store", slow_store)
    uploading = threading.Thread(target=upload, args=(app, WHEEL, _wheel_bytes(dists)))
    uploading.start()
    try:
        assert storing.wait(10)
        # The upload is still being stored, in no place: a body can be read.
        search = xmlrpc.client.dumps(({"name": "demo"},), "search")
        assert app.post("/", search, content_type="text/xml").status_int == 200
    finally:
        stored.set()
        uploading.join()
    assert WHEEL in listing(root)


# --- XML-RPC search ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/RPC2"])
def test_xmlrpc_search_answers_at_upload_paths(app, dists, path):
    upload(app, WHEEL, _wheel_bytes(dists))
    call = xmlrpc.client.dumps(({"name": "DEMO"},), "search").encode()

    response = app.post(path, params=call, content_type="text/xml")

    (hits,), _ = xmlrpc.client.loads(response.body)
    assert [(normalize(hit["name"]), hit["version"]) for hit in hits] == [("demo-pkg", "1.0")]
    assert hits[0]["summary"] == "A demo package"


def test_xmlrpc_entity_bomb_is_400(app):
    bomb = (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE bomb [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n'
        "<methodCall><methodName>search</methodName><params><param><value>"
        "<struct><member><name>name</name><value><string>&c;</string></value>"
        "</member></struct></value></param></params></methodCall>"
    )

    response = app.post("/", params=bomb.encode(), content_type="text/xml", expect_errors=True)

    assert response.status_int == 400
