"""``pypi-server update`` and XML-RPC search against real servers.

A second ``pypi-server run`` plays the upstream index with newer stable and
pre-releases; the update command compares a local package directory with it,
prints (or runs) the ``pip download`` commands, and copes with an index that
cannot be reached.  Search is driven with :class:`xmlrpc.client.ServerProxy`.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from conftest import Server, client_env, free_port, start_server
from dists import make_sdist, make_wheel

pytestmark = pytest.mark.e2e


# --- the two indexes --------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("upstream")
    for version in ("1.0", "1.1", "2.0rc1"):
        make_wheel(directory, "alpha", version)
    make_sdist(directory, "alpha", "1.1")
    make_wheel(directory, "Beta_Tools", "2.0")
    make_wheel(directory, "delta", "1.0")
    make_wheel(directory, "delta", "1.5")
    make_wheel(directory, "epsilon", "0.9")
    # gamma is only local: the upstream has no releases of it.
    return directory


@pytest.fixture(scope="module")
def upstream(upstream_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # --disable-fallback: a project it lacks is a 404, never a redirect to PyPI.
    with start_server(
        ["--disable-fallback", "--state-dir", str(upstream_dir.parent / "upstream-state"), str(upstream_dir)],
        log_dir=tmp_path_factory.mktemp("log"),
    ) as server:
        yield server


@pytest.fixture
def local_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "local"
    directory.mkdir()
    make_wheel(directory, "alpha", "1.0")
    make_wheel(directory, "beta-tools", "2.0")
    make_sdist(directory, "gamma", "0.5")
    sub = directory / "mirror"
    sub.mkdir()
    make_wheel(sub, "delta", "1.0")
    # Newer locally than upstream: nothing to do.
    make_wheel(directory, "epsilon", "1.0")
    return directory


def simple_url(server: Server) -> str:
    return f"{server.url}/simple/"


def run_cli(*args: str, index_url: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    # pip, if the command runs it, sees only the given index and no cache.
    env = client_env(index_url)
    return subprocess.run(
        [sys.executable, "-m", "pypiserver", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def pip_line(index_url: str, directory: Path, requirement: str) -> str:
    return f"pip -q download --no-deps --index-url {index_url} -d {directory} {requirement}"


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"


# --- update: the report ----------------------------------------------------------------


def test_update_lists_newer_stable_releases(upstream, local_dir):
    index = simple_url(upstream)

    result = run_cli("update", "--index-url", index, str(local_dir), index_url=index)

    assert result.returncode == 0, report(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("checking 5 packages")
    # One character per project, in name order: alpha, beta-tools, delta, epsilon, gamma.
    assert "u.u.e" in lines
    assert f"no releases found on {index} for gamma" in lines
    assert "# update alpha from 1.0 to 1.1" in lines
    assert pip_line(index, local_dir, "alpha==1.1") in lines
    # Downloads go beside the newest local file, here a sub-directory.
    assert "# update delta from 1.0 to 1.5" in lines
    assert pip_line(index, local_dir / "mirror", "delta==1.5") in lines
    assert "2.0rc1" not in result.stdout
    assert "beta" not in result.stdout.replace("checking", "")
    assert "epsilon" not in result.stdout
    assert "Traceback" not in result.stderr
    # Printing is all it does without -x.
    assert sorted(p.name for p in local_dir.iterdir()) == [
        "alpha-1.0-py3-none-any.whl",
        "beta_tools-2.0-py3-none-any.whl",
        "epsilon-1.0-py3-none-any.whl",
        "gamma-0.5.tar.gz",
        "mirror",
    ]


def test_update_with_unstable_offers_prereleases(upstream, local_dir):
    index = simple_url(upstream)

    result = run_cli("update", "-u", "--index-url", index, str(local_dir), index_url=index)

    assert result.returncode == 0, report(result)
    lines = result.stdout.splitlines()
    assert "# update alpha from 1.0 to 2.0rc1" in lines
    assert pip_line(index, local_dir, "alpha==2.0rc1") in lines
    assert "# update delta from 1.0 to 1.5" in lines
    assert "alpha==1.1" not in result.stdout


def test_update_execute_downloads_newer_file(upstream, upstream_dir, local_dir, tmp_path):
    index = simple_url(upstream)
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    result = run_cli(
        "update", "-x", "-d", str(downloads), "--index-url", index, str(local_dir),
        index_url=index, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, report(result)
    assert pip_line(index, downloads, "alpha==1.1") in result.stdout.splitlines()
    got = sorted(p.name for p in downloads.iterdir())
    assert got[0] in ("alpha-1.1-py3-none-any.whl", "alpha-1.1.tar.gz")
    assert got[1:] == ["delta-1.5-py3-none-any.whl"]
    for name in got:
        assert (downloads / name).read_bytes() == (upstream_dir / name).read_bytes()
    # The local directory itself is left alone when -d is given.
    assert not any(p.name.startswith(("alpha-1.1", "delta-1.5")) for p in local_dir.rglob("*"))


def test_update_ignorelist_skips_projects(upstream, local_dir, tmp_path):
    index = simple_url(upstream)
    ignore = tmp_path / "ignore.txt"
    ignore.write_text("# not these\nDelta  # pinned on purpose\n\nALPHA\n")

    result = run_cli(
        "update", "--ignorelist-file", str(ignore), "--index-url", index, str(local_dir), index_url=index
    )

    assert result.returncode == 0, report(result)
    assert result.stdout.splitlines()[0].startswith("checking 3 packages")
    assert "# update" not in result.stdout
    assert "pip -q download" not in result.stdout


def test_update_missing_ignorelist_is_one_line_error(upstream, local_dir, tmp_path):
    index = simple_url(upstream)

    result = run_cli(
        "update", "--ignorelist-file", str(tmp_path / "absent.txt"), "--index-url", index, str(local_dir),
        index_url=index,
    )  # fmt: skip

    assert result.returncode != 0
    assert "absent.txt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "legacy",
    [["-U"], ["--update-packages"]],
    ids=["-U", "--update-packages"],
)
def test_legacy_update_form(upstream, local_dir, legacy):
    index = simple_url(upstream)

    result = run_cli(*legacy, "--index-url", index, str(local_dir), index_url=index)

    assert result.returncode == 0, report(result)
    assert "deprecated" in result.stderr
    assert "pypi-server update" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("checking 5 packages")
    assert pip_line(index, local_dir, "alpha==1.1") in lines


def test_legacy_bundled_update_unstable_form(upstream, local_dir):
    index = simple_url(upstream)

    result = run_cli("-Uu", "--index-url", index, str(local_dir), index_url=index)

    assert result.returncode == 0, report(result)
    assert "# update alpha from 1.0 to 2.0rc1" in result.stdout.splitlines()


def test_unreachable_index_is_one_line_per_project(local_dir):
    closed = f"http://127.0.0.1:{free_port()}/simple/"

    result = run_cli("update", "--index-url", closed, str(local_dir), index_url=closed, timeout=60)

    assert result.returncode == 0, report(result)
    assert "Traceback" not in result.stdout + result.stderr
    complaints = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(complaints) == 5, report(result)
    for project, line in zip(["alpha", "beta_tools", "delta", "epsilon", "gamma"], complaints):
        assert project in line
        assert "refused" in line.lower()
    assert "# update" not in result.stdout


# --- XML-RPC search ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("search")
    make_wheel(directory, "Foo-Lib", "1.0", summary="Old foo helpers")
    make_wheel(directory, "Foo-Lib", "1.2", summary="Helpers for foo")
    make_wheel(directory, "barfoo", "0.1", summary="Bar and more")
    make_wheel(directory, "quux", "3.0", summary="Makes FOO faster")
    make_wheel(directory, "unrelated", "1.0", summary="Nothing to see")
    with start_server(
        ["--state-dir", str(directory.parent / "search-state"), str(directory)],
        log_dir=tmp_path_factory.mktemp("log"),
    ) as server:
        yield server


def names(hits: list[dict]) -> list[str]:
    return sorted(canonicalize_name(hit["name"]) for hit in hits)


@pytest.mark.parametrize("path", ["/", "/RPC2"])
@pytest.mark.parametrize(
    ("spec", "operator", "expected"),
    [
        ({"name": "foo"}, None, ["barfoo", "foo-lib"]),
        ({"name": "FOO-lib"}, None, ["foo-lib"]),
        ({"summary": "foo"}, None, ["foo-lib", "quux"]),
        ({"name": "foo", "summary": "foo"}, "and", ["foo-lib"]),
        ({"name": "foo", "summary": "foo"}, "or", ["barfoo", "foo-lib", "quux"]),
        ({"name": ["quux", "unrelated"]}, None, ["quux", "unrelated"]),
        ({"name": "nothing-matches"}, None, []),
    ],
)
def test_xmlrpc_search(search_server, path, spec, operator, expected):
    proxy = xmlrpc.client.ServerProxy(search_server.url + path)

    hits = proxy.search(spec) if operator is None else proxy.search(spec, operator)

    assert names(hits) == expected
    for hit in hits:
        assert set(hit) >= {"name", "version", "summary"}


def test_xmlrpc_search_reports_latest_release(search_server):
    hits = xmlrpc.client.ServerProxy(search_server.url).search({"name": "foo-lib"})

    assert [(hit["version"], hit["summary"]) for hit in hits] == [("1.2", "Helpers for foo")]


@pytest.mark.parametrize(
    "call",
    [
        lambda proxy: proxy.search({"name": "foo"}, "xor"),
        lambda proxy: proxy.list_packages(),
        lambda proxy: proxy.search("foo"),
    ],
    ids=["bad-operator", "unknown-method", "spec-not-struct"],
)
def test_xmlrpc_bad_calls_are_faults(search_server, call):
    proxy = xmlrpc.client.ServerProxy(search_server.url + "/RPC2")

    with pytest.raises(xmlrpc.client.Fault) as fault:
        call(proxy)

    assert fault.value.faultString


ENTITY_BOMB = (
    '<?xml version="1.0"?>\n'
    "<!DOCTYPE lolz [\n"
    ' <!ENTITY lol "lol">\n'
    ' <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
    ' <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">\n'
    ' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n'
    ' <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">\n'
    ' <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">\n'
    ' <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">\n'
    ' <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">\n'
    ' <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">\n'
    ' <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">\n'
    "]>\n"
    "<methodCall><methodName>search</methodName><params><param><value><struct>"
    "<member><name>name</name><value><string>&lol9;</string></value></member>"
    "</struct></value></param></params></methodCall>"
)

EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n'
    '<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
    "<methodCall><methodName>search</methodName><params><param><value><struct>"
    "<member><name>name</name><value><string>&secret;</string></value></member>"
    "</struct></value></param></params></methodCall>"
)


@pytest.mark.parametrize("body", [ENTITY_BOMB, EXTERNAL_ENTITY, "<methodCall><unclosed>"], ids=["bomb", "external", "malformed"])
@pytest.mark.parametrize("path", ["/", "/RPC2"])
def test_unsafe_or_malformed_xml_is_400(search_server, body, path):
    connection = http.client.HTTPConnection("127.0.0.1", search_server.port, timeout=30)
    try:
        connection.request("POST", path, body=body.encode(), headers={"Content-Type": "text/xml"})
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
    finally:
        connection.close()

    assert response.status == 400
    assert "root:" not in text
    assert "lollol" not in text
    # The server is still answering searches afterwards.
    assert names(xmlrpc.client.ServerProxy(search_server.url).search({"name": "quux"})) == ["quux"]


def test_search_sees_new_upload(server_factory, packages_dir, tmp_path):
    import requests

    server = server_factory(["-a", ".", "-P", ".", "--state-dir", str(tmp_path / "state"), str(packages_dir)])
    proxy = xmlrpc.client.ServerProxy(server.url)
    assert proxy.search({"name": "fresh"}) == []
    wheel = make_wheel(tmp_path, "fresh-thing", "0.1", summary="Just uploaded")

    response = requests.post(
        server.url + "/",
        data={":action": "file_upload"},
        files={"content": (wheel.name, wheel.read_bytes())},
        timeout=30,
    )

    assert response.status_code == 200
    hits = proxy.search({"name": "fresh"})
    assert [(canonicalize_name(h["name"]), h["version"], h["summary"]) for h in hits] == [
        ("fresh-thing", "0.1", "Just uploaded")
    ]
