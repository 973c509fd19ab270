"""Access control end to end: ``-a``/``-P`` on a real server.

The matrix below is what a user of each ``-a`` setting sees for listing,
downloading and uploading, with no, wrong and right credentials.  The rest
drives pip and uv with credentials in the index URL, edits the htpasswd file
under a running server, and starts the server without a password file.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from passlib.apache import HtpasswdFile

from conftest import Server, client_env, run_client, start_server, tool, write_users
from dists import make_wheel

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "wonder land"
FILE = "guarded-1.0-py3-none-any.whl"
_AUTH_MODES = ("update", "update,download", "update,download,list", ".")


# --- helpers --------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


CREDENTIALS = {
    "none": {},
    "wrong": basic(USER, "not the password"),
    "right": basic(USER, PASSWORD),
}


def upload(server: Server, wheel: Path, headers: dict[str, str]) -> requests.Response:
    content = wheel.read_bytes()
    return requests.post(
        server.url + "/",
        data={":action": "file_upload", "sha256_digest": hashlib.sha256(content).hexdigest()},
        files={"content": (wheel.name, content)},
        headers=headers,
        timeout=30,
    )


@pytest.fixture(scope="module")
def htpasswd_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "htpasswd"
    write_users(path, {USER: PASSWORD})
    return path


@pytest.fixture(scope="module")
def auth_servers(tmp_path_factory: pytest.TempPathFactory, htpasswd_file: Path) -> Iterator:
    """``get(mode)``: one server per ``-a`` value for the whole module."""
    started: dict[str, tuple[Server, Path]] = {}

    def get(mode: str) -> tuple[Server, Path]:
        if mode not in started:
            root = tmp_path_factory.mktemp("packages")
            make_wheel(root, "guarded", "1.0")
            passwords = "." if mode == "." else str(htpasswd_file)
            server = start_server(
                ["-a", mode, "-P", passwords, "--state-dir", str(root.parent / f"{root.name}-state"), str(root)],
                log_dir=tmp_path_factory.mktemp("log"),
            )
            started[mode] = (server, root)
        return started[mode]

    yield get
    for server, _ in started.values():
        server.stop()


# --- the matrix ---------------------------------------------------------------------


def expected_status(mode: str, action: str, credentials: str) -> int:
    protected = set() if mode == "." else set(mode.split(","))
    if action not in protected:
        return 200
    return {"none": 401, "wrong": 403, "right": 200}[credentials]


MATRIX = [
    (mode, credentials, action)
    for mode in _AUTH_MODES
    for credentials in CREDENTIALS
    for action in ("list", "download", "update")
]


@pytest.mark.parametrize(
    ("mode", "credentials", "action"),
    MATRIX,
    ids=[f"a={mode}-{credentials}-{action}" for mode, credentials, action in MATRIX],
)
def test_access_matrix(auth_servers, tmp_path, mode, credentials, action):
    server, root = auth_servers(mode)
    headers = CREDENTIALS[credentials]
    expected = expected_status(mode, action, credentials)

    if action == "list":
        status = requests.get(server.url + "/simple/", headers=headers, timeout=30, allow_redirects=False)
        project = requests.get(server.url + "/simple/guarded/", headers=headers, timeout=30)
        assert project.status_code == expected
        if expected == 200:
            assert FILE in project.text
    elif action == "download":
        status = requests.get(f"{server.url}/packages/{FILE}", headers=headers, timeout=30)
        if expected == 200:
            assert status.content == (root / FILE).read_bytes()
    else:
        # A release of its own per case, to see whether this upload was stored.
        version = f"1.{len(mode)}.{list(CREDENTIALS).index(credentials)}"
        wheel = make_wheel(tmp_path, "probe", version)
        status = upload(server, wheel, headers)
        assert (root / wheel.name).exists() == (expected == 200)

    assert status.status_code == expected, status.text
    if expected == 401:
        assert status.headers["WWW-Authenticate"].lower().startswith("basic")
    if expected in (401, 403):
        assert status.text.strip()


# --- real clients with credentials ---------------------------------------------------------


def test_pip_install_with_credentials_in_index_url(auth_servers, tmp_path):
    server, _ = auth_servers("update,download,list")
    authed_index = f"http://{USER}:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{server.port}/simple/"
    env = client_env(authed_index, home=tmp_path / "home")
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--target"]

    without = run_client([*command, str(tmp_path / "t0"), "--index-url", f"{server.url}/simple/", "guarded==1.0"], env=env)
    installed = run_client([*command, str(tmp_path / "t1"), "--index-url", authed_index, "guarded==1.0"], env=env)

    assert without.returncode != 0
    assert "guarded==1.0" in without.stderr
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (tmp_path / "t1" / "guarded" / "__init__.py").read_text() == '__version__ = "1.0"\n'


def test_uv_install_with_credentials_in_index_url(auth_servers, tmp_path):
    server, _ = auth_servers("update,download,list")
    authed_index = f"http://{USER}:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{server.port}/simple/"
    env = client_env(authed_index, home=tmp_path / "home")

    result = run_client(
        [
            tool("uv"), "pip", "install", "--no-cache", "--python", sys.executable,
            "--target", str(tmp_path / "target"), "--index-url", authed_index, "guarded==1.0",
        ],  # fmt: skip
        env=env,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "target" / "guarded" / "__init__.py").is_file()


# --- the htpasswd file changes under a running server ---------------------------------------


@pytest.mark.parametrize(
    "scheme", ["apr_md5_crypt", "ldap_sha1", "bcrypt", "sha256_crypt", "sha512_crypt"]
)
def test_user_added_while_running_can_upload_next_request(server_factory, packages_dir, tmp_path, scheme):
    passwords = tmp_path / "htpasswd"
    write_users(passwords, {USER: PASSWORD})
    server = server_factory(
        ["-a", "update", "-P", str(passwords), "--state-dir", str(tmp_path / "state"), str(packages_dir)]
    )
    wheel = make_wheel(tmp_path, "newcomer", "1.0")
    newcomer = basic("bob", "b0b's secret")
    assert upload(server, wheel, newcomer).status_code == 403

    write_users(passwords, {"bob": "b0b's secret"}, scheme=scheme)
    expected_prefix = {"apr_md5_crypt": "$apr1$", "ldap_sha1": "{SHA}", "bcrypt": "$2"}.get(scheme, "$")
    assert f"bob:{expected_prefix}" in passwords.read_text()

    response = upload(server, wheel, newcomer)

    assert response.status_code == 200, response.text
    assert (packages_dir / wheel.name).is_file()
    # The user already there still gets in, and a wrong password for the new one does not.
    other = make_wheel(tmp_path, "newcomer", "2.0")
    assert upload(server, other, basic("bob", "guess")).status_code == 403
    assert upload(server, other, basic(USER, PASSWORD)).status_code == 200


def test_user_removed_while_running_is_refused(server_factory, packages_dir, tmp_path):
    passwords = tmp_path / "htpasswd"
    write_users(passwords, {USER: PASSWORD, "carol": "leaving soon"})
    server = server_factory(
        ["-a", "update", "-P", str(passwords), "--state-dir", str(tmp_path / "state"), str(packages_dir)]
    )
    first = make_wheel(tmp_path, "leaver", "1.0")
    assert upload(server, first, basic("carol", "leaving soon")).status_code == 200

    users = HtpasswdFile(str(passwords))
    users.delete("carol")
    users.save()

    second = make_wheel(tmp_path, "leaver", "2.0")
    assert upload(server, second, basic("carol", "leaving soon")).status_code == 403
    assert not (packages_dir / second.name).exists()


# --- no password file ------------------------------------------------------------------------------


def test_update_protected_without_password_file_warns_and_refuses_uploads(server_factory, packages_dir, tmp_path):
    make_wheel(packages_dir, "readable", "1.0")
    server = server_factory(["-a", "update", "--state-dir", str(tmp_path / "state"), str(packages_dir)])
    wheel = make_wheel(tmp_path, "refused", "1.0")

    anonymous = upload(server, wheel, {})
    with_credentials = upload(server, wheel, basic(USER, PASSWORD))

    assert "uploads will be refused" in server.log_text()
    assert anonymous.status_code == 401
    assert with_credentials.status_code == 403
    assert not (packages_dir / wheel.name).exists()
    assert server.get("/simple/readable/").status == 200
    assert server.get("/packages/readable-1.0-py3-none-any.whl").status == 200


def test_default_authentication_is_update_only(server_factory, packages_dir, tmp_path):
    """Without ``-a`` the server protects uploads and nothing else."""
    make_wheel(packages_dir, "readable", "1.0")
    passwords = tmp_path / "htpasswd"
    write_users(passwords, {USER: PASSWORD})
    server = server_factory(["-P", str(passwords), "--state-dir", str(tmp_path / "state"), str(packages_dir)])
    wheel = make_wheel(tmp_path, "pushed", "1.0")

    assert server.get("/simple/").status == 200
    assert server.get("/packages/readable-1.0-py3-none-any.whl").status == 200
    assert upload(server, wheel, {}).status_code == 401
    assert upload(server, wheel, basic(USER, PASSWORD)).status_code == 200
    assert "uploads will be refused" not in server.log_text()
