"""Start and stop the three servers the benchmark compares, with bounded waits.

Every server runs in its own session (process group), so stopping it stops
its workers too and nothing outlives the benchmark.  Start-up time is from
spawn until ``/health`` answers 200; memory is the RSS of the whole process
tree, read from ``/proc``.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "RunningServer",
    "ServerSpec",
    "compile_package",
    "ensure_tools",
    "free_port",
    "install_upstream",
    "nginx_spec",
    "ours_spec",
    "start",
    "static_app_spec",
    "stop",
    "tree_memory",
    "upstream_spec",
]

HOST = "127.0.0.1"
_REPO_ROOT = Path(__file__).resolve().parent.parent
HEALTH = "/health"
_POLL = 0.02


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass(slots=True)
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    startup_seconds: float
    log: Path


class ServerFailed(RuntimeError):
    """A server exited or never became healthy; its log says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", HEALTH)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def start(spec: ServerSpec, log_dir: Path, timeout: float) -> RunningServer:
    """Spawn ``spec`` and wait until it is healthy, at most ``timeout`` seconds."""
    log = log_dir / f"{spec.name}.log"
    env = {**os.environ, **spec.env}
    with log.open("ab") as out:
        began = time.perf_counter()
        process = subprocess.Popen(
            spec.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    server = RunningServer(spec, process, 0.0, log)
    deadline = began + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise ServerFailed(
                f"{spec.name} exited with {process.returncode}; see {log}"
            )
        if _healthy(spec.port):
            server.startup_seconds = time.perf_counter() - began
            return server
        time.sleep(_POLL)
    stop(server)
    raise ServerFailed(f"{spec.name} not healthy after {timeout:.0f} s; see {log}")


def stop(server: RunningServer, timeout: float = 15) -> None:
    """Stop the server's whole process group: TERM, then KILL if it lingers."""
    pgid = server.process.pid  # start_new_session made the server its group leader
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if _group_gone(server.process, pgid, wait):
            break


def _group_gone(process: subprocess.Popen[bytes], pgid: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# -- memory -------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_memory(pid: int) -> dict[str, float]:
    """RSS of ``pid`` and all its descendants: total, largest process, count."""
    todo, seen, sizes = [pid], set(), []
    while todo and len(seen) < 1000:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        sizes.append(_rss_bytes(current))
        todo += _children(current)
    mib = 1024 * 1024
    return {
        "total_mb": sum(sizes) / mib,
        "largest_mb": max(sizes) / mib,
        "processes": len(sizes),
    }


# -- the three servers --------------------------------------------------------


def compile_package(name: str, timeout: float = 120) -> Path | None:
    """Compile the installed package ``name`` to bytecode, as ``pip install``
    does, and return its directory (None if it is not installed).

    Ours is usually run from a work tree (``pip install -e``), where nothing
    compiles it ahead; with ``PYTHONDONTWRITEBYTECODE`` set, every start would
    then compile each of its modules again, and the start-up figures would
    time the compiler (0.2 s of a 1.6 s warm start here) rather than the
    server an installation runs.
    """
    spec = importlib.util.find_spec(name)  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations)))
    # Not checked: a package installed read-only was compiled when installed.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(directory)],
        stdout=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    return directory


def _ours_executable() -> list[str]:
    script = Path(sys.executable).with_name("pypi-server")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pypiserver"]


#: Both pypiservers run alike: listening on loopback, no fallback, open.
def _run_args(port: int) -> list[str]:
    return ["run", "-i", HOST, "-p", str(port), "--disable-fallback", "-a", ".", "-P", "."]


def ours_spec(packages: Path, port: int, extra: list[str] | None = None) -> ServerSpec:
    argv = [*_ours_executable(), *_run_args(port), *(extra or []), str(packages)]
    return ServerSpec("ours", argv, port)


def upstream_spec(executable: Path, packages: Path, port: int) -> ServerSpec:
    return ServerSpec("upstream", [str(executable), *_run_args(port), str(packages)], port)


def install_upstream(venv: Path, timeout: float = 300) -> Path:
    """Released pypiserver in its own venv; never imported into our process."""
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, timeout=timeout
    )
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(
        [*pip, "pypiserver", "watchdog", "passlib"], check=True, timeout=timeout
    )
    return venv / "bin" / "pypi-server"


_NGINX_CONF = """\
daemon off;
worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    types {{
        text/html html;
        application/vnd.pypi.simple.v1+json json;
        application/octet-stream whl gz metadata;
    }}
    default_type application/octet-stream;
    access_log {root}/nginx-access.log combined buffer=64k flush=1s;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    sendfile on;
    tcp_nopush on;
    # The pages' gzipped copies, for clients that accept gzip.
    gzip_static on;
    gzip_vary on;
    keepalive_requests 100000;
    # PEP 691 content negotiation: JSON when the client asks for it.
    map $http_accept $simple_page {{
        default index.html;
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
    }}
    server {{
        listen {host}:{port};
        location = /health {{ return 200 "ok\\n"; }}
        location /simple/ {{
            root {static};
            index $simple_page;
            add_header Vary Accept;
        }}
        location ~ ^/packages/(?<meta>[^/]+\\.metadata)$ {{
            alias {static}/metadata/$meta;
        }}
        location /packages/ {{
            alias {packages}/;
        }}
    }}
}}
"""


def nginx_spec(root: Path, static: Path, packages: Path, port: int) -> ServerSpec:
    """nginx serving the pre-rendered static index, configured in ``root``."""
    conf = root / "nginx.conf"
    conf.write_text(
        _NGINX_CONF.format(
            root=root, host=HOST, port=port, static=static, packages=packages
        )
    )
    argv = [_which("nginx") or "nginx", "-p", str(root), "-c", str(conf)]
    return ServerSpec("nginx", argv, port)


def static_app_spec(static: Path, packages: Path, port: int) -> ServerSpec:
    """granian serving the static index through a minimal WSGI application
    (``bench/static_app.py``): what the HTTP server ours runs on can do."""
    argv = [sys.executable, "-m", "bench.static_app", str(port)]
    env = {
        "BENCH_STATIC": str(static),
        "BENCH_PACKAGES": str(packages),
        "PYTHONPATH": str(_REPO_ROOT),
    }
    return ServerSpec("granian", argv, port, env)


# -- tools --------------------------------------------------------------------


def ensure_tools(want_nginx: bool) -> dict[str, bool]:
    """Which of nginx and wrk are present; installs them when running as root."""
    wanted = ["wrk"] + (["nginx"] if want_nginx else [])
    missing = [tool for tool in wanted if _which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *missing],
            check=False,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )
    elif missing:
        print(
            f"missing {' '.join(missing)}: install with "
            f"`sudo apt-get install -y {' '.join(missing)}`",
            file=sys.stderr,
        )
    return {tool: _which(tool) is not None for tool in wanted}


def _which(tool: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
