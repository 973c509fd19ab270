"""Publishing end to end: twine, uv, poetry, pdm and hatch upload to a real server.

Every upload is followed by what a user does next, a ``pip install`` of the
uploaded release from the same server.  Bad uploads are sent as raw HTTP and
must leave the package directory exactly as it was, temporary files included;
a 1 GiB upload must not make the server hold the file in memory, nor must a
client slow to read a large download.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import requests
from passlib.apache import HtpasswdFile

from conftest import (
    Server,
    StartServer,
    closed_once_logged,
    output_of,
    run_client,
    stalled_download,
    stalled_post,
    start_download,
    tool,
    tools_env,
    wait_until_every_place_is_taken,
)
from dists import make_sdist, make_sparse_wheel, make_wheel

pytestmark = pytest.mark.e2e

PROJECT = "demo-pkg"
WHEEL = "demo_pkg-1.0-py3-none-any.whl"
SDIST = "demo_pkg-1.0.tar.gz"
USER, PASSWORD = "uploader", "correct horse"
_POLL_INTERVAL = 0.05


# --- helpers ------------------------------------------------------------------------


def listing(root: Path) -> list[str]:
    """Every entry below ``root``, dot-files (temporary uploads) included."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))


def pip_install(server: Server, env: dict[str, str], target: Path, *requirements: str) -> None:
    """Install from ``server`` into ``target`` and check each module's version."""
    result = run_client(
        [
            sys.executable, "-m", "pip", "install", "--no-cache-dir",
            "--index-url", f"{server.url}/simple/", "--target", str(target),
            *requirements,
        ],  # fmt: skip
        env=env,
    )
    assert result.returncode == 0, output_of(result)
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        module = target / name.replace("-", "_").lower() / "__init__.py"
        assert module.read_text() == f'__version__ = "{version}"\n'


@pytest.fixture
def dist_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "dist"
    directory.mkdir()
    make_wheel(directory, PROJECT, "1.0", summary="Published in a test")
    make_sdist(directory, PROJECT, "1.0")
    return directory


@pytest.fixture
def open_server(server_factory: StartServer, packages_dir: Path, tmp_path: Path) -> Server:
    """A server anyone may upload to (``-a . -P .``); its state lives outside
    the package directory, so the directory holds only what was uploaded."""
    return server_factory(
        ["-a", ".", "-P", ".", "--state-dir", str(tmp_path / "state"), str(packages_dir)]
    )


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    users = HtpasswdFile(str(path), new=True, default_scheme="bcrypt")
    users.set_password(USER, PASSWORD)
    users.save()
    return path


@pytest.fixture
def protected_server(server_factory: StartServer, packages_dir: Path, tmp_path: Path, htpasswd: Path) -> Server:
    return server_factory(
        ["-a", "update", "-P", str(htpasswd), "--state-dir", str(tmp_path / "state"), str(packages_dir)]
    )


def twine_upload(server: Server, env, url_path: str, files, user=USER, password=PASSWORD):
    return run_client(
        [
            tool("twine"), "upload", "--non-interactive", "--disable-progress-bar",
            "--repository-url", server.url + url_path, "-u", user, "-p", password,
            *map(str, files),
        ],  # fmt: skip
        env=env,
    )


# --- publishing with each client -------------------------------------------------------


@pytest.mark.parametrize("url_path", ["/", "/legacy/"])
def test_twine_upload_then_pip_install(open_server, packages_dir, dist_dir, tmp_path, url_path):
    env = tools_env(open_server, tmp_path / "home")

    result = twine_upload(open_server, env, url_path, sorted(dist_dir.iterdir()))

    assert result.returncode == 0, output_of(result)
    assert listing(packages_dir) == [WHEEL, SDIST]
    for name in (WHEEL, SDIST):
        assert (packages_dir / name).read_bytes() == (dist_dir / name).read_bytes()
    pip_install(open_server, env, tmp_path / "target", f"{PROJECT}==1.0")


def test_twine_upload_with_htpasswd_credentials(protected_server, packages_dir, dist_dir, tmp_path):
    env = tools_env(protected_server, tmp_path / "home")

    refused = twine_upload(protected_server, env, "/", [dist_dir / WHEEL], password="wrong")
    assert refused.returncode != 0
    assert "403" in refused.stdout + refused.stderr
    assert listing(packages_dir) == []

    accepted = twine_upload(protected_server, env, "/legacy/", [dist_dir / WHEEL])
    assert accepted.returncode == 0, output_of(accepted)
    assert listing(packages_dir) == [WHEEL]
    pip_install(protected_server, env, tmp_path / "target", f"{PROJECT}==1.0")


def test_a_signed_in_twine_upload_waits_for_a_place_while_every_one_is_taken(
    server_factory, packages_dir, dist_dir, tmp_path, htpasswd
):
    # One process of four threads: three places, held by three signed-in
    # clients that stopped sending their uploads.
    args = ["-a", "update", "-P", str(htpasswd), "--workers", "1", "--threads", "4"]
    server = server_factory([*args, str(packages_dir)])
    signed_in = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    stalled = [stalled_post(server.port, "/", "multipart/form-data; boundary=x", signed_in) for _ in range(3)]
    wait_until_every_place_is_taken(server)
    waiting = "a request body waits for a place: all 3 places"
    # A stalled client that reached the server while the wait's searches
    # held a place waited for it too: twine's wait is the next one.
    already = server.log_text().count(waiting)
    with closed_once_logged(server, waiting, stalled):
        # twine retries no POST: it gets its place by waiting for it.
        result = twine_upload(server, tools_env(server, tmp_path / "home"), "/", [dist_dir / WHEEL])
    assert server.log_text().count(waiting) > already, server.log_text()
    assert result.returncode == 0, output_of(result)
    assert (packages_dir / WHEEL).read_bytes() == (dist_dir / WHEEL).read_bytes()


def uv_publish(server: Server, env, files, *extra: str, url_path: str = "/legacy/"):
    return run_client(
        [
            tool("uv"), "publish", "--no-cache", "--trusted-publishing", "never",
            "--publish-url", server.url + url_path, "-u", USER, "-p", PASSWORD,
            *extra, *map(str, files),
        ],  # fmt: skip
        env=env,
    )


@pytest.mark.parametrize("url_path", ["/", "/legacy/"])
def test_uv_publish_then_pip_install(open_server, packages_dir, dist_dir, tmp_path, url_path):
    env = tools_env(open_server, tmp_path / "home")

    result = uv_publish(open_server, env, sorted(dist_dir.iterdir()), url_path=url_path)

    assert result.returncode == 0, output_of(result)
    assert listing(packages_dir) == [WHEEL, SDIST]
    pip_install(open_server, env, tmp_path / "target", f"{PROJECT}==1.0")


def test_uv_publish_with_htpasswd_credentials(protected_server, packages_dir, dist_dir, tmp_path):
    env = tools_env(protected_server, tmp_path / "home")

    result = uv_publish(protected_server, env, [dist_dir / WHEEL])

    assert result.returncode == 0, output_of(result)
    assert listing(packages_dir) == [WHEEL]


POETRY_PYPROJECT = """\
[project]
name = "poetry-demo"
version = "0.3.0"
description = "A poetry project published in a test"
requires-python = ">=3.8"

[tool.poetry]
packages = [{ include = "poetry_demo" }]

[build-system]
requires = ["poetry-core>=2.0"]
build-backend = "poetry.core.masonry.api"
"""


@pytest.fixture
def poetry_project(tmp_path: Path) -> Path:
    project = tmp_path / "poetry-demo"
    (project / "poetry_demo").mkdir(parents=True)
    (project / "poetry_demo" / "__init__.py").write_text('__version__ = "0.3.0"\n')
    (project / "pyproject.toml").write_text(POETRY_PYPROJECT)
    (project / "README.md").write_text("demo\n")
    return project


def poetry(env, project: Path, *args: str):
    return run_client([tool("poetry"), "--no-ansi", "-n", "-C", str(project), *args], env=env)


def configure_poetry(server: Server, env, project: Path, url_path: str = "/") -> None:
    result = poetry(env, project, "config", "repositories.local", server.url + url_path)
    assert result.returncode == 0, output_of(result)
    assert Path(env["POETRY_CONFIG_DIR"], "config.toml").is_file()


def test_poetry_build_publish_then_pip_install(open_server, packages_dir, poetry_project, tmp_path):
    env = tools_env(open_server, tmp_path / "home")
    configure_poetry(open_server, env, poetry_project)
    built = poetry(env, poetry_project, "build")
    assert built.returncode == 0, output_of(built)
    dists = sorted(path.name for path in (poetry_project / "dist").iterdir())
    assert dists == ["poetry_demo-0.3.0-py3-none-any.whl", "poetry_demo-0.3.0.tar.gz"]

    result = poetry(env, poetry_project, "publish", "-r", "local", "-u", USER, "-p", PASSWORD)

    assert result.returncode == 0, output_of(result)
    assert listing(packages_dir) == dists
    pip_install(open_server, env, tmp_path / "target", "poetry-demo==0.3.0")


def test_poetry_publish_skip_existing_different_file(open_server, packages_dir, poetry_project, tmp_path):
    env = tools_env(open_server, tmp_path / "home")
    configure_poetry(open_server, env, poetry_project, "/legacy/")
    dist = poetry_project / "dist"
    dist.mkdir()
    wheel = make_wheel(dist, "poetry-demo", "0.3.0")
    first = poetry(env, poetry_project, "publish", "-r", "local", "-u", USER, "-p", PASSWORD)
    assert first.returncode == 0, output_of(first)
    published = (packages_dir / wheel.name).read_bytes()
    # Same filename, other bytes: what a rebuild with another timestamp gives.
    make_wheel(dist, "poetry-demo", "0.3.0", summary="rebuilt")
    assert wheel.read_bytes() != published

    plain = poetry(env, poetry_project, "publish", "-r", "local", "-u", USER, "-p", PASSWORD)
    skipping = poetry(
        env, poetry_project, "publish", "-r", "local", "-u", USER, "-p", PASSWORD, "--skip-existing"
    )

    assert plain.returncode != 0
    assert "File already exists" in plain.stdout + plain.stderr
    assert skipping.returncode == 0, output_of(skipping)
    assert "File exists. Skipping" in skipping.stdout + skipping.stderr
    assert (packages_dir / wheel.name).read_bytes() == published
    assert listing(packages_dir) == [wheel.name]


def test_hatch_publish_then_pip_install(open_server, packages_dir, dist_dir, tmp_path):
    env = tools_env(open_server, tmp_path / "home")
    files = sorted(map(str, dist_dir.iterdir()))

    result = run_client(
        [tool("hatch"), "publish", "-n", "-r", f"{open_server.url}/legacy/", "-u", USER, "-a", PASSWORD, *files],
        env=env,
    )

    assert result.returncode == 0, output_of(result)
    assert listing(packages_dir) == [WHEEL, SDIST]
    pip_install(open_server, env, tmp_path / "target", f"{PROJECT}==1.0")


def test_hatch_publish_with_htpasswd_credentials(protected_server, packages_dir, dist_dir, tmp_path):
    env = tools_env(protected_server, tmp_path / "home")
    command = [tool("hatch"), "publish", "-n", "-r", f"{protected_server.url}/", "-u", USER]

    refused = run_client([*command, "-a", "wrong", str(dist_dir / WHEEL)], env=env)
    accepted = run_client([*command, "-a", PASSWORD, str(dist_dir / WHEEL)], env=env)

    assert refused.returncode != 0
    assert "403" in refused.stdout + refused.stderr
    assert accepted.returncode == 0, output_of(accepted)
    assert listing(packages_dir) == [WHEEL]


def test_pdm_publish_with_htpasswd_credentials_then_pip_install(protected_server, packages_dir, dist_dir, tmp_path):
    # pdm publishes the dist/ directory of a project; --no-build takes it as built.
    project = dist_dir.parent
    (project / "pyproject.toml").write_text(f'[project]\nname = "{PROJECT}"\nversion = "1.0"\n')
    env = tools_env(protected_server, tmp_path / "home")
    command = [tool("pdm"), "publish", "-p", str(project), "--no-build", "-r", f"{protected_server.url}/", "-u", USER]

    refused = run_client([*command, "-P", "wrong"], env=env)
    assert refused.returncode != 0
    assert "403" in refused.stdout + refused.stderr
    assert listing(packages_dir) == []
    accepted = run_client([*command, "-P", PASSWORD], env=env)

    assert accepted.returncode == 0, output_of(accepted)
    assert listing(packages_dir) == [WHEEL, SDIST]
    pip_install(protected_server, env, tmp_path / "target", f"{PROJECT}==1.0")


# --- uploading what is already there ---------------------------------------------------


def test_uv_publish_check_url_skips_identical_and_refuses_different(open_server, packages_dir, dist_dir, tmp_path):
    env = tools_env(open_server, tmp_path / "home")
    check = ("--check-url", f"{open_server.url}/simple/")
    first = uv_publish(open_server, env, [dist_dir / WHEEL], *check)
    assert first.returncode == 0, output_of(first)
    published = (packages_dir / WHEEL).read_bytes()

    identical = uv_publish(open_server, env, [dist_dir / WHEEL], *check)
    assert identical.returncode == 0, output_of(identical)

    make_wheel(dist_dir, PROJECT, "1.0", summary="rebuilt with other bytes")
    different = uv_publish(open_server, env, [dist_dir / WHEEL], *check)
    assert different.returncode != 0
    message = different.stdout + different.stderr
    assert WHEEL in message
    assert "do not match" in message or "already exists" in message.lower(), message
    assert (packages_dir / WHEEL).read_bytes() == published
    assert listing(packages_dir) == [WHEEL]


def post_upload(server: Server, path: Path | None, *, url_path: str = "/", data=None, name=None, content=None, **kwargs):
    """A multipart upload as twine sends it, with any field overridden."""
    filename = name or path.name
    content = path.read_bytes() if content is None else content
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "sha256_digest": hashlib.sha256(content).hexdigest(),
    }
    fields.update(data or {})
    return requests.post(
        server.url + url_path,
        data={key: value for key, value in fields.items() if value is not None},
        files={"content": (filename, content, "application/octet-stream"), **kwargs.pop("files", {})},
        timeout=30,
        **kwargs,
    )


@pytest.mark.parametrize("server_name", ["auto", "waitress"])
def test_twine_skip_existing_recognises_conflict(server_factory, packages_dir, dist_dir, tmp_path, server_name):
    from twine.commands.upload import skip_upload
    from twine.package import PackageFile

    server = server_factory(
        ["-a", ".", "-P", ".", "--server", server_name, "--state-dir", str(tmp_path / "state"), str(packages_dir)]
    )
    original = dist_dir / WHEEL
    assert post_upload(server, original).status_code == 200
    package = PackageFile.from_filename(str(original), comment=None)

    identical = post_upload(server, original)
    conflict = post_upload(server, original, content=original.read_bytes() + b"\0")
    bad = post_upload(server, original, name="README.txt")

    assert identical.status_code == 200
    assert conflict.status_code == 409
    if server_name == "waitress":
        # granian always sends the standard phrase ("Conflict"); the body
        # carries the message for every server.
        assert "File already exists" in conflict.reason
    assert "File already exists" in conflict.text
    assert skip_upload(conflict, True, package) is True
    assert skip_upload(conflict, False, package) is False
    # A refusal for another reason must not be mistaken for a duplicate.
    assert bad.status_code == 400
    assert skip_upload(bad, True, package) is False
    assert (packages_dir / WHEEL).read_bytes() == original.read_bytes()


def test_overwrite_option_replaces_file(server_factory, packages_dir, dist_dir, tmp_path):
    server = server_factory(["-a", ".", "-P", ".", "-o", "--state-dir", str(tmp_path / "state"), str(packages_dir)])
    original = dist_dir / WHEEL
    replacement = original.read_bytes() + b"\0"
    assert post_upload(server, original).status_code == 200

    response = post_upload(server, original, content=replacement)

    assert response.status_code == 200, response.text
    assert (packages_dir / WHEEL).read_bytes() == replacement
    assert listing(packages_dir) == [WHEEL]
    assert hashlib.sha256(replacement).hexdigest() in server.get(f"/simple/{PROJECT}/").text


# --- bad uploads: raw HTTP, a clear 400, nothing written --------------------------------


def _raw_multipart(boundary: str, filename: str, content: bytes) -> bytes:
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="content"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return head.encode() + content + f"\r\n--{boundary}--\r\n".encode()


def raw_post(server: Server, body: bytes, content_type: str, url_path: str = "/") -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", url_path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.reason, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


BAD_FORMS = [
    # id, filename, form fields, words the message must contain
    ("not-a-distribution", "notes.txt", {}, "notes.txt"),
    ("unknown-extension", "demo_pkg-1.0.rar", {}, "demo_pkg-1.0.rar"),
    ("name-mismatch", WHEEL, {"name": "someone-else"}, "someone-else"),
    ("version-mismatch", WHEEL, {"version": "9.9"}, "9.9"),
    ("parent-directory", "../" + WHEEL, {}, ".."),
    ("nested-parent", "a/../../" + WHEEL, {}, ".."),
    ("subdirectory", "sub/" + WHEEL, {}, "sub/"),
    ("backslash", "..\\" + WHEEL, {}, ".."),
    ("dotdot-in-filename", "demo_pkg-1.0..tar.gz", {}, ".."),
    ("unknown-action", WHEEL, {":action": "destroy"}, "destroy"),
    ("missing-action", WHEEL, {":action": None}, ":action"),
    ("digest-mismatch", WHEEL, {"sha256_digest": "ab" * 32}, "sha256_digest"),
]


@pytest.mark.parametrize(
    ("filename", "fields", "mentions"),
    [row[1:] for row in BAD_FORMS],
    ids=[row[0] for row in BAD_FORMS],
)
def test_bad_upload_is_400_and_writes_nothing(open_server, packages_dir, dist_dir, tmp_path, filename, fields, mentions):
    response = post_upload(open_server, dist_dir / WHEEL, name=filename, data=fields)

    assert response.status_code == 400, response.text
    assert mentions in response.text
    assert listing(packages_dir) == []
    assert not (packages_dir.parent / WHEEL).exists()
    assert open_server.get(f"/simple/{PROJECT}/").status in (301, 302, 303, 404)


def test_missing_content_is_400(open_server, packages_dir):
    response = requests.post(
        open_server.url + "/",
        files={":action": (None, "file_upload"), "name": (None, PROJECT), "version": (None, "1.0")},
        timeout=30,
    )

    assert response.status_code == 400
    assert "content" in response.text
    assert listing(packages_dir) == []


@pytest.mark.parametrize(
    ("content_type", "cut"),
    [
        ("multipart/form-data", 0),
        ("multipart/form-data; boundary=XyZzY", 64),
        ("multipart/form-data; boundary=XyZzY", len("--XyZzY--\r\n")),
    ],
    ids=["no-boundary", "cut-inside-file", "no-closing-boundary"],
)
def test_malformed_multipart_is_400_and_writes_nothing(open_server, packages_dir, dist_dir, content_type, cut):
    body = _raw_multipart("XyZzY", WHEEL, (dist_dir / WHEEL).read_bytes())
    body = body[: len(body) - cut]

    status, _, text = raw_post(open_server, body, content_type)

    assert status == 400, text
    assert text.strip()
    assert listing(packages_dir) == []


def test_connection_dropped_mid_upload_leaves_no_file(open_server, packages_dir, dist_dir):
    content = (dist_dir / WHEEL).read_bytes() + b"\0" * (4 * 1024 * 1024)
    body = _raw_multipart("XyZzY", WHEEL, content)
    with socket.create_connection(("127.0.0.1", open_server.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: multipart/form-data; boundary=XyZzY\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[: len(body) // 2]
        )
    # Whatever the server did with half a body must be gone shortly after.
    deadline = time.monotonic() + 5
    while listing(packages_dir) and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL)
    assert listing(packages_dir) == []
    assert open_server.get("/health").status == 200
    assert post_upload(open_server, dist_dir / WHEEL).status_code == 200
    assert listing(packages_dir) == [WHEEL]


def test_upload_over_max_upload_size_is_413(server_factory, packages_dir, dist_dir, tmp_path):
    server = server_factory(
        ["-a", ".", "-P", ".", "--max-upload-size", "1M", "--state-dir", str(tmp_path / "state"), str(packages_dir)]
    )
    big = (dist_dir / WHEEL).read_bytes() + b"\0" * (2 * 1024 * 1024)

    response = post_upload(server, dist_dir / WHEEL, content=big)

    assert response.status_code == 413
    assert str(1024 * 1024) in response.text or "1M" in response.text
    assert listing(packages_dir) == []
    assert post_upload(server, dist_dir / WHEEL).status_code == 200
    assert listing(packages_dir) == [WHEEL]


# --- a 1 GiB upload in bounded memory --------------------------------------------------------

HUGE_SIZE = 1024**3
_MIB = 1024 * 1024


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces.
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def peak_rss_kib(pid: int) -> int:
    """The sum of every process's peak resident size (VmHWM) in the tree."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total


def send_huge_upload(server: Server, filename: str, tail: bytes, size: int) -> tuple[int, str, str]:
    """Stream a multipart upload of a ``size``-byte file: zeros, then ``tail``.

    A zip archive may be preceded by anything, so the stored file is still a
    readable wheel.  Returns (status, body, sha256 of the file sent).
    """
    boundary = "HugeUploadBoundary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="content"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    end = f"\r\n--{boundary}--\r\n".encode()
    zeros = bytes(_MIB)
    digest = hashlib.sha256()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    try:
        connection.putrequest("POST", "/")
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Content-Length", str(len(head) + size + len(end)))
        connection.endheaders()
        try:
            connection.send(head)
            remaining = size - len(tail)
            while remaining:
                chunk = zeros if remaining >= _MIB else zeros[:remaining]
                connection.send(chunk)
                digest.update(chunk)
                remaining -= len(chunk)
            connection.send(tail)
            digest.update(tail)
            connection.send(end)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The server answered early and closed; show what it said.
            try:
                early = connection.getresponse()
                return early.status, early.read().decode("utf-8", "replace"), ""
            except (OSError, http.client.HTTPException):
                return 0, f"connection closed while sending: {exc}", ""
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace"), digest.hexdigest()
    finally:
        connection.close()


def download_sha256(server: Server, path: str) -> tuple[int, int, str]:
    """(status, bytes read, sha256) of ``path``, read a MiB at a time."""
    digest, size = hashlib.sha256(), 0
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        while chunk := response.read(_MIB):
            digest.update(chunk)
            size += len(chunk)
        return response.status, size, digest.hexdigest()
    finally:
        connection.close()


@pytest.mark.parametrize("server_name", ["auto", "waitress"])
def test_one_gib_upload_and_download_are_streamed(server_factory, packages_dir, dist_dir, tmp_path, server_name):
    server = server_factory(
        ["-a", ".", "-P", ".", "--server", server_name, "--state-dir", str(tmp_path / "state"), str(packages_dir)]
    )
    assert server.get("/simple/").status == 200  # every worker is warm
    before = peak_rss_kib(server.pid)
    filename = "huge_pkg-1.0-py3-none-any.whl"
    tail = make_wheel(tmp_path, "huge-pkg", "1.0").read_bytes()

    status, text, sha256 = send_huge_upload(server, filename, tail, HUGE_SIZE)

    assert status == 200, text
    growth_mib = (peak_rss_kib(server.pid) - before) / 1024
    assert growth_mib < 100, f"server peak RSS grew by {growth_mib:.0f} MiB for a 1 GiB upload"
    assert (packages_dir / filename).stat().st_size == HUGE_SIZE
    assert listing(packages_dir) == [filename]
    assert sha256 in server.get("/simple/huge-pkg/").text

    # And back: the download is streamed too.
    assert download_sha256(server, f"/packages/{filename}") == (200, HUGE_SIZE, sha256)
    growth_mib = (peak_rss_kib(server.pid) - before) / 1024
    assert growth_mib < 100, f"server peak RSS grew by {growth_mib:.0f} MiB for a 1 GiB download"


@pytest.mark.parametrize("server_name", ["auto", "waitress", "gunicorn"])
def test_a_client_reading_slowly_does_not_make_the_server_hold_the_file(
    server_factory, packages_dir, tmp_path, server_name
):
    # A WSGI server that reads the application's chunks faster than the
    # client takes them holds the rest in memory: one slow (or stalled)
    # download of a large file would cost the file's size.  granian did so
    # before 2.8, which is why setup.cfg asks for a later one.
    size = 512 * _MIB
    wheel = make_sparse_wheel(packages_dir, "slow-pkg", "1.0", size)
    with wheel.open("rb") as source:
        sha256 = hashlib.file_digest(source, "sha256").hexdigest()
    server = server_factory(
        ["-a", ".", "-P", ".", "--server", server_name, "--state-dir", str(tmp_path / "state"), str(packages_dir)]
    )
    assert sha256 in server.get("/simple/slow-pkg/").text  # every worker is warm
    before = peak_rss_kib(server.pid)

    sock, head, body = start_download(server.port, f"/packages/{wheel.name}")
    with sock:
        assert head.startswith(b"HTTP/1.1 200"), head
        assert f"content-length: {size}".encode() in head.lower(), head

        # Stalled for three seconds, long enough to read the file many times.
        growth_mib = 0.0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and growth_mib < 100:
            time.sleep(0.1)
            growth_mib = (peak_rss_kib(server.pid) - before) / 1024
        assert growth_mib < 100, f"server peak RSS grew by {growth_mib:.0f} MiB while a client read slowly"

        # Then read to the end: the whole file, unchanged.
        digest, received = hashlib.sha256(body), len(body)
        while received < size and (chunk := sock.recv(_MIB)):
            digest.update(chunk)
            received += len(chunk)
    assert (received, digest.hexdigest()) == (size, sha256)


def test_a_worker_with_every_place_for_large_downloads_stalled_grows_under_80_mib(server_factory, packages_dir):
    # What a worker holds per stalled download is what it reads ahead for
    # it: 48 places with 64 threads.
    wheel = make_sparse_wheel(packages_dir, "slow-pkg", "1.0", 256 * _MIB)
    server = server_factory(["-a", ".", "-P", ".", "--workers", "1", "--threads", "64", str(packages_dir)])
    assert server.get("/simple/slow-pkg/").status == 200
    before = peak_rss_kib(server.pid)
    stalled = [stalled_download(server.port, f"/packages/{wheel.name}") for _ in range(48)]
    try:
        time.sleep(1)  # for the worker to fill what it queues for each
        growth_mib = (peak_rss_kib(server.pid) - before) / 1024
        assert server.get(f"/packages/{wheel.name}").status == 503
    finally:
        for sock in stalled:
            sock.close()
    assert growth_mib < 80, f"48 stalled downloads took {growth_mib:.0f} MiB"


# --- removing and signatures ------------------------------------------------------------------


def test_remove_pkg_by_unnormalised_name(open_server, packages_dir, dist_dir):
    make_wheel(dist_dir, PROJECT, "2.0")
    for name in (WHEEL, SDIST, "demo_pkg-2.0-py3-none-any.whl"):
        assert post_upload(open_server, dist_dir / name).status_code == 200

    removed = requests.post(
        open_server.url + "/",
        data={":action": "remove_pkg", "name": "DEMO.pkg", "version": "1.0"},
        timeout=30,
    )
    again = requests.post(
        open_server.url + "/legacy/",
        data={":action": "remove_pkg", "name": "Demo_Pkg", "version": "1.0"},
        timeout=30,
    )

    assert removed.status_code == 200, removed.text
    assert listing(packages_dir) == ["demo_pkg-2.0-py3-none-any.whl"]
    page = open_server.get(f"/simple/{PROJECT}/").text
    assert "demo_pkg-1.0" not in page
    assert "demo_pkg-2.0-py3-none-any.whl" in page
    assert open_server.get(f"/packages/{WHEEL}").status == 404
    assert again.status_code == 404


def test_signature_upload_is_served_beside_file(open_server, packages_dir, dist_dir):
    signature = b"-----BEGIN PGP SIGNATURE-----\n\niQEz\n-----END PGP SIGNATURE-----\n"

    response = post_upload(
        open_server,
        dist_dir / WHEEL,
        files={"gpg_signature": (f"{WHEEL}.asc", signature, "application/octet-stream")},
    )

    assert response.status_code == 200, response.text
    assert listing(packages_dir) == [WHEEL, f"{WHEEL}.asc"]
    served = open_server.get(f"/packages/{WHEEL}.asc")
    assert served.status == 200
    assert served.body == signature
    assert open_server.get(f"/packages/{WHEEL}").body == (dist_dir / WHEEL).read_bytes()
