"""The Docker image, its entrypoint and the compose file, checked without an engine.

The entrypoint runs here as a real process (with PYPISERVER_BIN pointing at a
stand-in or at this environment's `pypi-server`); the Dockerfile and the
compose file are read as text and checked for what a build or `compose up`
would rely on.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import pypiserver

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"

posix_only = pytest.mark.skipif(
    os.name != "posix" or shutil.which("sh") is None,
    reason="the entrypoint is a POSIX shell script",
)


# --- small helpers -----------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str) -> int | None:
    """The status of a GET to url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def wait_for_status(
    url: str, proc: subprocess.Popen, timeout: float = 20.0, interval: float = 0.1
) -> int | None:
    """Poll url until it answers, the process dies or the time runs out."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        if proc.poll() is not None:
            return None
        status = http_status(url)
        if status is not None:
            return status
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return None


def server_bin() -> Path:
    """This environment's `pypi-server`, installed beside its interpreter."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts, Path(sys.executable).parent):
        path = candidate / "pypi-server"
        if path.exists():
            return path
    pytest.fail(f"pypi-server is not installed next to {sys.executable}")


def run_entrypoint(
    args: list[str], cwd: Path, bin_path: str | Path, timeout: float = 30
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYPISERVER_BIN=str(bin_path))
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def fake_server(tmp_path: Path) -> Path:
    """A stand-in for pypi-server that prints its pid, then one argument a line."""
    path = tmp_path / "fake-pypi-server"
    path.write_text('#!/bin/sh\necho "$$"\nfor a in "$@"; do echo "$a"; done\n')
    path.chmod(0o755)
    return path


# --- Dockerfile parsing ------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec (JSON) form"
        return value

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        flags: dict[str, str] = {}
        words: list[str] = []
        for word in shlex.split(self.args):
            if word.startswith("--") and not words:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                words.append(word)
        return flags, words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"the stage FROM {self.base} has no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are dropped
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif keyword != "ARG" or stages:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_ignored(relpath: str, patterns: list[str]) -> bool:
    """Whether a path (or a parent of it) is left out of the build context."""
    parts = Path(relpath).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


# --- the entrypoint script ---------------------------------------------------


@posix_only
def test_entrypoint_is_valid_posix_sh() -> None:
    result = subprocess.run(
        ["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_entrypoint_is_an_executable_sh_script() -> None:
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh needs chmod +x"
    assert "set -eu" in ENTRYPOINT.read_text()


# What the container is given → what pypi-server receives.
DISPATCH = [
    ("no arguments", [], ["run", "-p", "8080", "/data/packages"]),
    ("run", ["run", "-p", "8080", "pk"], ["run", "-p", "8080", "pk"]),
    ("update", ["update", "-x", "packages"], ["update", "-x", "packages"]),
    ("version", ["--version"], ["--version"]),
    ("short help", ["-h"], ["-h"]),
    ("long help", ["--help"], ["--help"]),
    ("help with more", ["--help", "pk"], ["run", "-p", "8080", "--help", "pk"]),
    (
        "legacy options",
        ["-P", ".htpasswd", "packages"],
        ["run", "-p", "8080", "-P", ".htpasswd", "packages"],
    ),
    (
        "spaces kept",
        ["-a", "update", "-P", "my passwords", "packages"],
        ["run", "-p", "8080", "-a", "update", "-P", "my passwords", "packages"],
    ),
    ("legacy update", ["-U", "packages"], ["-U", "packages"]),
    (
        "legacy long update",
        ["-v", "--update-packages", "packages"],
        ["-v", "--update-packages", "packages"],
    ),
    ("directory", ["packages"], ["run", "-p", "8080", "packages"]),
    (
        "directory then options",
        ["packages", "-P", ".htpasswd"],
        ["run", "-p", "8080", "packages", "-P", ".htpasswd"],
    ),
]


@posix_only
@pytest.mark.parametrize(
    ("args", "server_argv"),
    [pytest.param(args, argv, id=name) for name, args, argv in DISPATCH],
)
def test_entrypoint_hands_server_arguments_to_pypi_server(
    tmp_path: Path, fake_server: Path, args: list[str], server_argv: list[str]
) -> None:
    (tmp_path / "packages").mkdir()
    env = dict(os.environ, PYPISERVER_BIN=str(fake_server))
    proc = subprocess.Popen(
        [str(ENTRYPOINT), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    pid, *argv = out.splitlines()
    assert argv == server_argv
    # Same pid: the shell exec'd the server, so signals reach it directly.
    assert int(pid) == proc.pid


@posix_only
def test_entrypoint_execs_other_commands(tmp_path: Path, fake_server: Path) -> None:
    result = run_entrypoint(["echo", "hi"], cwd=tmp_path, bin_path=fake_server)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"


@posix_only
def test_entrypoint_replaces_itself_with_other_commands(
    tmp_path: Path, fake_server: Path
) -> None:
    env = dict(os.environ, PYPISERVER_BIN=str(fake_server))
    proc = subprocess.Popen(
        [str(ENTRYPOINT), "sh", "-c", 'echo "$$"'],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert int(out) == proc.pid


@posix_only
def test_entrypoint_does_not_serve_a_missing_directory(
    tmp_path: Path, fake_server: Path
) -> None:
    # Not a directory and not a command: the exec fails instead of starting a
    # server on a path that does not exist.
    result = run_entrypoint(["no-such-dir"], cwd=tmp_path, bin_path=fake_server)
    assert result.returncode != 0
    assert result.stdout == ""


@posix_only
def test_entrypoint_prints_the_real_version(tmp_path: Path) -> None:
    result = run_entrypoint(["--version"], cwd=tmp_path, bin_path=server_bin())
    assert result.returncode == 0, result.stderr
    assert pypiserver.__version__ in result.stdout + result.stderr


@posix_only
@pytest.mark.e2e
def test_entrypoint_starts_a_server_that_stops_on_sigterm(tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    port = free_port()
    env = dict(os.environ, PYPISERVER_BIN=str(server_bin()))
    proc = subprocess.Popen(
        [str(ENTRYPOINT), "run", "-p", str(port), "-i", "127.0.0.1", str(packages)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    health = f"http://127.0.0.1:{port}/health"
    try:
        status = wait_for_status(health, proc)
        if status is None:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"the server did not answer /health: {err.decode()[-2000:]}")
        assert status == 200
        check = subprocess.run(healthcheck_argv(port), capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr

        # SIGTERM to the entrypoint's pid must stop the server itself: if the
        # script had not exec'd, only the shell would die and the port would
        # still answer.
        proc.terminate()
        proc.wait(timeout=15)
        assert http_status(health) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


# --- the Dockerfile ----------------------------------------------------------


def healthcheck_argv(port: int) -> list[str]:
    """The image's HEALTHCHECK command, aimed at port instead of 8080."""
    stage = parse_dockerfile(DOCKERFILE.read_text())[-1]
    args = stage.last("HEALTHCHECK").args
    argv = json.loads(args[args.index("CMD") + len("CMD"):].strip())
    assert argv[0] == "python"
    return [sys.executable, *(a.replace(":8080/", f":{port}/") for a in argv[1:])]


def test_healthcheck_fails_when_nothing_listens() -> None:
    result = subprocess.run(
        healthcheck_argv(free_port()), capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "URLError" in result.stderr


def test_dockerfile_is_multi_stage_on_python_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert stages[-1].base == "python:3.12-slim"
    assert all(stage.name for stage in stages[:-1]), "name every build stage"


def test_builder_builds_the_wheel_and_the_venv(stages: list[Stage]) -> None:
    builder_runs = " ".join(i.args for s in stages[:-1] for i in s.all("RUN"))
    assert "pip wheel --no-deps -w /wheels ." in builder_runs
    assert "venv /opt/pypiserver" in builder_runs


def test_final_stage_copies_the_venv_from_the_builder(
    stages: list[Stage], final: Stage
) -> None:
    builders = {stage.name for stage in stages[:-1]}
    copies = [i.flags_and_words() for i in final.all("COPY")]
    venv = ["/opt/pypiserver", "/opt/pypiserver"]
    assert any(
        flags.get("from") in builders and words == venv for flags, words in copies
    )
    env = " ".join(i.args for i in final.all("ENV"))
    assert "/opt/pypiserver/bin" in env, "the venv must be on PATH"


def test_every_copied_source_is_in_the_build_context(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    checked = 0
    for stage in stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            flags, words = instruction.flags_and_words()
            if "from" in flags:
                continue
            for source in words[:-1]:
                rel = source.strip("/") or "."
                assert (REPO / rel).exists(), f"COPY source {source} is missing"
                if rel != ".":
                    assert not is_ignored(rel, patterns), f"{source} is dockerignored"
                checked += 1
    assert checked >= 2


def test_final_stage_runs_as_the_unprivileged_user(final: Stage) -> None:
    user = final.last("USER").args.split(":")[0]
    assert user not in {"root", "0", ""}
    assert user == "pypiserver"
    runs = " ".join(i.args for i in final.all("RUN"))
    assert "groupadd" in runs and "--gid 9898" in runs
    assert "useradd" in runs and "--uid 9898" in runs
    # The USER switch comes after every RUN, which needs root.
    keywords = [i.keyword for i in final.instructions]
    assert max(n for n, k in enumerate(keywords) if k == "RUN") < keywords.index("USER")


def test_package_volume_belongs_to_the_user(final: Stage) -> None:
    keywords = [i.keyword for i in final.instructions]
    volume = final.last("VOLUME")
    assert "/data/packages" in volume.args
    chowns = [
        n for n, i in enumerate(final.instructions)
        if i.keyword == "RUN" and "chown" in i.args and "/data" in i.args
    ]
    # Changes made below a VOLUME after it is declared are discarded.
    assert chowns and chowns[0] < keywords.index("VOLUME")
    assert final.last("WORKDIR").args == "/data"


def test_final_stage_exposes_and_health_checks_8080(final: Stage) -> None:
    assert "8080" in final.last("EXPOSE").args.split()
    check = final.last("HEALTHCHECK").args
    assert "http://127.0.0.1:8080/health" in check
    assert "urllib" in check
    assert "curl" not in check and "wget" not in check


def test_entrypoint_and_command(final: Stage) -> None:
    entry = final.last("ENTRYPOINT").exec_form()
    assert entry == ["/docker/entrypoint.sh"]
    assert final.last("CMD").exec_form() == ["run", "-p", "8080", "/data/packages"]

    # The entrypoint file is copied in from the repository, executable.
    target = entry[0]
    source = None
    for instruction in final.all("COPY"):
        flags, words = instruction.flags_and_words()
        if "from" in flags:
            continue
        *sources, dest = words
        for src in sources:
            if dest == target:
                source = REPO / src
            elif dest.endswith("/") and target.startswith(dest):
                candidate = REPO / src / target[len(dest):]
                if src.endswith("/") or (REPO / src).is_dir():
                    source = candidate
    assert source is not None, f"no COPY puts a file at {target}"
    assert source.resolve() == ENTRYPOINT
    made_executable = any(
        "chmod" in i.args and target in i.args for i in final.all("RUN")
    ) or any(i.flags_and_words()[0].get("chmod") for i in final.all("COPY"))
    assert made_executable
    assert os.access(source, os.X_OK)


def test_no_credentials_in_the_image() -> None:
    text = DOCKERFILE.read_text().lower()
    for word in ("password", "passwd", "token", "secret"):
        assert word not in text
    stages = parse_dockerfile(DOCKERFILE.read_text())
    for stage in stages:
        for instruction in stage.all("ENV") + stage.all("ARG"):
            assert "key" not in instruction.args.lower()


def test_dockerignore_keeps_junk_out_of_the_context() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".git/config",
        "bench/results/run.json",
        ".venv/bin/python",
        "venv/bin/python",
        "pypiserver/__pycache__/cli.cpython-312.pyc",
        ".pytest_cache/README.md",
    ):
        assert is_ignored(path, patterns), path
    for path in ("setup.cfg", "setup.py", "pyproject.toml", "pypiserver/__init__.py",
                 "docker/entrypoint.sh", "LICENSE.txt"):
        assert not is_ignored(path, patterns), path


# --- docker-compose.yml ------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the compose file")
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_builds_and_tags_the_image(compose: dict) -> None:
    service = compose["services"]["pypiserver"]
    build = service["build"]
    context = build if isinstance(build, str) else build["context"]
    assert (COMPOSE.parent / context / "Dockerfile").resolve() == DOCKERFILE
    assert service["image"] == "pypiserver/pypiserver:latest"
    assert service["restart"] == "unless-stopped"


def test_compose_publishes_the_container_port(compose: dict) -> None:
    ports = [str(p) for p in compose["services"]["pypiserver"]["ports"]]
    assert "8080:8080" in ports


def test_compose_keeps_packages_in_a_named_volume(compose: dict) -> None:
    mounts = compose["services"]["pypiserver"]["volumes"]
    named = {}
    for mount in mounts:
        source, target = str(mount).split(":")[:2]
        named[target] = source
    source = named["/data/packages"]
    assert not source.startswith((".", "/", "~")), "a named volume, not a bind mount"
    assert source in (compose.get("volumes") or {})


def test_compose_htpasswd_mount_is_documented() -> None:
    text = COMPOSE.read_text()
    assert "/data/.htpasswd" in text


def test_compose_traefik_routes_https_to_pypiserver(compose: dict) -> None:
    traefik = compose["services"]["traefik"]
    assert "https" in traefik["profiles"]
    assert "443:443" in [str(p) for p in traefik["ports"]]
    assert any("providers.docker" in arg for arg in traefik["command"])

    labels = compose["services"]["pypiserver"]["labels"]
    if isinstance(labels, list):
        labels = dict(label.split("=", 1) for label in labels)
    assert labels["traefik.enable"] == "true"
    routers = {k.split(".")[3] for k in labels if k.startswith("traefik.http.routers.")}
    assert routers, "no Traefik router for pypiserver"
    for router in routers:
        assert "Host(" in labels[f"traefik.http.routers.{router}.rule"]
        assert labels[f"traefik.http.routers.{router}.tls.certresolver"]
    ports = [v for k, v in labels.items() if k.endswith(".loadbalancer.server.port")]
    assert ports == ["8080"]
