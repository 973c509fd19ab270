"""``pypi-server update`` against a fake upstream index on 127.0.0.1.

The fake index answers PEP 691 JSON for most projects, a PEP 503 HTML page
for one, 404 and 500 for others, a redirect for one, and serves the wheel
bytes its pages link to, so ``execute=True`` drives a real ``pip download``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.version import Version

from pypiserver.distributions import normalize_name
from pypiserver.updater import (
    LocalProject,
    UpdateOptions,
    UpdaterError,
    fetch_versions,
    find_local_releases,
    newest_version,
    read_ignorelist,
    run_update,
)

# --- distributions on disk ----------------------------------------------------


def wheel_name(project: str, version: str) -> str:
    return f"{project}-{version}-py3-none-any.whl"


def wheel_bytes(project: str, version: str) -> bytes:
    """A wheel pip accepts for download: a dist-info with METADATA and WHEEL.

    Fixed timestamps make the bytes a function of name and version, so a
    downloaded file can be compared with a freshly built one.
    """
    info = f"{project}-{version}.dist-info"
    members = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(
                zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text
            )
    return buffer.getvalue()


def write_wheel(directory: Path, project: str, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / wheel_name(project, version)
    path.write_bytes(wheel_bytes(project, version))
    return path


# --- the fake upstream index ------------------------------------------------------


@dataclass
class FakeIndex:
    """Canned answers by URL path; ``url`` is the ``/simple/`` base."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def serve(self, path: str, status: int, body: bytes = b"", **headers: str) -> None:
        self.routes[path] = (status, {"Content-Type": "text/plain", **headers}, body)

    def json_page(
        self, project: str, versions: list[str] | None, files: list[tuple[str, bool]]
    ) -> None:
        """A PEP 691 page; every (version, yanked) file is a downloadable wheel."""
        entries = []
        for version, yanked in files:
            data = wheel_bytes(project, version)
            filename = wheel_name(project, version)
            self.serve(
                f"/files/{filename}", 200, data, **{"Content-Type": "application/zip"}
            )
            entries.append(
                {
                    "filename": filename,
                    "url": f"/files/{filename}",
                    "hashes": {"sha256": hashlib.sha256(data).hexdigest()},
                    "yanked": yanked,
                }
            )
        page: dict[str, object] = {
            "meta": {"api-version": "1.1"},
            "name": project,
            "files": entries,
        }
        if versions is not None:
            page["versions"] = versions
        body = json.dumps(page).encode()
        self.serve(
            f"/simple/{project}/",
            200,
            body,
            **{"Content-Type": "application/vnd.pypi.simple.v1+json"},
        )


GAMMA_HTML = b"""<!DOCTYPE html>
<html><body><h1>Links for gamma</h1>
<a href="/files/gamma-0.1.tar.gz#sha256=00">gamma-0.1.tar.gz</a><br>
<a href="/files/gamma-0.2-py3-none-any.whl">gamma-0.2-py3-none-any.whl</a><br>
<a href="/files/gamma-0.3.tar.gz" data-yanked="broken build">gamma-0.3.tar.gz</a><br>
<a href="/files/gamma-0.1.5.tar.gz"></a><br>
<a href="/files/README.txt">README.txt</a>
</body></html>
"""


def build_index() -> FakeIndex:
    index = FakeIndex()
    index.json_page(
        "alpha",
        ["1.0", "1.1", "2.0b1"],
        [("1.0", False), ("1.1", False), ("2.0b1", False)],
    )
    # No PEP 700 "versions": derived from the files, the yanked 1.2 left out.
    index.json_page("beta", None, [("1.0", False), ("1.2", True)])
    # "versions" lists 3.1, but its only file is yanked.
    index.json_page(
        "epsilon",
        ["2.0", "3.0", "3.1"],
        [("2.0", False), ("3.0", False), ("3.1", True)],
    )
    index.json_page("zeta", ["1.0", "1.1rc1"], [("1.0", False), ("1.1rc1", False)])
    index.json_page(
        "iota",
        ["1.0", "2.0rc1", "2.0rc2"],
        [("1.0", False), ("2.0rc1", False), ("2.0rc2", False)],
    )
    index.json_page("theta-moved", ["1.0", "1.5"], [("1.0", False), ("1.5", False)])
    index.serve("/simple/theta/", 301, Location="/simple/theta-moved/")
    index.serve(
        "/simple/gamma/",
        200,
        GAMMA_HTML,
        **{"Content-Type": "text/html; charset=utf-8"},
    )
    index.serve("/simple/eta/", 500, b"boom")
    index.serve("/simple/plain/", 200, b"hello", **{"Content-Type": "text/plain"})
    index.serve(
        "/simple/badjson/",
        200,
        b"{nope",
        **{"Content-Type": "application/vnd.pypi.simple.v1+json"},
    )
    # kappa's page links a file the index cannot serve: pip must fail.
    index.serve(
        "/simple/kappa/",
        200,
        json.dumps(
            {
                "meta": {"api-version": "1.0"},
                "name": "kappa",
                "files": [
                    {
                        "filename": wheel_name("kappa", "1.1"),
                        "url": "/files/gone.whl",
                        "hashes": {},
                    }
                ],
            }
        ).encode(),
        **{"Content-Type": "application/vnd.pypi.simple.v1+json"},
    )
    return index


def make_handler(index: FakeIndex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            status, headers, body = index.routes.get(
                path, (404, {"Content-Type": "text/plain"}, b"not found")
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output to what fails

    return Handler


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeIndex]:
    index = build_index()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(index))
    index.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield index
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """An index URL on a port nothing listens on: connection refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/simple/"


# --- read_ignorelist ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", set()),
        ("alpha\n", {"alpha"}),
        ("# comment\n\n  Foo_Bar  \nbaz.qux # why\n", {"foo-bar", "baz-qux"}),
        ("Django\r\ndjango\r\n", {"django"}),
    ],
)
def test_read_ignorelist(tmp_path: Path, text: str, expected: set[str]) -> None:
    path = tmp_path / "ignore.txt"
    path.write_bytes(text.encode())
    assert read_ignorelist(path) == expected


def test_read_ignorelist_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.txt"
    with pytest.raises(UpdaterError, match="nowhere.txt"):
        read_ignorelist(path)


# --- find_local_releases ------------------------------------------------------------


def test_find_local_releases_keeps_the_newest_and_its_directory(tmp_path: Path) -> None:
    write_wheel(tmp_path / "old", "alpha", "0.9")
    write_wheel(tmp_path / "new", "alpha", "1.10")
    write_wheel(tmp_path, "alpha", "1.2")
    (tmp_path / "Foo.Bar-2.0.tar.gz").write_bytes(b"")
    (tmp_path / "Foo.Bar-2.0.tar.gz.asc").write_bytes(b"")
    (tmp_path / "README.txt").write_text("not a distribution")
    write_wheel(tmp_path / ".git", "alpha", "9.0")
    (tmp_path / ".alpha-8.0.tar.gz").write_bytes(b"")

    found = find_local_releases([tmp_path])

    assert found == {
        "alpha": LocalProject(
            "alpha", normalize_name("alpha"), Version("1.10"), tmp_path / "new"
        ),
        "foo-bar": LocalProject(
            "Foo.Bar", normalize_name("foo-bar"), Version("2.0"), tmp_path
        ),
    }


def test_find_local_releases_across_roots(tmp_path: Path) -> None:
    write_wheel(tmp_path / "a", "alpha", "1.0")
    write_wheel(tmp_path / "b", "alpha", "2.0")
    found = find_local_releases([tmp_path / "a", tmp_path / "b"])
    assert found["alpha"].directory == tmp_path / "b"


def test_find_local_releases_missing_root(tmp_path: Path) -> None:
    with pytest.raises(UpdaterError, match="missing"):
        find_local_releases([tmp_path / "missing"])


# --- fetch_versions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        ("alpha", ["1.0", "1.1", "2.0b1"]),
        ("beta", ["1.0"]),
        ("epsilon", ["2.0", "3.0"]),
        ("gamma", ["0.1", "0.2", "0.1.5"]),
        ("theta", ["1.0", "1.5"]),
        ("delta", []),
        # The URL uses the normalised name.
        ("Iota", ["1.0", "2.0rc1", "2.0rc2"]),
    ],
)
def test_fetch_versions(upstream: FakeIndex, project: str, expected: list[str]) -> None:
    assert fetch_versions(upstream.url, project, timeout=5) == expected


@pytest.mark.parametrize(
    ("project", "reason"),
    [
        ("eta", "HTTP 500"),
        ("plain", "text/plain"),
        ("badjson", "invalid JSON"),
    ],
)
def test_fetch_versions_errors(upstream: FakeIndex, project: str, reason: str) -> None:
    with pytest.raises(UpdaterError, match=reason):
        fetch_versions(upstream.url, project, timeout=5)


def test_fetch_versions_connection_refused(closed_port_url: str) -> None:
    with pytest.raises(UpdaterError, match="^connection refused$"):
        fetch_versions(closed_port_url, "alpha", timeout=5)


# --- newest_version ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("versions", "allow", "expected"),
    [
        ([], False, None),
        (["1.0", "1.1"], False, "1.1"),
        (["1.0", "1.1rc1"], False, "1.0"),
        (["1.0", "1.1rc1"], True, "1.1rc1"),
        (["1.0", "1.1.dev1"], False, "1.0"),
        (["1.0", "1.0.post1"], False, "1.0.post1"),
        (["2.0a1"], False, None),
        (["not a version", "0.5"], False, "0.5"),
    ],
)
def test_newest_version(versions: list[str], allow: bool, expected: str | None) -> None:
    got = newest_version(versions, allow_prereleases=allow)
    assert got == (Version(expected) if expected else None)


# --- run_update -------------------------------------------------------------------


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    root = tmp_path / "packages"
    write_wheel(root, "alpha", "1.0")
    write_wheel(root / "old", "alpha", "0.9")
    write_wheel(root, "beta", "1.0")
    write_wheel(root, "delta", "1.0")
    write_wheel(root, "epsilon", "3.0")
    write_wheel(root, "eta", "1.0")
    write_wheel(root / "sub", "gamma", "0.1")
    write_wheel(root, "iota", "2.0rc1")
    write_wheel(root, "theta", "1.0")
    write_wheel(root, "zeta", "1.0")
    return root


def update(options: UpdateOptions) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_update(options, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_report_exact_text(upstream: FakeIndex, packages: Path) -> None:
    code, out, err = update(UpdateOptions(roots=(packages,), index_url=upstream.url))

    url = upstream.url
    assert code == 0
    assert out == (
        "checking 9 packages for newer version\n"
        "\n"
        "u.e.!u.u.\n"
        "\n"
        f"no releases found on {url} for delta\n"
        "\n"
        "\n"
        "# update alpha from 1.0 to 1.1\n"
        f"pip -q download --no-deps --index-url {url} -d {packages} alpha==1.1\n"
        "\n"
        "# update gamma from 0.1 to 0.2\n"
        f"pip -q download --no-deps --index-url {url} -d {packages / 'sub'} gamma==0.2\n"
        "\n"
        "# update theta from 1.0 to 1.5\n"
        f"pip -q download --no-deps --index-url {url} -d {packages} theta==1.5\n"
        "\n"
    )
    assert (
        err == f"could not check eta: HTTP 500 Internal Server Error from {url}eta/\n"
    )


def test_prereleases_only_with_allow(upstream: FakeIndex, packages: Path) -> None:
    code, out, _ = update(
        UpdateOptions(roots=(packages,), index_url=upstream.url, allow_prereleases=True)
    )
    assert code == 0
    assert "u.e.!uuuu\n" in out
    assert "# update alpha from 1.0 to 2.0b1\n" in out
    assert "# update zeta from 1.0 to 1.1rc1\n" in out
    # A local pre-release alone allowed nothing: iota updates only here.
    assert "# update iota from 2.0rc1 to 2.0rc2\n" in out


@pytest.mark.parametrize(
    ("download_dir", "expected_dir"),
    [(None, "packages"), ("downloads", "downloads")],
)
def test_download_dir(
    upstream: FakeIndex, tmp_path: Path, download_dir: str | None, expected_dir: str
) -> None:
    root = tmp_path / "packages"
    write_wheel(root, "alpha", "1.0")
    options = UpdateOptions(
        roots=(root,),
        index_url=upstream.url,
        download_dir=tmp_path / download_dir if download_dir else None,
    )
    _, out, _ = update(options)
    assert f" -d {tmp_path / expected_dir} alpha==1.1\n" in out


def test_ignored_projects_are_skipped(upstream: FakeIndex, packages: Path) -> None:
    ignore = frozenset({normalize_name("Alpha"), normalize_name("eta")})
    code, out, err = update(
        UpdateOptions(roots=(packages,), index_url=upstream.url, ignore=ignore)
    )
    assert code == 0
    assert out.startswith("checking 7 packages for newer version\n\n.e.u.u.\n")
    assert "alpha" not in out
    assert err == ""


def test_progress_wraps_at_40(upstream: FakeIndex, tmp_path: Path) -> None:
    for number in range(45):
        write_wheel(tmp_path, f"unknown{number:02d}", "1.0")
    _, out, _ = update(UpdateOptions(roots=(tmp_path,), index_url=upstream.url))
    lines = out.splitlines()
    assert lines[:4] == [
        "checking 45 packages for newer version",
        "",
        "e" * 40,
        "e" * 5,
    ]
    names = ", ".join(f"unknown{number:02d}" for number in range(45))
    assert f"no releases found on {upstream.url} for {names}" in lines


def test_unreachable_index(closed_port_url: str, packages: Path) -> None:
    code, out, err = update(UpdateOptions(roots=(packages,), index_url=closed_port_url))
    assert code == 0
    assert "\n" + "!" * 9 + "\n" in out
    assert "# update" not in out
    assert err.splitlines() == [
        f"could not check {name}: connection refused"
        for name in [
            "alpha",
            "beta",
            "delta",
            "epsilon",
            "eta",
            "gamma",
            "iota",
            "theta",
            "zeta",
        ]
    ]
    assert "Traceback" not in out + err


def test_no_packages(upstream: FakeIndex, tmp_path: Path) -> None:
    code, out, err = update(UpdateOptions(roots=(tmp_path,), index_url=upstream.url))
    assert (code, out, err) == (0, "checking 0 packages for newer version\n\n", "")


# --- execute: a real pip download from the fake index -------------------------------


@pytest.fixture
def isolated_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pip with no user configuration, cache or version check: only the fake index."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("PIP_NO_INPUT", "1")
    monkeypatch.setenv("PIP_NO_PYTHON_VERSION_WARNING", "1")


@pytest.mark.usefixtures("isolated_pip")
def test_execute_downloads_the_update(upstream: FakeIndex, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    write_wheel(root / "mirror", "alpha", "1.0")
    options = UpdateOptions(roots=(root,), index_url=upstream.url, execute=True)

    code, out, err = update(options)

    assert (code, err) == (0, "")
    downloaded = root / "mirror" / wheel_name("alpha", "1.1")
    assert downloaded.read_bytes() == wheel_bytes("alpha", "1.1")
    # The next run finds the new file and has nothing left to do.
    code, out, _ = update(UpdateOptions(roots=(root,), index_url=upstream.url))
    assert (code, "# update" in out) == (0, False)


@pytest.mark.usefixtures("isolated_pip")
def test_execute_reports_a_failed_download(upstream: FakeIndex, tmp_path: Path) -> None:
    write_wheel(tmp_path, "kappa", "1.0")
    options = UpdateOptions(roots=(tmp_path,), index_url=upstream.url, execute=True)

    code, out, err = update(options)

    assert code == 1
    assert "# update kappa from 1.0 to 1.1\n" in out
    assert err.startswith("could not update kappa to 1.1: pip exited with status 1\n")
    assert not (tmp_path / wheel_name("kappa", "1.1")).exists()


def test_missing_package_directory(upstream: FakeIndex, tmp_path: Path) -> None:
    options = UpdateOptions(roots=(tmp_path / "gone",), index_url=upstream.url)
    code, out, err = update(options)
    assert (code, out) == (2, "")
    assert (
        err
        == f"error: package directory {tmp_path / 'gone'} does not exist or is not a directory\n"
    )


def test_default_streams_are_read_at_call_time(
    upstream: FakeIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_update(UpdateOptions(roots=(tmp_path,), index_url=upstream.url)) == 0
    assert capsys.readouterr().out == "checking 0 packages for newer version\n\n"
