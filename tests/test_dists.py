"""The test distributions are valid: pip installs them and their records check out."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest
from conftest import client_env, run_client, tool
from dists import make_sdist, make_wheel, metadata_text
from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

WHEEL_CASES = [
    # name,      version,  build, filename
    ("demo", "1.0", None, "demo-1.0-py3-none-any.whl"),
    ("Foo-Bar", "1.0", None, "foo_bar-1.0-py3-none-any.whl"),
    ("foo.bar_baz", "2.0.0", None, "foo_bar_baz-2.0.0-py3-none-any.whl"),
    ("demo", "1.0.0-RC1", None, "demo-1.0.0rc1-py3-none-any.whl"),
    ("demo", "1.0", "7", "demo-1.0-7-py3-none-any.whl"),
]


def _metadata(wheel: Path) -> dict[str, list[str]]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = HeaderParser().parsestr(archive.read(name).decode())
    return {key: message.get_all(key) for key in message}


@pytest.mark.parametrize(("name", "version", "build", "filename"), WHEEL_CASES)
def test_wheel_filename_is_normalised(tmp_path, name, version, build, filename):
    wheel = make_wheel(tmp_path, name, version, build_tag=build)
    assert wheel.name == filename
    # packaging's parser is strict about the escaped-name and version rules.
    parsed_name, parsed_version, parsed_build, _ = parse_wheel_filename(wheel.name)
    assert parsed_name == canonicalize_name(name)
    assert parsed_version == Version(version)
    assert parsed_build == ((int(build), "") if build else ())


@pytest.mark.parametrize(("name", "version", "build", "filename"), WHEEL_CASES)
def test_wheel_record_matches_members(tmp_path, name, version, build, filename):
    wheel = make_wheel(tmp_path, name, version, build_tag=build)
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        record_name = next(n for n in members if n.endswith(".dist-info/RECORD"))
        rows = [
            line.split(",") for line in archive.read(record_name).decode().splitlines()
        ]
        assert {path for path, _, _ in rows} == members
        for path, digest, size in rows:
            if path == record_name:
                assert (digest, size) == ("", "")
                continue
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
                b"="
            )
            assert digest == "sha256=" + expected.decode()
            assert int(size) == len(data)


def test_wheel_metadata_fields(tmp_path):
    wheel = make_wheel(
        tmp_path,
        "Foo-Bar",
        "1.5",
        requires_dist=["dep-a>=1", 'dep-b; python_version < "4"'],
        requires_python=">=3.8",
        summary="A demo",
    )
    assert _metadata(wheel) == {
        "Metadata-Version": ["2.1"],
        "Name": ["Foo-Bar"],
        "Version": ["1.5"],
        "Summary": ["A demo"],
        "Requires-Python": [">=3.8"],
        "Requires-Dist": ["dep-a>=1", 'dep-b; python_version < "4"'],
    }


@pytest.mark.parametrize("make", [make_wheel, make_sdist])
def test_archives_are_deterministic(tmp_path, make):
    # The benchmark compares runs, so the same input must give the same bytes.
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    one = make(first, "demo", "1.0", requires_dist=["dep"])
    two = make(second, "demo", "1.0", requires_dist=["dep"])
    assert one.read_bytes() == two.read_bytes()


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar", ".zip"])
def test_sdist_layout(tmp_path, suffix):
    sdist = make_sdist(tmp_path, "Foo.Bar", "1.0", requires_dist=["dep"], suffix=suffix)
    assert sdist.name == f"foo_bar-1.0{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(sdist) as archive:
            names = set(archive.namelist())
            pkg_info = archive.read("foo_bar-1.0/PKG-INFO").decode()
    else:
        with tarfile.open(sdist) as archive:
            names = set(archive.getnames())
            pkg_info = archive.extractfile("foo_bar-1.0/PKG-INFO").read().decode()
    assert names == {
        "foo_bar-1.0/PKG-INFO",
        "foo_bar-1.0/pyproject.toml",
        "foo_bar-1.0/foo_bar/__init__.py",
    }
    assert pkg_info == metadata_text("Foo.Bar", "1.0", requires_dist=["dep"])


def test_sdist_filename_parses(tmp_path):
    name, version = parse_sdist_filename(make_sdist(tmp_path, "Foo.Bar", "2.1").name)
    assert (name, str(version)) == ("foo-bar", "2.1")


_PRINT_VERSIONS = (
    "import demo_app, demo_lib; print(demo_app.__version__, demo_lib.__version__)"
)


def test_pip_installs_wheel_and_dependency_offline(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "Demo-App", "1.2", requires_dist=["demo-lib>=2"])
    make_wheel(links, "demo.lib", "2.0")
    target = tmp_path / "target"
    env = client_env("http://127.0.0.1:9/simple/")  # unreachable on purpose
    result = run_client(
        [
            tool("pip"),
            "install",
            "--no-index",
            "--find-links",
            str(links),
            "--target",
            str(target),
            "demo-app",
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    versions = subprocess.run(
        [sys.executable, "-c", _PRINT_VERSIONS],
        cwd=target,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert versions == ["1.2", "2.0"]
    assert (target / "demo_app-1.2.dist-info" / "RECORD").is_file()
