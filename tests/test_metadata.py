"""Tests for pypiserver.metadata: real archives built in tmp_path, then read."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import random
import tarfile
import zipfile
from pathlib import Path

import pytest

import pypiserver.metadata
from pypiserver.metadata import (
    METADATA_LIMIT,
    CoreMetadata,
    index_fields,
    parse_metadata,
    read_metadata_bytes,
)

# Non-ASCII text and CRLF line endings: both must survive byte for byte.
WHEEL_METADATA = (
    "Metadata-Version: 2.1\r\n"
    "Name: demo\r\n"
    "Version: 1.0\r\n"
    "Summary: Grüße — 日本語\r\n"
    "Description-Content-Type: text/markdown\r\n"
    "\r\n"
    "# Démo\r\n"
    "\r\n"
    "Ünïcödé body.\r\n"
).encode()

PKG_INFO = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nSummary: from PKG-INFO\n"


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def tar_mode(filename: str) -> str:
    for suffix, mode in (
        (".tar.gz", "w:gz"),
        (".tgz", "w:gz"),
        (".tar.bz2", "w:bz2"),
        (".tar.xz", "w:xz"),
    ):
        if filename.endswith(suffix):
            return mode
    return "w"


def add_tar_file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def add_tar_link(archive: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    archive.addfile(info)


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, tar_mode(path.name)) as archive:
        for name, data in members.items():
            add_tar_file(archive, name, data)
    return path


def make_sdist(path: Path, members: dict[str, bytes]) -> Path:
    if path.name.endswith(".zip"):
        return make_zip(path, members)
    return make_tar(path, members)


# --------------------------------------------------------------------------
# Wheels


def test_wheel_metadata_is_byte_exact(tmp_path: Path) -> None:
    wheel = make_zip(
        tmp_path / "demo-1.0-py3-none-any.whl",
        {
            "demo/__init__.py": b"",
            "demo-1.0.dist-info/METADATA": WHEEL_METADATA,
            "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\n",
        },
    )
    raw = read_metadata_bytes(wheel, "wheel")
    assert raw == WHEEL_METADATA
    assert b"\r\n" in raw and "Grüße".encode() in raw


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        # A vendored dist-info listed first must not win over the wheel's own.
        (
            {
                "vendored-2.0.dist-info/METADATA": b"Name: vendored\n",
                "Demo_Pkg-1.0.dist-info/METADATA": b"Name: own\n",
            },
            b"Name: own\n",
        ),
        # The dist-info name and version are compared normalised.
        (
            {
                "other-3.dist-info/METADATA": b"Name: other\n",
                "demo_pkg-1.0.0.dist-info/METADATA": b"Name: own\n",
            },
            b"Name: own\n",
        ),
        # A single dist-info is used even if its name is spelt differently.
        ({"something-9.dist-info/METADATA": b"Name: only\n"}, b"Name: only\n"),
        # Only top-level dist-info directories count.
        ({"demo_pkg/_vendor/x-1.dist-info/METADATA": b"Name: x\n"}, None),
        ({"demo_pkg/__init__.py": b""}, None),
        ({"demo_pkg-1.0.dist-info/RECORD": b""}, None),
    ],
    ids=[
        "vendored-first",
        "normalised-match",
        "single",
        "nested-only",
        "no-dist-info",
        "no-metadata",
    ],
)
def test_wheel_dist_info_choice(
    tmp_path: Path, members: dict[str, bytes], expected: bytes | None
) -> None:
    wheel = make_zip(tmp_path / "demo_pkg-1.0-py3-none-any.whl", members)
    assert read_metadata_bytes(wheel, "wheel") == expected


# --------------------------------------------------------------------------
# Sdists and eggs

SDIST_SUFFIXES = [".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"]


@pytest.mark.parametrize("suffix", SDIST_SUFFIXES)
def test_sdist_pkg_info_in_every_archive_format(tmp_path: Path, suffix: str) -> None:
    sdist = make_sdist(
        tmp_path / f"demo-1.0{suffix}",
        {
            "demo-1.0/pyproject.toml": b"[project]\n",
            "demo-1.0/src/demo.egg-info/PKG-INFO": b"Name: stale copy\n",
            "demo-1.0/PKG-INFO": PKG_INFO,
        },
    )
    assert read_metadata_bytes(sdist, "sdist") == PKG_INFO


@pytest.mark.parametrize("suffix", SDIST_SUFFIXES)
@pytest.mark.parametrize(
    "members",
    [
        {"PKG-INFO": PKG_INFO},  # not inside a top directory
        {"demo-1.0/src/demo.egg-info/PKG-INFO": PKG_INFO},  # too deep
        {"demo-1.0/setup.py": b""},
    ],
    ids=["at-root", "too-deep", "absent"],
)
def test_sdist_without_top_level_pkg_info(
    tmp_path: Path, suffix: str, members: dict[str, bytes]
) -> None:
    sdist = make_sdist(tmp_path / f"demo-1.0{suffix}", members)
    assert read_metadata_bytes(sdist, "sdist") is None


def test_sdist_with_dot_slash_prefix(tmp_path: Path) -> None:
    sdist = make_tar(tmp_path / "demo-1.0.tar.gz", {"./demo-1.0/PKG-INFO": PKG_INFO})
    assert read_metadata_bytes(sdist, "sdist") == PKG_INFO


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"EGG-INFO/PKG-INFO": PKG_INFO, "demo/__init__.py": b""}, PKG_INFO),
        ({"demo/__init__.py": b""}, None),
    ],
    ids=["with-pkg-info", "without"],
)
def test_egg(tmp_path: Path, members: dict[str, bytes], expected: bytes | None) -> None:
    egg = make_zip(tmp_path / "demo-1.0-py3.11.egg", members)
    assert read_metadata_bytes(egg, "egg") == expected


# --------------------------------------------------------------------------
# Damaged, hostile and unexpected input


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("demo-1.0-py3-none-any.whl", "wheel"),
        ("demo-1.0.zip", "sdist"),
        ("demo-1.0.tar.gz", "sdist"),
        ("demo-1.0.tar.bz2", "sdist"),
        ("demo-1.0.tar.xz", "sdist"),
        ("demo-1.0.tar", "sdist"),
        ("demo-1.0-py3.11.egg", "egg"),
    ],
)
def test_corrupt_archive_gives_none(tmp_path: Path, filename: str, kind: str) -> None:
    path = tmp_path / filename
    path.write_bytes(b"PK\x03\x04 this is not really an archive" + bytes(range(256)))
    assert read_metadata_bytes(path, kind) is None


def test_zip_with_corrupted_member_gives_none(tmp_path: Path) -> None:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("demo-1.0.dist-info/METADATA", WHEEL_METADATA)
    data = bytearray(wheel.read_bytes())
    start = data.index(b"Name: demo")
    data[start : start + 4] = b"XXXX"  # the CRC no longer matches
    wheel.write_bytes(bytes(data))
    assert read_metadata_bytes(wheel, "wheel") is None


def test_truncated_tar_gz_gives_none(tmp_path: Path) -> None:
    sdist = make_tar(
        tmp_path / "demo-1.0.tar.gz",
        {"demo-1.0/blob.bin": os.urandom(256 * 1024), "demo-1.0/PKG-INFO": PKG_INFO},
    )
    data = sdist.read_bytes()
    sdist.write_bytes(data[: len(data) // 2])
    assert read_metadata_bytes(sdist, "sdist") is None


@pytest.mark.parametrize("name", ["demo-1.0.tar.gz", "demo-1.0.tar"])
def test_tar_sdist_in_the_legacy_lzma_format_is_not_read(tmp_path: Path, name: str) -> None:
    # Unmarked data: any bytes would be decoded as a stream, so a large file
    # that is no archive at all would take seconds to be found so.
    plain = make_tar(tmp_path / "plain.tar", {"demo-1.0/PKG-INFO": PKG_INFO}).read_bytes()
    sdist = tmp_path / name
    sdist.write_bytes(lzma.compress(plain, format=lzma.FORMAT_ALONE))
    assert read_metadata_bytes(sdist, "sdist") is None


def test_tar_sdist_is_read_by_its_content_not_its_name(tmp_path: Path) -> None:
    plain = make_tar(tmp_path / "plain.tar", {"demo-1.0/PKG-INFO": PKG_INFO}).read_bytes()
    for name, data in (
        ("demo-1.0.tar.gz", plain),
        ("demo-1.0.tar", gzip.compress(plain)),
        ("demo-1.0.tar.bz2", lzma.compress(plain)),
    ):
        (tmp_path / name).write_bytes(data)
        assert read_metadata_bytes(tmp_path / name, "sdist") == PKG_INFO, name


@pytest.mark.parametrize(
    ("name", "found"), [("demo-1.0.tar.gz", False), ("demo-1.0.tar.xz", False), ("demo-1.0.tar", True)]
)
def test_pkg_info_is_looked_for_only_so_far_into_a_compressed_tar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, found: bool
) -> None:
    # As a decompression bomb would have it: a large member first.
    monkeypatch.setattr(pypiserver.metadata, "TAR_SCAN_LIMIT", 64 * 1024)
    sdist = make_tar(
        tmp_path / name,
        {"demo-1.0/blob.bin": os.urandom(256 * 1024), "demo-1.0/PKG-INFO": PKG_INFO},
    )
    assert read_metadata_bytes(sdist, "sdist") == (PKG_INFO if found else None)
    first = make_tar(tmp_path / f"first-{name}", {"demo-1.0/PKG-INFO": PKG_INFO, "demo-1.0/blob.bin": b"x" * 300_000})
    assert read_metadata_bytes(first, "sdist") == PKG_INFO


def _two_gzip_members(path: Path) -> Path:
    # A valid .gz (gzip allows concatenated members), which the one-call
    # decompression leaves to the streaming reader.
    tar = make_tar(path.with_suffix(""), {"demo-1.0/PKG-INFO": PKG_INFO}).read_bytes()
    path.write_bytes(gzip.compress(tar[:1024]) + gzip.compress(tar[1024:]))
    return path


def _damaged_gzip(path: Path) -> Path:
    path.write_bytes(b"\x1f\x8b" + bytes(200))
    return path


# (how to make the archive in a directory, the metadata it holds)
IN_MEMORY_CASES = {
    "gz-first": (
        lambda d: make_tar(d / "demo-1.0.tar.gz", {"demo-1.0/PKG-INFO": PKG_INFO, "demo-1.0/a.py": b""}),
        PKG_INFO,
    ),
    "gz-later": (
        lambda d: make_tar(d / "demo-1.0.tar.gz", {"demo-1.0/a.py": b"x" * 5000, "demo-1.0/PKG-INFO": PKG_INFO}),
        PKG_INFO,
    ),
    "gz-none": (lambda d: make_tar(d / "demo-1.0.tar.gz", {"demo-1.0/a.py": b""}), None),
    "gz-over-in-memory-limit": (
        lambda d: make_tar(d / "demo-1.0.tar.gz", {"demo-1.0/big.bin": bytes(300_000), "demo-1.0/PKG-INFO": PKG_INFO}),
        PKG_INFO,
    ),
    "gz-two-members": (lambda d: _two_gzip_members(d / "demo-1.0.tar.gz"), PKG_INFO),
    "gz-damaged": (lambda d: _damaged_gzip(d / "demo-1.0.tar.gz"), None),
    "xz": (lambda d: make_tar(d / "demo-1.0.tar.xz", {"demo-1.0/PKG-INFO": PKG_INFO}), PKG_INFO),
    "plain-tar": (lambda d: make_tar(d / "demo-1.0.tar", {"demo-1.0/PKG-INFO": PKG_INFO}), PKG_INFO),
    "zip-sdist": (lambda d: make_zip(d / "demo-1.0.zip", {"demo-1.0/PKG-INFO": PKG_INFO}), PKG_INFO),
    "wheel": (
        lambda d: make_zip(d / "demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": WHEEL_METADATA}),
        WHEEL_METADATA,
    ),
    "egg": (lambda d: make_zip(d / "demo-1.0-py3.11.egg", {"EGG-INFO/PKG-INFO": PKG_INFO}), PKG_INFO),
}


@pytest.mark.parametrize(("make", "expected"), IN_MEMORY_CASES.values(), ids=IN_MEMORY_CASES.keys())
def test_metadata_from_the_bytes_already_read_is_what_the_file_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make, expected: bytes | None
) -> None:
    monkeypatch.setattr(pypiserver.metadata, "TAR_IN_MEMORY_LIMIT", 100_000)
    path = make(tmp_path)
    kind = {".whl": "wheel", ".egg": "egg"}.get(path.suffix, "sdist")
    assert read_metadata_bytes(path, kind) == expected
    content = path.read_bytes()
    path.unlink()  # so nothing can come from the file itself
    assert read_metadata_bytes(path, kind, content) == expected


def test_a_member_longer_than_its_header_says_is_not_read() -> None:
    # No standard library reader gives such a stream today; the limit must
    # not depend on that.
    read = pypiserver.metadata._read_declared
    assert read(io.BytesIO(PKG_INFO), "PKG-INFO", len(PKG_INFO)) == PKG_INFO
    assert read(io.BytesIO(PKG_INFO + b"more"), "PKG-INFO", len(PKG_INFO)) is None


def test_tar_gz_stops_at_first_pkg_info(tmp_path: Path) -> None:
    # Damage after PKG-INFO is never reached: the reader does not list the
    # whole archive before looking.
    sdist = make_tar(
        tmp_path / "demo-1.0.tar.gz",
        {"demo-1.0/PKG-INFO": PKG_INFO, "demo-1.0/blob.bin": os.urandom(256 * 1024)},
    )
    data = sdist.read_bytes()
    sdist.write_bytes(data[: len(data) // 2])
    assert read_metadata_bytes(sdist, "sdist") == PKG_INFO


@pytest.mark.parametrize(
    ("size", "readable"),
    [(METADATA_LIMIT, True), (METADATA_LIMIT + 1, False), (5 * 1024 * 1024, False)],
    ids=["at-limit", "one-over", "5MiB"],
)
@pytest.mark.parametrize(
    ("filename", "kind", "member"),
    [
        ("demo-1.0-py3-none-any.whl", "wheel", "demo-1.0.dist-info/METADATA"),
        ("demo-1.0.tar.gz", "sdist", "demo-1.0/PKG-INFO"),
        ("demo-1.0.zip", "sdist", "demo-1.0/PKG-INFO"),
        ("demo-1.0-py3.11.egg", "egg", "EGG-INFO/PKG-INFO"),
    ],
    ids=["wheel", "tar.gz", "zip", "egg"],
)
def test_size_limit(
    tmp_path: Path, filename: str, kind: str, member: str, size: int, readable: bool
) -> None:
    body = b"Name: demo\n\n" + b"A" * (size - len(b"Name: demo\n\n"))
    path = tmp_path / filename
    (make_sdist if kind == "sdist" else make_zip)(path, {member: body})
    assert path.stat().st_size < 64 * 1024  # highly compressible, small on disk
    result = read_metadata_bytes(path, kind)
    assert (result == body) if readable else (result is None)


@pytest.mark.parametrize(
    "link_type", [tarfile.SYMTYPE, tarfile.LNKTYPE], ids=["symlink", "hardlink"]
)
def test_tar_link_named_pkg_info_is_ignored(tmp_path: Path, link_type: bytes) -> None:
    sdist = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        add_tar_file(archive, "demo-1.0/secret", b"Name: via link\n")
        # Both links resolve inside the archive, so a reader that followed
        # them would return the secret member's bytes.
        target = "secret" if link_type == tarfile.SYMTYPE else "demo-1.0/secret"
        add_tar_link(archive, "demo-1.0/PKG-INFO", target, link_type)
    assert read_metadata_bytes(sdist, "sdist") is None


def test_tar_regular_pkg_info_after_a_link_is_used(tmp_path: Path) -> None:
    sdist = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        add_tar_link(archive, "other-1.0/PKG-INFO", "/etc/passwd", tarfile.SYMTYPE)
        add_tar_file(archive, "demo-1.0/PKG-INFO", PKG_INFO)
    assert read_metadata_bytes(sdist, "sdist") == PKG_INFO


def test_nothing_is_extracted(tmp_path: Path) -> None:
    sdist = make_tar(tmp_path / "demo-1.0.tar.gz", {"demo-1.0/PKG-INFO": PKG_INFO})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert read_metadata_bytes(sdist, "sdist") == PKG_INFO
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("missing-1.0-py3-none-any.whl", "wheel"),  # no such file
        ("demo-1.0.rar", "sdist"),  # not an sdist archive format
        ("demo-1.0.tar.gz", "unknown"),  # not a kind
    ],
)
def test_unreadable_inputs_give_none(tmp_path: Path, filename: str, kind: str) -> None:
    path = tmp_path / filename
    if not filename.startswith("missing"):
        make_tar(tmp_path / "demo-1.0.tar.gz", {"demo-1.0/PKG-INFO": PKG_INFO}).rename(
            path
        )
    assert read_metadata_bytes(path, kind) is None


def test_directory_instead_of_file_gives_none(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.mkdir()
    assert read_metadata_bytes(path, "wheel") is None


# --------------------------------------------------------------------------
# Parsing


def metadata(*lines: str, body: str = "", version: str = "2.1") -> bytes:
    head = f"Metadata-Version: {version}\nName: demo\nVersion: 1.0\n"
    text = head + "".join(f"{line}\n" for line in lines)
    return (text + ("\n" + body if body else "")).encode("utf-8")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            metadata(
                "Summary: A demo",
                "Requires-Dist: requests>=2",
                'Requires-Dist: rich; extra == "ui"',
                "Provides-Extra: ui",
            ),
            {
                "summary": "A demo",
                "requires_dist": ("requests>=2", 'rich; extra == "ui"'),
                "provides_extra": ("ui",),
            },
        ),
        (
            metadata(
                "Project-URL: Homepage, https://example.org",
                "Project-URL: Issues,https://example.org/issues",
            ),
            {
                "project_urls": {
                    "Homepage": "https://example.org",
                    "Issues": "https://example.org/issues",
                }
            },
        ),
        (
            # packaging refuses a repeated label; the first one is kept.
            metadata(
                "Project-URL: Home, https://a.example",
                "Project-URL: Home, https://b.example",
                "Project-URL: Docs, https://d.example",
            ),
            {
                "project_urls": {
                    "Home": "https://a.example",
                    "Docs": "https://d.example",
                }
            },
        ),
        (
            metadata(),
            {
                "summary": None,
                "requires_dist": (),
                "project_urls": {},
                "requires_python": None,
            },
        ),
        (metadata("Requires-Python: >=3.9"), {"requires_python": ">=3.9"}),
        (
            metadata("Requires-Python: >=3.8, !=3.9.*"),
            {"requires_python": ">=3.8, !=3.9.*"},
        ),
        (
            metadata("Requires-Python: python3 or later"),
            {"requires_python": None, "name": "demo"},
        ),
        (metadata("Requires-Python: >=3.x"), {"requires_python": None}),
        (
            metadata(
                "License-Expression: MIT OR Apache-2.0",
                "License-File: LICENSE",
                version="2.4",
            ),
            {"license": "MIT OR Apache-2.0", "name": "demo", "version": "1.0"},
        ),
        (metadata("License: BSD", "License-Expression: MIT"), {"license": "BSD"}),
        (
            metadata(
                "Classifier: Programming Language :: Python :: 3",
                "Classifier: Typing :: Typed",
                "Platform: any",
                "Keywords: web,index",
            ),
            {
                "classifiers": (
                    "Programming Language :: Python :: 3",
                    "Typing :: Typed",
                ),
                "platform": ("any",),
                "keywords": "web,index",
            },
        ),
        (
            metadata(
                "Author: Ada",
                "Author-email: ada@example.org",
                "Maintainer: Bob",
                "Maintainer-email: bob@example.org",
                "Home-page: https://example.org",
                "Description-Content-Type: text/x-rst",
            ),
            {
                "author": "Ada",
                "author_email": "ada@example.org",
                "maintainer": "Bob",
                "maintainer_email": "bob@example.org",
                "home_page": "https://example.org",
                "description_content_type": "text/x-rst",
            },
        ),
        (
            metadata(body="# Title\n\nSome text.\n"),
            {"description": "# Title\n\nSome text.\n"},
        ),
        (
            # Metadata 1.x: the description is a folded header (setuptools indent).
            metadata(
                "Description: First line\n"
                "        second line\n"
                "            indented\n"
                "        "
            ),
            {"description": "First line\nsecond line\n    indented\n"},
        ),
        (
            # Both a header and a body: the body (metadata 2.1+) wins.
            metadata("Description: old", body="new body\n"),
            {"description": "new body\n"},
        ),
        (metadata("Summary: one", "Summary: two"), {"summary": "one"}),
        (
            b"Name: caf\xe9\nVersion: 1.0\nSummary: \xff\xfe\n",
            {"name": "caf\ufffd", "summary": "\ufffd\ufffd"},
        ),
        ("Name: café\nSummary: Grüße\n".encode(), {"name": "café", "summary": "Grüße"}),
        (b"", {"name": None, "version": None}),
        (b"\x00\x01\x02 not metadata at all \xff", {"name": None, "requires_dist": ()}),
    ],
    ids=[
        "requires-dist",
        "project-urls",
        "project-urls-duplicate-label",
        "missing-fields",
        "requires-python",
        "requires-python-several",
        "requires-python-invalid-words",
        "requires-python-invalid-version",
        "license-expression-2.4",
        "license-preferred-over-expression",
        "classifiers-platform-keywords",
        "people-and-home",
        "description-body",
        "description-folded-header",
        "description-header-and-body",
        "repeated-single-field",
        "invalid-utf8",
        "utf8",
        "empty",
        "garbage",
    ],
)
def test_parse_metadata(raw: bytes, expected: dict[str, object]) -> None:
    parsed = parse_metadata(raw)
    assert isinstance(parsed, CoreMetadata)
    assert {key: getattr(parsed, key) for key in expected} == expected


# Header blocks index_fields() reads itself, and ones it must leave to the
# email parser; either way the three fields must be what parse_metadata gives.
INDEX_FIELD_CASES = {
    "plain": metadata("Summary: A demo", "Requires-Python: >=3.8"),
    "no-body-no-newline": b"Name: demo\nSummary: x",
    "body": metadata("Summary: s", body="Summary: not a header\n"),
    "any-case-first-wins": metadata("summary:  first ", "SUMMARY: second", "name: other"),
    "empty-values": metadata("Summary:", "Requires-Python:"),
    "invalid-requires-python": metadata("Requires-Python: >=3.8 or so"),
    "folded-summary": metadata("Summary: two", "  lines"),
    "folded-other-field": metadata("Description: long", "        | more", "Summary: after"),
    "continuation-first": b" stray\nName: demo\nSummary: s\n",
    "crlf": WHEEL_METADATA,
    "bare-cr": b"Name: demo\rSummary: s\r",
    "not-a-header-line": metadata("Bad Header: x", "Summary: after the bad line"),
    "space-before-colon": metadata("Summary : x"),
    "from-line": b"From nobody\nName: demo\nSummary: s\n",
    "empty-name": metadata(":value", "Summary: s"),
    "leading-blank-line": b"\nName: demo\nSummary: s\n",
    "encoded-word": metadata("Summary: =?utf-8?q?caf=C3=A9?="),
    "line-separator-in-value": metadata("Summary: a\u2028b\x0bc"),
    "invalid-utf8": b"Name: d\xffmo\nSummary: \xfe\n",
    "empty": b"",
}


@pytest.mark.parametrize("raw", INDEX_FIELD_CASES.values(), ids=INDEX_FIELD_CASES.keys())
def test_index_fields_are_what_parse_metadata_reads(raw: bytes) -> None:
    parsed = parse_metadata(raw)
    assert index_fields(raw) == (parsed.name, parsed.summary, parsed.requires_python)


_HEADER_PIECES = [
    "Metadata-Version: 2.1", "Name: Foo", "name: other", "NAME:Bar", "Summary: hello world",
    "Summary:", "summary:   spaced  ", "Summary: two\n  lines", "Requires-Python: >=3.8",
    "Requires-Python: junk!!", "requires-python:  >=3.7 ,<4 ", "Requires-Python:", "Version: 1.0",
    "Description: long\n        | more\n        |", "From nobody", "Bad Header: x", "X-Odd:value",
    " leading continuation", "\tTabbed", "Summary: =?utf-8?q?caf=C3=A9?=", "Name: Caf\u00e9",
    "Summary: a\u2028b", "Keywords: a,b", ":empty name", "Summary : spaced colon",
]  # fmt: skip
_HEADER_ENDS = ["", "\n", "\n\n", "\n\nBody text\n", "\r\n", "\n\nSummary: in body\n"]


def test_index_fields_agree_with_parse_metadata_on_random_header_blocks() -> None:
    # A fixed seed: the same 2,000 blocks every run, mixing the plain lines
    # read directly with every kind that must go to the email parser.
    rng = random.Random(5)
    for _ in range(2000):
        lines = [rng.choice(_HEADER_PIECES) for _ in range(rng.randint(0, 7))]
        text = rng.choice(["\n", "\n", "\r\n"]).join(lines) + rng.choice(_HEADER_ENDS)
        raw = text.encode() + (b"\xff" if rng.random() < 0.05 else b"")
        parsed = parse_metadata(raw)
        assert index_fields(raw) == (parsed.name, parsed.summary, parsed.requires_python), raw


def test_index_fields_of_plain_headers_need_no_email_parser(monkeypatch) -> None:
    raw = metadata("Summary: A demo", "Requires-Python: >=3.8", "Description: x", "  folded")
    monkeypatch.setattr(pypiserver.metadata, "parse_metadata", _not_called)
    assert index_fields(raw) == ("demo", "A demo", ">=3.8")


def _not_called(raw: bytes) -> CoreMetadata:
    raise AssertionError("the email parser was used")


def test_parse_wheel_metadata_round_trip() -> None:
    parsed = parse_metadata(WHEEL_METADATA)
    assert parsed.name == "demo"
    assert parsed.summary == "Grüße — 日本語"
    assert parsed.description is not None and "Ünïcödé body." in parsed.description


def test_core_metadata_defaults_and_immutability() -> None:
    empty = CoreMetadata()
    assert empty.name is None and empty.requires_dist == () and empty.project_urls == {}
    assert hash(empty) == hash(CoreMetadata())  # usable as a cache key
    with pytest.raises(AttributeError):
        empty.name = "changed"  # type: ignore[misc]
