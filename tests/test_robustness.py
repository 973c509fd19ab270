"""Whatever a client sends, the answer is an HTTP status it can act on, never
a 500: seeded random requests (paths, methods, headers, bodies) at the WSGI
application, open and with every action protected, and seeded random
uploads, which must leave nothing but distributions behind."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
from conftest import write_users
from dists import make_sdist, make_wheel

REQUESTS = 3000
UPLOADS = 1500
SEGMENTS = [
    "simple", "packages", "pypi", "json", "legacy", "+simple", "yank", "unyank", "health", "RPC2",
    "demo", "Demo", "other-pkg", "other_pkg", "1.0", "2.0", "demo-1.0-py3-none-any.whl",
    "demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl.metadata", "demo-1.0.tar.gz.asc", "x.whl",
    "..", ".", "", "%00", "%0d%0a", "%ff", "%2e%2e", "%2f", "%C3%A9", "a" * 300, ";",
]  # fmt: skip
QUERIES = ["", "/", "?format=json", "?format=nope", "?a=%ff", "?:action=file_upload"]
HEADERS = {
    "Accept": [
        "application/vnd.pypi.simple.v1+json", "text/html;q=0", "*/*;q=abc", ";;;", "x" * 5000,
        "application/vnd.pypi.simple.latest+html", "application/vnd.pypi.simple.v1+json;q=1.5",
    ],
    "Accept-Encoding": ["gzip", "gzip;q=0, identity;q=0", "*", "gzip;q=x"],
    "Range": ["bytes=0-10", "bytes=-5", "bytes=10-5", "bytes=a-b", "bytes=0-0,5-6", "items=1-2", "bytes=99999999-"],
    "If-None-Match": ['"abc"', "*", 'W/"x"', "garbage"],
    "If-Modified-Since": ["yesterday", "Mon, 01 Jan 1990 00:00:00 GMT", "Mon, 99 Jan 2999 00:00:00 GMT"],
    "Authorization": [
        "Basic " + base64.b64encode(b"user:secret").decode(), "Basic " + base64.b64encode(b"user:wrong").decode(),
        "Basic !!!", "Bearer x", "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
    ],
    "Content-Type": [
        "multipart/form-data; boundary=xyz", "multipart/form-data", "multipart/form-data; boundary=",
        "text/xml", "application/x-www-form-urlencoded", "application/json",
    ],
}  # fmt: skip
BODIES = [
    b"",
    b"garbage",
    b'--xyz\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n--xyz--\r\n',
    b'--xyz\r\nContent-Disposition: form-data; name="content"; filename="../evil.whl"\r\n\r\nPK\r\n--xyz--\r\n',
    (
        b"<?xml version='1.0'?><methodCall><methodName>search</methodName><params><param><value><struct>"
        b"<member><name>name</name><value><string>demo</string></value></member></struct></value></param>"
        b"</params></methodCall>"
    ),
    b"<?xml version='1.0'?><methodCall><methodName>list_packages</methodName></methodCall>",
    b"<methodCall><methodName>",
    b":action=remove_pkg&name=demo&version=9",
    b"name=demo&version=1.0&filename=x",
]


@pytest.fixture
def packages(packages_dir: Path) -> Path:
    make_wheel(packages_dir, "demo", "1.0")
    make_sdist(packages_dir, "demo", "1.0")
    make_wheel(packages_dir, "other-pkg", "2.0", requires_python=">=3.8")
    return packages_dir


def random_request(rnd: random.Random) -> dict:
    path = "/" + "/".join(rnd.choice(SEGMENTS) for _ in range(rnd.randint(0, 4))) + rnd.choice(QUERIES)
    method = rnd.choice(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
    headers = {name: rnd.choice(values) for name, values in HEADERS.items() if rnd.random() < 0.3}
    body = rnd.choice(BODIES) if method in ("POST", "PUT") else b""
    return {"url": path, "method": method, "headers": headers, "body": body}


@pytest.mark.parametrize("protected", [False, True], ids=["open", "protected"])
def test_no_request_is_answered_with_a_server_error(wsgi_app, packages, tmp_path, protected):
    if protected:
        passwords = tmp_path / "htpasswd"
        write_users(passwords, {"user": "secret"})
        app = wsgi_app(root=[str(packages)], authenticate=["update", "list", "download"], password_file=str(passwords))
    else:
        app = wsgi_app(root=[str(packages)], authenticate=[], password_file=None)
    rnd = random.Random(5)  # seeded: a failure names a request that fails again

    errors = []
    for _ in range(REQUESTS):
        request = random_request(rnd)
        response = app.request(request.pop("url"), expect_errors=True, **request)
        if response.status_int >= 500:
            errors.append((response.request.method, response.request.path_qs, response.status))

    assert errors == []


UPLOAD_NAMES = [
    "demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "other-2.0-py3-none-any.whl", "demo-1.0.zip",
    "../demo-1.0-py3-none-any.whl", "/etc/demo-1.0.tar.gz", "..\\demo-1.0.tar.gz", "sub/demo-1.0.tar.gz",
    "demo-1.0-py3-none-any.whl\x00.txt", ".demo-1.0.tar.gz", "d\u00e9mo-1.0.tar.gz", "demo.exe", "",
    "demo-1.0-py3-none-any.whl.metadata", "demo-notaversion.tar.gz", "a" * 300 + "-1.0.tar.gz",
]  # fmt: skip
UPLOAD_FIELDS = {
    ":action": ["file_upload", "file_upload", "file_upload", "remove_pkg", "doc_upload", ""],
    "name": ["demo", "Demo", "other", "", "../x", "x" * 500],
    "version": ["1.0", "2.0", "", "not a version", "1.0\r\nX-Injected: y"],
    "sha256_digest": ["0" * 64, "zz"],
    "filetype": ["bdist_wheel", "sdist", "x"],
}


def test_no_upload_is_answered_with_a_server_error_or_leaves_a_stray_file(wsgi_app, packages_dir, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    contents = [
        make_wheel(source, "demo", "1.0").read_bytes(), make_sdist(source, "demo", "1.0").read_bytes(),
        b"", b"not a zip", b"PK\x03\x04" + bytes(50),
    ]  # fmt: skip
    app = wsgi_app(root=[str(packages_dir)], authenticate=[], password_file=None)
    rnd = random.Random(7)

    errors = []
    for _ in range(UPLOADS):
        fields = [(name, rnd.choice(values)) for name, values in UPLOAD_FIELDS.items() if rnd.random() < 0.5]
        files = [("content", rnd.choice(UPLOAD_NAMES), rnd.choice(contents))] if rnd.random() < 0.9 else []
        response = app.post(rnd.choice(["/", "/legacy/"]), params=fields, upload_files=files, expect_errors=True)
        if response.status_int >= 500:
            errors.append((fields, [name for _, name, _ in files], response.text))

    assert errors == []
    # Whatever was stored is a distribution at the top of the directory:
    # no temporary file left behind, nothing written beside or above it.
    assert all(path.parent == packages_dir and not path.name.startswith(".") for path in packages_dir.rglob("*"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["packages", "source", "state0"]
