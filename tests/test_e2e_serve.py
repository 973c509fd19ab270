"""Serving end to end: the real ``pypi-server`` process, the real pip and uv.

Every test starts the server as a subprocess on a free loopback port over
distributions built by :mod:`dists`, then checks what a user would see: what
the clients resolve and install, what appears when a file is dropped into a
served directory, and how the command line reports bad input.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    STOP_GRACE,
    Server,
    client_env,
    closed_once_logged,
    free_port,
    http_get,
    raw_search,
    read_head,
    run_client,
    server_command,
    stalled_download,
    stalled_post,
    start_server,
    tool,
)
from dists import make_sdist, make_sparse_wheel, make_wheel

import pypiserver

pytestmark = pytest.mark.e2e

# README promises a copied file is listed within a second; how soon is the
# benchmark's to measure (bench/run.py, "copied in, listed after"), not a
# test's.  Nothing but the watcher lists a file no request uploaded, so these
# tests wait long enough that a busy machine's pauses cannot fail them, and a
# watcher that missed the change still does.
APPEAR_WITHIN = 15.0
_POLL_INTERVAL = 0.05


# --- the served corpus ---------------------------------------------------------


def build_corpus(directory: Path) -> None:
    """An app that needs a library from the same index, and a Requires-Python split."""
    make_wheel(
        directory, "demo-app", "1.0", requires_dist=["demo-lib>=1.0"], summary="app"
    )
    make_wheel(directory, "demo-lib", "1.0")
    make_wheel(directory, "demo-lib", "1.1")
    make_sdist(directory, "demo-lib", "1.1")
    make_wheel(directory, "future-proof", "1.0", requires_python=">=3.8")
    make_wheel(directory, "future-proof", "2.0", requires_python=">=4")
    make_sdist(directory, "future-proof", "2.0", requires_python=">=4")
    nested = directory / "nested" / "deeper"
    nested.mkdir(parents=True)
    make_wheel(nested, "Mixed.Case_Name", "0.1")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("corpus")
    build_corpus(directory)
    return directory


@pytest.fixture(scope="module")
def server(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One read-only server for the tests that do not change the directory."""
    with start_server([str(corpus)], log_dir=tmp_path_factory.mktemp("log")) as running:
        yield running


# --- client helpers ------------------------------------------------------------


def index_url(server: Server) -> str:
    return f"{server.url}/simple/"


def pip(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    url = index_url(server)
    command = [
        tool("pip"),
        *args,
        "--index-url",
        url,
        "--no-cache-dir",
        "--disable-pip-version-check",
    ]
    return run_client(command, env=client_env(url))


def uv(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    url = index_url(server)
    return run_client(
        [tool("uv"), *args, "--index-url", url, "--no-cache"], env=client_env(url)
    )


def succeeded(
    result: subprocess.CompletedProcess[str],
) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result


def installed(site: Path) -> dict[str, str]:
    """Distribution name → version, read from the ``.dist-info`` dirs in ``site``."""
    found = {}
    for info in site.glob("*.dist-info"):
        name, version = info.name[: -len(".dist-info")].rsplit("-", 1)
        found[name] = version
    return found


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_site(venv: Path) -> Path:
    python = venv_python(venv)
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return Path(subprocess.check_output([python, "-c", code], text=True).strip())


def imported_version(
    module: str, *, python: str | Path = sys.executable, cwd: Path | None = None
) -> str:
    code = f"import {module}; print({module}.__version__)"
    return subprocess.check_output(
        [str(python), "-c", code], cwd=cwd, text=True
    ).strip()


def wait_for(condition: Callable[[], bool], within: float) -> float | None:
    """Seconds until ``condition()`` held, or None if it did not within ``within``."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            return None
        time.sleep(_POLL_INTERVAL)


def lists(server: Server, project: str, filename: str) -> bool:
    response = server.get(f"/simple/{project}/")
    return response.status == 200 and f">{filename}</a>" in response.text


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- HTTP pages a client relies on ----------------------------------------------

REDIRECTS = [
    # path,                     where it must send the client
    ("/simple/demo-app", "/simple/demo-app/"),
    ("/simple/Demo_App/", "/simple/demo-app/"),
    ("/simple/DEMO.app", "/simple/demo-app/"),
    ("/simple/mixed.case_name/", "/simple/mixed-case-name/"),
]


@pytest.mark.parametrize(("path", "location"), REDIRECTS)
def test_non_normalised_project_urls_redirect(server, path, location):
    response = server.get(path)
    assert response.status == 301
    assert response.headers["Location"].endswith(location)


def test_root_index_lists_normalised_projects(server):
    hrefs = set(re.findall(r'href="([^"]+)"', server.get("/simple/").text))
    assert {"demo-app/", "demo-lib/", "future-proof/", "mixed-case-name/"} <= hrefs


def test_project_page_links_files_with_digest_and_requires_python(server, corpus):
    page = server.get("/simple/future-proof/").text
    wheel = corpus / "future_proof-2.0-py3-none-any.whl"
    link = re.search(r"<a [^>]*>future_proof-2.0-py3-none-any.whl</a>", page)
    assert link, page
    assert (
        f'href="../../packages/{wheel.name}#sha256={sha256_of(wheel)}"' in link.group()
    )
    # The specifier is HTML-escaped in the attribute (PEP 503).
    assert 'data-requires-python="&gt;=4"' in link.group()


def test_nested_file_downloads_by_relative_path(server, corpus):
    wheel = corpus / "nested" / "deeper" / "mixed_case_name-0.1-py3-none-any.whl"
    page = server.get("/simple/mixed-case-name/").text
    assert (
        "../../packages/nested/deeper/mixed_case_name-0.1-py3-none-any.whl#sha256="
        in page
    )
    response = server.get(
        "/packages/nested/deeper/mixed_case_name-0.1-py3-none-any.whl"
    )
    assert (response.status, response.body) == (200, wheel.read_bytes())


def test_unknown_project_redirects_to_fallback(server):
    response = server.get("/simple/not-hosted-here/")
    assert response.status in (302, 303, 307)
    assert response.headers["Location"] == "https://pypi.org/simple/not-hosted-here/"


def test_health_and_welcome_pages(server):
    health = server.get("/health")
    assert (health.status, health.text.strip()) == (200, "Ok")
    assert server.get("/").status == 200


# --- pip and uv resolve, download and install -----------------------------------


def test_pip_install_pulls_dependency_from_same_index(server, tmp_path):
    target = tmp_path / "target"
    succeeded(pip(server, "install", "--target", str(target), "demo-app"))
    assert installed(target) == {"demo_app": "1.0", "demo_lib": "1.1"}
    assert imported_version("demo_lib", cwd=target) == "1.1"


def test_pip_download_fetches_identical_wheels(server, corpus, tmp_path):
    dest = tmp_path / "dest"
    succeeded(pip(server, "download", "--dest", str(dest), "demo-app"))
    got = {path.name: path.read_bytes() for path in dest.iterdir()}
    wanted = ("demo_app-1.0-py3-none-any.whl", "demo_lib-1.1-py3-none-any.whl")
    assert got == {name: (corpus / name).read_bytes() for name in wanted}


def test_uv_pip_install_into_uv_venv(server, tmp_path):
    venv = tmp_path / "venv"
    succeeded(
        run_client(
            [tool("uv"), "venv", str(venv), "--python", sys.executable],
            env=client_env(index_url(server)),
        )
    )
    succeeded(
        uv(server, "pip", "install", "--python", str(venv_python(venv)), "demo-app")
    )
    assert installed(venv_site(venv)) == {"demo_app": "1.0", "demo_lib": "1.1"}
    assert imported_version("demo_app", python=venv_python(venv)) == "1.0"


def test_uv_pip_compile_pins_from_index(server, tmp_path):
    assert _uv_compile_pins(server, tmp_path, "demo-app") == [("demo-app", "1.0"), ("demo-lib", "1.1")]


def _uv_compile_pins(server: Server, tmp_path: Path, requirement: str) -> list[tuple[str, str]]:
    """(name, version) of each pin ``uv pip compile`` writes for ``requirement``."""
    requirements = tmp_path / "requirements.in"
    requirements.write_text(requirement + "\n")
    result = succeeded(
        uv(server, "pip", "compile", str(requirements), "--no-header", "--python", sys.executable)
    )
    return re.findall(r"^([a-z0-9-]+)==(\S+)", result.stdout, re.MULTILINE)


def _pip_target(server: Server, tmp_path: Path) -> dict[str, str]:
    target = tmp_path / "target"
    succeeded(pip(server, "install", "--target", str(target), "future-proof"))
    return installed(target)


def _uv_target(server: Server, tmp_path: Path) -> dict[str, str]:
    target = tmp_path / "target"
    succeeded(
        uv(
            server,
            "pip",
            "install",
            "--python",
            sys.executable,
            "--target",
            str(target),
            "future-proof",
        )
    )
    return installed(target)


def _uv_compile(server: Server, tmp_path: Path) -> dict[str, str]:
    pins = _uv_compile_pins(server, tmp_path, "future-proof")
    return {name.replace("-", "_"): version for name, version in pins}


@pytest.mark.parametrize(
    "resolve",
    [_pip_target, _uv_target, _uv_compile],
    ids=["pip install", "uv pip install", "uv pip compile"],
)
def test_requires_python_excludes_newer_release(server, tmp_path, resolve):
    # 2.0 needs Python >= 4, so every client must settle for 1.0.
    assert resolve(server, tmp_path) == {"future_proof": "1.0"}


# --- the served directory changes while the server runs ---------------------------


@pytest.mark.parametrize(
    "subdir", ["", "new/sub dir"], ids=["top level", "new subdirectory"]
)
def test_copied_file_is_listed_at_once_and_installs(
    server_factory, packages_dir, tmp_path, subdir
):
    make_wheel(packages_dir, "already-here", "1.0")
    server = server_factory([str(packages_dir)])
    staging = tmp_path / "staging"
    staging.mkdir()
    built = make_wheel(staging, "late-arrival", "3.0")

    destination = packages_dir / subdir
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(built, destination)  # what scp or cp does: write in place

    took = wait_for(lambda: lists(server, "late-arrival", built.name), APPEAR_WITHIN)
    assert took is not None, f"not listed after {APPEAR_WITHIN} s:\n{server.log_text()}"
    assert "late-arrival/" in server.get("/simple/").text
    target = tmp_path / "target"
    succeeded(pip(server, "install", "--target", str(target), "late-arrival"))
    assert installed(target) == {"late_arrival": "3.0"}


def test_a_whole_tree_moved_in_is_listed(server_factory, packages_dir, tmp_path):
    # More files than the change journal names one by one (the workers have
    # no watchers of their own: they hear of it as one "tree" line).
    make_wheel(packages_dir, "already-here", "1.0")
    server = server_factory(["--workers", "2", str(packages_dir)])
    staging = tmp_path / "bulk"
    staging.mkdir()
    wheels = [make_wheel(staging, f"bulk-{n}", "1.0") for n in range(1001)]

    staging.rename(packages_dir / "bulk")  # all at once: one event

    last = wheels[-1]
    took = wait_for(lambda: lists(server, "bulk-1000", last.name), 10 * APPEAR_WITHIN)
    assert took is not None, server.log_text()
    listed = server.get("/simple/").text
    assert all(f"bulk-{n}/" in listed for n in range(1001))


def test_workers_inherit_one_catalogue(server_factory, packages_dir):
    make_wheel(packages_dir, "shared", "1.0")
    server = server_factory(["--workers", "2", str(packages_dir)])
    for _ in range(10):
        assert lists(server, "shared", "shared-1.0-py3-none-any.whl")
    assert server.log_text().count("catalogue of 1 projects, 1 files ready") == 1, server.log_text()


@pytest.mark.parametrize("server_name", ["auto", "waitress", "gunicorn"])
def test_clients_that_stop_reading_large_files_leave_the_index_answering(server_factory, packages_dir, server_name):
    large = make_sparse_wheel(packages_dir, "large", "1.0", 64 << 20)  # far more than socket buffers take
    make_wheel(packages_dir, "small", "1.0")
    # One process of four threads, three of which may send large files.
    server = server_factory(["--server", server_name, "--workers", "1", "--threads", "4", str(packages_dir)])
    stalled = [stalled_download(server.port, f"/packages/{large.name}") for _ in range(3)]
    try:
        # The thread left answers these: without the limit, a fourth stalled
        # client would have taken it too, for as long as it stayed (under
        # granian, for ever).
        page = http_get(server.url + "/simple/small/", timeout=10)
        assert page.status == 200 and "small-1.0-py3-none-any.whl" in page.text
        small = http_get(server.url + "/packages/small-1.0-py3-none-any.whl", timeout=10)
        assert (small.status, small.body[:2]) == (200, b"PK")
        refused = http_get(server.url + f"/packages/{large.name}", timeout=10)
        assert (refused.status, refused.headers["Retry-After"]) == (503, "5"), refused.text
    finally:
        for sock in stalled:
            sock.close()
    # Gone clients give their places back.
    deadline = time.monotonic() + 10
    while (answer := http_get(server.url + f"/packages/{large.name}", timeout=30)).status == 503:
        assert time.monotonic() < deadline, "no place given back within 10 s"
        time.sleep(0.05)
    assert (answer.status, len(answer.body)) == (200, 64 << 20)


@pytest.mark.parametrize("server_name", ["auto", "waitress", "gunicorn"])
def test_clients_that_stop_sending_a_body_leave_the_index_answering(server_factory, packages_dir, server_name):
    make_wheel(packages_dir, "small", "1.0")
    # Anyone may upload: no password check stands before the body.
    args = ["--server", server_name, "--workers", "1", "--threads", "4", "-a", ".", "-P", "."]
    server = server_factory([*args, str(packages_dir)])
    kinds = [("/", "text/xml"), ("/legacy/", "multipart/form-data; boundary=x")] * 2
    stalled = [stalled_post(server.port, path, content_type) for path, content_type in kinds]
    try:
        if server_name == "waitress":
            # It reads a body whole before the application sees it, so the
            # stalled clients hold no thread and searching still works.
            assert found_by_search(server) == ["small"]
        else:
            # Three hold the three places; whichever came last was answered
            # at once, its body unread, and so is a search now.
            answered, _, _ = select.select(stalled, [], [], 10)
            assert len(answered) == 1, answered
            assert read_head(answered[0])[0].startswith(b"HTTP/1.1 503")
            assert raw_search(server) == (503, "5")
        page = http_get(server.url + "/simple/small/", timeout=10)
        assert page.status == 200 and "small-1.0-py3-none-any.whl" in page.text
        small = http_get(server.url + "/packages/small-1.0-py3-none-any.whl", timeout=10)
        assert (small.status, small.body[:2]) == (200, b"PK")
    finally:
        for sock in stalled:
            sock.close()
    # Gone clients give their places back.
    deadline = time.monotonic() + 10
    while raw_search(server)[0] == 503:
        assert time.monotonic() < deadline, "no place given back within 10 s"
        time.sleep(0.05)
    assert found_by_search(server) == ["small"]


def found_by_search(server: Server) -> list[str]:
    """The names an XML-RPC search for "small" finds."""
    hits = xmlrpc.client.ServerProxy(server.url + "/").search({"name": "small"})
    return sorted(hit["name"] for hit in hits)


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_installers_retry_a_large_download_refused_while_every_place_is_taken(
    server_factory, packages_dir, tmp_path, client
):
    # Incompressible, and more than the kernel's socket buffers take in.
    data = os.urandom(16 << 20)
    wheel = make_wheel(packages_dir, "big-pkg", "1.0", data=data)
    server = server_factory(["--workers", "1", "--threads", "4", str(packages_dir)])
    stalled = [stalled_download(server.port, f"/packages/{wheel.name}") for _ in range(3)]
    refused = "refusing a download: all 3 places for files over 1 MiB and request bodies are taken"
    target = tmp_path / "target"
    command = {
        "pip": [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(target), "big-pkg"],
        "uv": [tool("uv"), "pip", "install", "--python", sys.executable, "--target", str(target), "big-pkg"],
    }[client]
    with closed_once_logged(server, refused, stalled):
        result = run_client(command, env=client_env(f"{server.url}/simple/", home=tmp_path / "home"))
    assert result.returncode == 0, result.stdout + result.stderr
    # It was refused first, and got the file once there was a place.
    assert refused in server.log_text()
    if client == "pip":
        assert (target / wheel.name).read_bytes() == wheel.read_bytes()
    else:
        assert (target / "big_pkg" / "data.bin").read_bytes() == data


def test_new_version_of_listed_project_is_installed(
    server_factory, packages_dir, tmp_path
):
    make_wheel(packages_dir, "growing", "1.0")
    server = server_factory([str(packages_dir)])
    assert lists(server, "growing", "growing-1.0-py3-none-any.whl")
    newer = make_wheel(packages_dir, "growing", "1.1")
    assert (
        wait_for(lambda: lists(server, "growing", newer.name), APPEAR_WITHIN)
        is not None
    )
    target = tmp_path / "target"
    succeeded(pip(server, "install", "--target", str(target), "growing"))
    assert installed(target) == {"growing": "1.1"}


def test_removed_file_disappears(server_factory, packages_dir):
    keep = make_wheel(packages_dir, "shrinking", "1.0")
    gone = make_wheel(packages_dir, "shrinking", "2.0")
    last = make_wheel(packages_dir, "vanishing", "1.0")
    server = server_factory(["--disable-fallback", str(packages_dir)])
    assert lists(server, "shrinking", gone.name) and lists(
        server, "vanishing", last.name
    )

    gone.unlink()
    last.unlink()

    assert (
        wait_for(lambda: not lists(server, "shrinking", gone.name), APPEAR_WITHIN)
        is not None
    )
    assert lists(server, "shrinking", keep.name)
    assert server.get(f"/packages/{gone.name}").status == 404
    # A project whose last file went is gone from the index too.
    assert (
        wait_for(lambda: server.get("/simple/vanishing/").status == 404, APPEAR_WITHIN)
        is not None
    )
    assert "vanishing/" not in server.get("/simple/").text


def test_a_directory_renamed_then_removed_is_followed_by_every_worker(server_factory, packages_dir):
    team = packages_dir / "team" / "releases"
    team.mkdir(parents=True)
    wheel = make_wheel(team, "teamwork", "1.0")
    make_wheel(packages_dir, "bystander", "1.0")
    server = server_factory(["--workers", "2", "--disable-fallback", str(packages_dir)])
    link = f'href="../../packages/team/releases/{wheel.name}#'
    assert link in server.get("/simple/teamwork/").text

    (packages_dir / "team").rename(packages_dir / "renamed")

    moved = f'href="../../packages/renamed/releases/{wheel.name}#'
    assert wait_for(lambda: moved in server.get("/simple/teamwork/").text, APPEAR_WITHIN) is not None
    for _ in range(6):  # each worker, whichever answers
        assert moved in server.get("/simple/teamwork/").text
        assert server.get(f"/packages/renamed/releases/{wheel.name}").status == 200
        assert server.get(f"/packages/team/releases/{wheel.name}").status == 404

    shutil.rmtree(packages_dir / "renamed")

    assert wait_for(lambda: server.get("/simple/teamwork/").status == 404, APPEAR_WITHIN) is not None
    for _ in range(6):
        assert server.get("/simple/teamwork/").status == 404
        assert "teamwork/" not in server.get("/simple/").text
    assert lists(server, "bystander", "bystander-1.0-py3-none-any.whl")


def listed_digest(server: Server, project: str, filename: str) -> str | None:
    """The sha256 fragment of ``filename``'s link on the project page, if listed."""
    page = server.get(f"/simple/{project}/").text
    found = re.search(rf'href="[^"#]*/{re.escape(filename)}#sha256=([0-9a-f]+)"', page)
    return found.group(1) if found else None


def _copy_in(built: Path, packages: Path) -> Path:
    return Path(shutil.copy(built, packages))


def _rename_in(built: Path, packages: Path) -> Path:
    # How careful uploaders publish: write elsewhere, then an atomic rename.
    target = packages / built.name
    os.replace(built, target)
    return target


def _write_slowly(built: Path, packages: Path) -> Path:
    # scp over a slow link: the file exists, half-written, for a while.
    data = built.read_bytes()
    target = packages / built.name
    with target.open("wb") as out:
        out.write(data[: len(data) // 2])
        out.flush()
        time.sleep(0.5)
        out.write(data[len(data) // 2 :])
    return target


def _move_directory_in(built: Path, packages: Path) -> Path:
    # A whole directory renamed into the tree yields one event, not one per file.
    folder = built.parent / "bundle"
    folder.mkdir()
    os.replace(built, folder / built.name)
    os.replace(folder, packages / "bundle")
    return packages / "bundle" / built.name


@pytest.mark.parametrize(
    "arrive",
    [_copy_in, _rename_in, _write_slowly, _move_directory_in],
    ids=["copy", "atomic rename", "slow write", "directory moved in"],
)
def test_arriving_file_is_listed_with_its_final_digest(
    server_factory, packages_dir, tmp_path, arrive
):
    server = server_factory([str(packages_dir)])
    staging = tmp_path / "staging"
    staging.mkdir()
    built = make_wheel(staging, "arriving", "1.0", summary="x" * 5000)
    digest = sha256_of(built)
    placed = arrive(built, packages_dir)

    took = wait_for(
        lambda: listed_digest(server, "arriving", placed.name) == digest, APPEAR_WITHIN
    )
    assert took is not None, (
        listed_digest(server, "arriving", placed.name),
        digest,
        server.log_text(),
    )
    target = tmp_path / "target"
    succeeded(
        pip(server, "install", "--target", str(target), "arriving")
    )  # pip checks the digest
    assert installed(target) == {"arriving": "1.0"}


@pytest.mark.parametrize(
    "replace", [shutil.copyfile, os.replace], ids=["overwrite in place", "rename over"]
)
def test_replaced_file_gets_new_digest(server_factory, packages_dir, tmp_path, replace):
    original = make_wheel(packages_dir, "rebuilt", "1.0", summary="first build")
    server = server_factory([str(packages_dir)])
    assert listed_digest(server, "rebuilt", original.name) == sha256_of(original)
    download = f"/packages/{original.name}"
    before = original.read_bytes()
    for _ in range(8):  # reaching each worker process, which keeps the small file in memory
        assert server.get(download).body == before
    staging = tmp_path / "staging"
    staging.mkdir()
    rebuilt = make_wheel(staging, "rebuilt", "1.0", summary="second build")
    digest = sha256_of(rebuilt)
    replace(rebuilt, original)

    took = wait_for(
        lambda: listed_digest(server, "rebuilt", original.name) == digest, APPEAR_WITHIN
    )
    assert took is not None, (listed_digest(server, "rebuilt", original.name), digest)
    for _ in range(8):
        assert server.get(download).body == original.read_bytes()


def test_file_changed_while_stopped_is_rehashed_on_restart(
    server_factory, packages_dir, tmp_path
):
    wheel = make_wheel(packages_dir, "restarted", "1.0", summary="before")
    first = server_factory([str(packages_dir)])
    assert listed_digest(first, "restarted", wheel.name) == sha256_of(wheel)
    first.stop()

    staging = tmp_path / "staging"
    staging.mkdir()
    shutil.copyfile(make_wheel(staging, "restarted", "1.0", summary="after!"), wheel)
    second = server_factory([str(packages_dir)])
    # A persisted digest cache must notice the file is not the one it hashed.
    assert listed_digest(second, "restarted", wheel.name) == sha256_of(wheel)


def test_a_restart_reads_its_page_store_and_sends_the_same_pages(server_factory, packages_dir):
    # 48 files: one added while stopped is too few to save the facts
    # snapshot, or the page store, again.
    for n in range(24):
        make_wheel(packages_dir, f"kept{n}", "1.0")
        make_sdist(packages_dir, f"kept{n}", "1.0")
    json_v1 = "application/vnd.pypi.simple.v1+json"
    wanted = [{"Accept-Encoding": "gzip"}, {"Accept-Encoding": "gzip", "Accept": json_v1}]
    first = server_factory([str(packages_dir)])
    sent = [first.get("/simple/kept0/", headers=headers) for headers in wanted]
    first.stop()
    assert first.log_text().count(" pages saved in ") == 1, first.log_text()

    added = make_wheel(packages_dir, "kept1", "2.0")
    second = server_factory([str(packages_dir)])
    assert " pages saved in " not in second.log_text()  # read back, not saved again
    assert second.log_text().count(f"page store of {len(sent) * 24} pages read in ") == 1
    for headers, before in zip(wanted, sent):
        again = second.get("/simple/kept0/", headers=headers)
        assert again.headers["Content-Encoding"] == before.headers["Content-Encoding"] == "gzip"
        assert (again.headers["ETag"], again.body) == (before.headers["ETag"], before.body)
    changed = second.get("/simple/kept1/", headers=wanted[0])
    assert added.name in gzip.decompress(changed.body).decode()


@pytest.mark.parametrize("backend", ["simple-dir", "cached-dir"])
def test_backends_list_new_files(server_factory, packages_dir, backend):
    server = server_factory(["--backend", backend, str(packages_dir)])
    wheel = make_wheel(packages_dir, "backend-check", "1.0")
    assert (
        wait_for(lambda: lists(server, "backend-check", wheel.name), APPEAR_WITHIN)
        is not None
    )


def test_hash_algo_off_still_installs(server_factory, packages_dir, tmp_path):
    wheel = make_wheel(packages_dir, "unhashed", "1.0")
    server = server_factory(["--hash-algo", "off", str(packages_dir)])
    page = server.get("/simple/unhashed/").text
    assert f'href="../../packages/{wheel.name}"' in page
    target = tmp_path / "target"
    succeeded(pip(server, "install", "--target", str(target), "unhashed"))
    assert installed(target) == {"unhashed": "1.0"}


def test_pip_follows_fallback_to_another_index(server_factory, tmp_path):
    upstream_dir, local_dir = tmp_path / "upstream", tmp_path / "local"
    upstream_dir.mkdir()
    local_dir.mkdir()
    make_wheel(upstream_dir, "upstream-lib", "4.2")
    make_wheel(local_dir, "local-app", "1.0", requires_dist=["upstream-lib"])
    upstream = server_factory([str(upstream_dir)])
    local = server_factory(["--fallback-url", index_url(upstream), str(local_dir)])
    target = tmp_path / "target"
    succeeded(pip(local, "install", "--target", str(target), "local-app"))
    assert installed(target) == {"local_app": "1.0", "upstream_lib": "4.2"}


REFUSED = (400, 403, 404)
TRAVERSALS = [
    # raw request path,                         acceptable statuses
    ("/packages/inside-1.0-py3-none-any.whl", (200,)),  # the control: paths do arrive
    ("/packages/../secret.txt", REFUSED),
    ("/packages/%2e%2e/secret.txt", REFUSED),
    ("/packages/..%2fsecret.txt", REFUSED),
    ("/packages/sub/../../secret.txt", REFUSED),
    ("/packages//etc/passwd", REFUSED),
    ("/packages/%2fetc%2fpasswd", REFUSED),
]


@pytest.mark.parametrize(("path", "statuses"), TRAVERSALS)
def test_download_path_cannot_leave_package_directory(
    server_factory, tmp_path, path, statuses
):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    make_wheel(root, "inside", "1.0")
    (tmp_path / "secret.txt").write_text("root:secret\n")
    server = server_factory([str(root)])
    # http.client sends the path as written; urllib would not normalise it either.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()
    assert status in statuses, (status, body[:200])
    assert b"root:" not in body


def test_two_roots_are_served_together(server_factory, tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    make_wheel(first, "root-one-app", "1.0", requires_dist=["root-two-lib"])
    make_wheel(second, "root-two-lib", "2.0")
    server = server_factory([str(first), str(second)])
    hrefs = set(re.findall(r'href="([^"]+)"', server.get("/simple/").text))
    assert {"root-one-app/", "root-two-lib/"} <= hrefs
    target = tmp_path / "target"
    succeeded(pip(server, "install", "--target", str(target), "root-one-app"))
    assert installed(target) == {"root_one_app": "1.0", "root_two_lib": "2.0"}


def test_legacy_command_line_still_serves(server_factory, packages_dir):
    wheel = make_wheel(packages_dir, "old-style", "1.0")
    command = [
        sys.executable,
        "-m",
        "pypiserver",
        "-i",
        "127.0.0.1",
        "-p",
        "{port}",
        str(packages_dir),
    ]
    server = server_factory(cmd=command)
    assert lists(server, "old-style", wheel.name)
    assert "deprecat" in server.log_text().lower()


# --- several gunicorn workers over one directory -----------------------------------

# gunicorn writes "<pid> path status" per request with this access-log format.
_ACCESS_FORMAT = "%(p)s %(U)s %(s)s"
_ACCESS_LINE = re.compile(r"^<(\d+)> (\S+) (\d+)$", re.MULTILINE)


def _pids_that_served(log: str, path: str) -> set[str]:
    return {
        pid
        for pid, logged, status in _ACCESS_LINE.findall(log)
        if logged == path and status == "200"
    }


def _get_from_both_workers(server: Server, path: str) -> list[bytes]:
    """``path`` fetched twice while one sync worker is kept busy by the other request.

    A sync worker reads a request to its end before taking the next
    connection, so a request left half-sent pins one worker and the second
    request has to be answered by the other.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
        held.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n".encode())
        time.sleep(0.2)  # let a worker accept it before the second request arrives
        second = http_get(server.url + path).body
        held.sendall(b"\r\n")
        first = b"".join(iter(lambda: held.recv(65536), b""))
    return [first.partition(b"\r\n\r\n")[2], second]


def _serve_from_both(server: Server, path: str, attempts: int = 5) -> list[bytes]:
    bodies: list[bytes] = []
    for _ in range(attempts):
        bodies += _get_from_both_workers(server, path)
        if len(_pids_that_served(server.log_text(), path)) == 2:
            return bodies
    pytest.fail(f"one worker answered every request for {path}:\n{server.log_text()}")


def test_gunicorn_workers_all_see_a_new_file(server_factory, packages_dir, tmp_path):
    make_wheel(packages_dir, "first-file", "1.0")
    app = f"pypiserver:app(root={str(packages_dir)!r})"
    command = [
        tool("gunicorn"),
        "-w",
        "2",
        "-b",
        "127.0.0.1:{port}",
        "--access-logfile",
        "-",
        "--access-logformat",
        _ACCESS_FORMAT,
        app,
    ]
    server = server_factory(cmd=command)
    # Both workers have built their catalogue before the file arrives.
    _serve_from_both(server, "/simple/")

    late = make_wheel(tmp_path, "shared-news", "1.0")
    shutil.copy(late, packages_dir)
    path = "/simple/shared-news/"
    assert (
        wait_for(lambda: lists(server, "shared-news", late.name), APPEAR_WITHIN)
        is not None
    )

    bodies = _serve_from_both(server, path)
    bodies += [http_get(server.url + path).body for _ in range(10)]
    assert all(f">{late.name}</a>".encode() in body for body in bodies), bodies


# --- how granian's workers are started ---------------------------------------------

#: ``pypi-server`` with multiprocessing's start method settled first:
#: ``default:NAME`` makes NAME the default without choosing it, as Python
#: 3.14 does with forkserver on Linux; ``set:NAME`` chooses it, as a program
#: that runs the server may (and as macOS's default, spawn, is).
_WITH_START_METHOD = """\
import multiprocessing.context as context, sys
how, name = sys.argv.pop(1).split(":")
if how == "default":
    context._default_context._default_context = context._concrete_contexts[name]
else:
    context._default_context.set_start_method(name)
from pypiserver.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run_with_start_method(how: str, packages: Path) -> list[str]:
    return [
        sys.executable, "-c", _WITH_START_METHOD, how,
        "run", "-i", "127.0.0.1", "-p", "{port}", "--workers", "2", "-a", ".", "-P", ".",
        str(packages),
    ]  # fmt: skip


def _command_line(pid: int | str) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _children_command_lines(server: Server) -> list[bytes]:
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    return [_command_line(pid) for pid in children]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds workers through Linux's /proc")
def test_workers_are_forked_where_python_defaults_to_forkserver(server_factory, packages_dir):
    # Python 3.14 made forkserver Linux's default, which granian turns into
    # spawn.  The workers must still be forked from the process that loaded
    # the catalogue, as under earlier Pythons, not each load it again.
    wheel = make_wheel(packages_dir, "forked", "1.0")
    server = server_factory(cmd=_run_with_start_method("default:forkserver", packages_dir))
    assert _children_command_lines(server) == [_command_line(server.pid)] * 2, server.log_text()
    assert lists(server, "forked", wheel.name)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds workers through Linux's /proc")
def test_spawned_workers_each_load_the_index_and_agree(server_factory, packages_dir, tmp_path):
    # Where workers are spawned, each builds the application from the
    # command line; a copied file and an upload must still reach them all.
    server = server_factory(cmd=_run_with_start_method("set:spawn", packages_dir))
    spawned = [line for line in _children_command_lines(server) if b"spawn_main" in line]
    assert len(spawned) == 2, server.log_text()

    copied = make_wheel(tmp_path, "copied-in", "1.0")
    shutil.copy(copied, packages_dir)
    assert wait_for(lambda: lists(server, "copied-in", copied.name), APPEAR_WITHIN) is not None
    uploaded = make_wheel(tmp_path, "uploaded", "1.0")
    done = run_client(
        [
            tool("twine"), "upload", "--repository-url", f"{server.url}/", "-u", "someone",
            "-p", "secret", "--non-interactive", "--disable-progress-bar", str(uploaded),
        ],
        env=client_env(f"{server.url}/simple/", tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # A new connection each, so that both workers answer some of them.
    for _ in range(20):
        assert lists(server, "copied-in", copied.name), server.log_text()
        assert lists(server, "uploaded", uploaded.name), server.log_text()


# --- stopping ----------------------------------------------------------------------


def _pypiserver_run(packages: Path) -> list[str]:
    return server_command("{port}", [str(packages)])


def _gunicorn(packages: Path) -> list[str]:
    return [
        tool("gunicorn"),
        "-w",
        "2",
        "-b",
        "127.0.0.1:{port}",
        f"pypiserver:app(root={str(packages)!r})",
    ]


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM and process groups are POSIX")
@pytest.mark.parametrize(
    "command", [_pypiserver_run, _gunicorn], ids=["pypi-server run", "gunicorn"]
)
def test_sigterm_stops_server_and_all_its_processes(
    server_factory, packages_dir, command
):
    # What docker stop and systemd do: SIGTERM to the main process, then wait.
    # A restart can come right after start-up, so stop as soon as it is healthy,
    # a few times, because a race there does not show on every run.
    for _ in range(3):
        server = server_factory(cmd=command(packages_dir))
        stopped = server.stop()
        assert stopped.graceful, (
            f"alive {STOP_GRACE} s after SIGTERM:\n{server.log_text()}"
        )
        assert not stopped.leftovers, (
            f"workers outlived the server:\n{server.log_text()}"
        )
        with pytest.raises(OSError):
            http_get(server.url + "/health", timeout=2.0)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds workers through Linux's /proc")
def test_sigterm_stops_the_server_even_with_a_worker_that_cannot_act_on_it(server_factory, packages_dir):
    # A worker that cannot stop by itself (here, stopped by SIGSTOP; in
    # life, one that got SIGTERM while starting) is killed, so the server
    # still stops within the grace a supervisor gives.
    server = server_factory(cmd=_pypiserver_run(packages_dir))
    workers = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    assert workers, server.log_text()
    os.kill(int(workers[0]), signal.SIGSTOP)
    stopped = server.stop()
    assert stopped.graceful and not stopped.leftovers, server.log_text()


# --- the command line --------------------------------------------------------------


def pypiserver_cli(
    *args: str, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pypiserver", *args]
    try:
        return subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"still running after {timeout} s (it should have exited): {command}"
        )


def test_version_flag():
    result = pypiserver_cli("--version")
    assert result.returncode == 0, result.stderr
    assert pypiserver.__version__ in result.stdout


BAD_INPUT = [
    # id, arguments after "run -i 127.0.0.1 -p PORT", what the one line must name
    ("missing directory", ["{missing}"], "does-not-exist"),
    ("port out of range", ["-p", "99999", "{packages}"], "99999"),
    ("unknown hash", ["--hash-algo", "nope", "{packages}"], "nope"),
    ("health without slash", ["--health-endpoint", "nope", "{packages}"], "nope"),
    ("-a . without -P .", ["-a", ".", "{packages}"], "-P"),
    (
        "unreadable welcome",
        ["--welcome", "{missing}/welcome.html", "{packages}"],
        "welcome.html",
    ),
]


@pytest.mark.parametrize(
    ("args", "mentions"),
    [row[1:] for row in BAD_INPUT],
    ids=[row[0] for row in BAD_INPUT],
)
def test_bad_cli_input_is_one_line_error(packages_dir, tmp_path, args, mentions):
    missing = str(tmp_path / "does-not-exist")
    filled = [
        a.replace("{missing}", missing).replace("{packages}", str(packages_dir))
        for a in args
    ]
    result = pypiserver_cli("run", "-i", "127.0.0.1", "-p", str(free_port()), *filled)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert mentions in lines[0]
