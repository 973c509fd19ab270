"""Shared test helpers: a real ``pypi-server`` subprocess and the clients that use it.

Helpers are plain functions and classes so that test modules (and the
benchmark) can import them (``from conftest import start_server``); the
fixtures below wrap them with clean-up.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import NoReturn

import pytest
import webtest
from passlib.apache import HtpasswdFile

import pypiserver

# A server that is not up after this long is broken, not slow.
STARTUP_TIMEOUT = 20.0
STOP_GRACE = 5.0
_POLL_INTERVAL = 0.05
# Another process may grab a port between free_port() and the server's bind.
_PORT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exit_code_in_fork(check: Callable[[], bool], timeout: int = 5) -> int:
    """Run ``check`` in a forked child: 0 if it returned true, 1 if false,
    2 if it raised, and minus SIGALRM if it was still running (stuck on a
    lock, say) after ``timeout`` seconds."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 2
        try:
            signal.alarm(timeout)
            code = 0 if check() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def tool(name: str) -> str:
    """The path of an installed console script (pip, uv, twine, gunicorn).

    The copy next to ``sys.executable`` wins, so the tests drive the tools of
    the environment that runs them rather than whatever is first on PATH.
    """
    bindir = Path(sys.executable).parent
    for candidate in (bindir / name, bindir / f"{name}.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name!r} is not installed: pip install -e '.[test]'", pytrace=False
        )
    return found


# --- HTTP --------------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    status: int
    # Header names are case-insensitive (servers may send them lower-cased);
    # a Message looks them up that way and answers None for a missing one.
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Tests check redirects themselves, so a 3xx is returned, not followed.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER_NO_REDIRECT = urllib.request.build_opener(_NoRedirect)
_OPENER = urllib.request.build_opener()


def http_get(
    url: str,
    *,
    follow_redirects: bool = False,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """GET ``url``; any status (4xx, 5xx, 3xx) is a response, not an exception."""
    opener = _OPENER if follow_redirects else _OPENER_NO_REDIRECT
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return HttpResponse(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return HttpResponse(error.code, error.headers, error.read())


def start_download(port: int, path: str) -> tuple[socket.socket, bytes, bytes]:
    """A client with a small receive window that asked for ``path`` and read
    the response headers: (its socket, the headers, the body bytes that
    came with them).  Until it reads on, the server has to hold the rest."""
    sock = socket.socket()
    # Set before connecting: the kernel takes in little for the client.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock, *read_head(sock)


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response headers on ``sock`` and the body bytes that came with them."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before the headers ended: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


def stalled_download(port: int, path: str) -> socket.socket:
    """A client that asked for ``path``, got 200 and reads no more."""
    sock, head, _ = start_download(port, path)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return sock


def stalled_post(port: int, path: str, content_type: str, authorization: str = "") -> socket.socket:
    """A client that sent a POST's headers (with ``authorization``, if
    any) and the start of its body, and sends no more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
    if authorization:
        head += f"Authorization: {authorization}\r\n"
    sock.sendall(f"{head}Content-Length: 100000\r\n\r\n--x\r\n".encode())
    return sock


def raw_search(server: Server) -> tuple[int, str | None]:
    """The status of an XML-RPC search and its Retry-After header."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        body = xmlrpc.client.dumps(({"name": "small"},), "search").encode()
        connection.request("POST", "/", body=body, headers={"Content-Type": "text/xml"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        connection.close()


def wait_until_every_place_is_taken(server: Server, seconds: float = 10) -> None:
    """Returns once a search is refused for want of a place.  A stalled
    client holds its place only once the server has handed its request to
    the application, a moment after the client sent it."""
    deadline = time.monotonic() + seconds
    while raw_search(server)[0] != 503:
        assert time.monotonic() < deadline, f"places not all taken within {seconds:.0f} s"
        time.sleep(0.05)


# --- the server subprocess ---------------------------------------------------


def server_command(port: int | str, args: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pypiserver",
        "run",
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        *args,
    ]


@dataclass(frozen=True)
class Stopped:
    """How a server went down."""

    graceful: bool  # exited on SIGTERM within STOP_GRACE seconds
    seconds: float  # from SIGTERM to the exit of the main process
    leftovers: bool  # processes of its group outlived it and had to be killed


def _kill_group(pgid: int) -> bool:
    """Kill what is left of a process group; True if anything was."""
    if os.name != "posix":
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Server:
    """A running server process; a context manager that stops it on exit."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path):
        self.process = process
        self.port = port
        self.log_path = log_path
        self.stopped: Stopped | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, **kwargs: object) -> HttpResponse:
        """``http_get`` of a path on this server (``"/simple/"``)."""
        return http_get(self.url + path, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> Stopped:
        """SIGTERM, as a supervisor sends it; SIGKILL after ``STOP_GRACE`` seconds.

        Whatever the server left running in its process group (workers that
        outlived their parent) is killed too, so no test leaks a process; the
        answer says whether that was needed.
        """
        if self.stopped is not None:
            return self.stopped
        start = time.monotonic()
        graceful = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                graceful = False
                self.process.kill()
                self.process.wait(timeout=STOP_GRACE)
        self.stopped = Stopped(
            graceful, time.monotonic() - start, _kill_group(self.pid)
        )
        return self.stopped

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def closed_once_logged(server: Server, line: str, socks: Sequence[socket.socket]) -> Iterator[None]:
    """Runs the block while ``socks`` (stalled clients) hold the server's
    places, and closes them as soon as its log has ``line`` once more than
    before the block: what the block does waits for a place, or is refused
    one, before they let go."""
    finished = threading.Event()
    before = server.log_text().count(line)

    def close_once_logged() -> None:
        while server.log_text().count(line) == before and not finished.wait(0.05):
            pass
        for sock in socks:
            sock.close()

    closer = threading.Thread(target=close_once_logged)
    closer.start()
    try:
        yield
    finally:
        finished.set()
        closer.join()


def _wait_until_healthy(server: Server, health: str) -> str | None:
    """None once ``health`` answers 200, else why the server never came up."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return f"exited with status {server.process.returncode}"
        try:
            if server.get(health, timeout=2.0).status == 200:
                return None
        except OSError:
            pass  # not listening yet
        time.sleep(_POLL_INTERVAL)
    return f"no 200 from {health} within {STARTUP_TIMEOUT:.0f} s"


def _spawn(
    command: list[str],
    port: int,
    log_path: Path,
    env: Mapping[str, str] | None,
    cwd: Path | None,
) -> Server:
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            # Its own process group, so that workers it forks can be found
            # (and cleaned up) even if they outlive it.
            start_new_session=os.name == "posix",
        )
    return Server(process, port, log_path)


def start_server(
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cmd: Sequence[str] | None = None,
    health: str = "/health",
    log_dir: Path | None = None,
) -> Server:
    """Start ``python -m pypiserver run -i 127.0.0.1 -p PORT *args`` and wait for it.

    ``cmd`` replaces the whole command (gunicorn, the legacy CLI form); every
    ``{port}`` in it becomes the chosen port.  ``env`` is added to the current
    environment.  ``health`` is the path polled until it answers 200.  Fails
    the test with the server's log if it exits or does not come up in time.
    """
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="pypiserver-log-"))
    why = ""
    for attempt in range(_PORT_ATTEMPTS):
        port = free_port()
        if cmd is None:
            command = server_command(port, args)
        else:
            command = [part.replace("{port}", str(port)) for part in cmd]
        log_path = log_dir / f"server-{port}.log"
        server = _spawn(command, port, log_path, env, cwd)
        why = _wait_until_healthy(server, health) or ""
        if not why:
            return server
        server.stop()
        if "address already in use" not in server.log_text().lower():
            break
    pytest.fail(
        f"server did not start ({why}): {' '.join(command)}\n--- log ---\n"
        f"{server.log_text()}",
        pytrace=False,
    )


# --- clients -----------------------------------------------------------------


def client_env(index_url: str, home: Path | None = None) -> dict[str, str]:
    """An environment in which pip and uv see only ``index_url`` (``.../simple/``).

    User and site configuration is ignored and caches are off, so no client
    can reach PyPI or answer from an earlier run.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "UV_"))
    }
    env.update(
        PIP_INDEX_URL=index_url,
        PIP_NO_CACHE_DIR="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INPUT="1",
        # Containers run as root; that warning would hide the ones that matter.
        PIP_ROOT_USER_ACTION="ignore",
        UV_INDEX_URL=index_url,
        UV_DEFAULT_INDEX=index_url,
        UV_NO_CACHE="1",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        UV_NO_PROGRESS="1",
    )
    if home is not None:
        env["HOME"] = str(home)
    return env


def run_client(
    args: Sequence[str], *, env: Mapping[str, str], timeout: float = 120.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a client command to completion, capturing its text output."""
    return subprocess.run(
        list(args),
        check=False,  # callers assert on the result, with its output in view
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def tools_env(server: Server, home: Path) -> dict[str, str]:
    """pip/uv pointed at ``server`` only, and twine, poetry, pdm and hatch
    isolated in ``home``: no user configuration, cache or keyring."""
    env = client_env(f"{server.url}/simple/", home=home)
    for key in list(env):
        if key.startswith(("TWINE_", "POETRY_", "PDM_", "HATCH_")):
            del env[key]
    # poetry and pdm install into an activated virtual environment (the one
    # running the tests, say) rather than a project's own.
    env.pop("VIRTUAL_ENV", None)
    (home / "hatch").mkdir(parents=True, exist_ok=True)
    (home / "hatch" / "config.toml").touch()
    env.update(
        # No desktop keyring is asked for passwords, nor remembers them.
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        POETRY_CONFIG_DIR=str(home / "poetry-config"),
        POETRY_CACHE_DIR=str(home / "poetry-cache"),
        POETRY_DATA_DIR=str(home / "poetry-data"),
        POETRY_NO_INTERACTION="1",
        POETRY_KEYRING_ENABLED="false",
        # pdm keeps its configuration and caches under the XDG directories.
        PDM_CHECK_UPDATE="false",
        PDM_NON_INTERACTIVE="1",
        HATCH_CONFIG=str(home / "hatch" / "config.toml"),
        HATCH_CACHE_DIR=str(home / "hatch-cache"),
        HATCH_DATA_DIR=str(home / "hatch-data"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        NO_COLOR="1",
    )
    return env


def write_users(path: Path, users: dict[str, str], scheme: str = "apr_md5_crypt") -> None:
    """Add or update users in the htpasswd file at ``path``."""
    passwords = HtpasswdFile(str(path), new=not path.exists(), default_scheme=scheme)
    for user, password in users.items():
        passwords.set_password(user, password)
    passwords.save()


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    """A client's exit status and output, for an assertion message."""
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


# --- fixtures ----------------------------------------------------------------

StartServer = Callable[..., Server]


def _no_process_left(*args: object) -> NoReturn:
    raise BlockingIOError("fork: resource temporarily unavailable")


@pytest.fixture(params=["works", "absent", "fails"])
def fork(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way os.fork() can be found: working, absent (as on Windows) or
    failing for want of processes.  Code that forks when it can must give
    the same result in all three."""
    if request.param == "absent":
        monkeypatch.delattr(os, "fork", raising=False)
    elif not hasattr(os, "fork"):
        pytest.skip("needs fork()")
    elif request.param == "fails":
        monkeypatch.setattr(os, "fork", _no_process_left)
    return request.param


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """``start_server`` with the same arguments; every server it started is stopped."""
    started: list[Server] = []

    def start(args: Sequence[str] = (), **kwargs: object) -> Server:
        kwargs.setdefault("log_dir", tmp_path_factory.mktemp("server-log"))
        server = start_server(args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def packages_dir(tmp_path: Path) -> Path:
    """An empty directory to serve distributions from."""
    directory = tmp_path / "packages"
    directory.mkdir()
    return directory


# --- the application in-process ------------------------------------------------


@pytest.fixture
def wsgi_app(tmp_path: Path) -> Iterator[Callable[..., webtest.TestApp]]:
    """``pypiserver.app(**config)`` under webtest.  Each application gets a
    state directory of its own unless the config names one, and its watcher
    and state store are closed after the test."""
    contexts = []

    def factory(**config: object) -> webtest.TestApp:
        config.setdefault("state_dir", str(tmp_path / f"state{len(contexts)}"))
        app = pypiserver.app(**config)
        contexts.append(app.config["pypiserver.context"])
        return webtest.TestApp(app)

    yield factory
    for context in contexts:
        context.close()
