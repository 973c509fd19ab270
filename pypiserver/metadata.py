"""Core metadata read from a distribution file.

A wheel carries its metadata in ``{name}-{version}.dist-info/METADATA``, an
sdist in ``{name}-{version}/PKG-INFO`` and an egg in ``EGG-INFO/PKG-INFO``
(core metadata specification, binary and source distribution formats).  The
index reads it once per file: the bytes are served unchanged as the PEP 658
``.metadata`` file, and the parsed fields feed ``Requires-Python``, the JSON
API and search.

Files come from uploads and from whatever lands in the package directories,
so reading is defensive: nothing is extracted to disk, members are size
capped, links are not followed, and a broken archive yields ``None``.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .distributions import InvalidDistributionFilename, parse_filename

__all__ = [
    "METADATA_LIMIT",
    "CoreMetadata",
    "IndexFields",
    "index_fields",
    "parse_metadata",
    "read_metadata_bytes",
]

log = logging.getLogger(__name__)

#: The largest metadata member read, decompressed.  Real METADATA files are
#: kilobytes (long READMEs reach a few hundred); the cap stops a small
#: compressed archive from expanding into memory without bound.
METADATA_LIMIT = 4 * 1024 * 1024
#: How far into a compressed tar sdist, decompressed, PKG-INFO is looked
#: for.  Passing a member means decompressing it (about 1 GB/s here), and
#: gzip data can expand a thousandfold: without a bound a 100 MB upload
#: could keep a worker busy for two minutes.  Real sdists are far smaller.
TAR_SCAN_LIMIT = 1 << 30

#: A gzip tar sdist given as bytes is decompressed in one call when it
#: expands to at most this much: half the time tarfile takes to read it
#: through gzip (145 against 290 us for a small sdist).  Larger ones are
#: streamed.
TAR_IN_MEMORY_LIMIT = 4 * 1024 * 1024

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


# --------------------------------------------------------------------------
# Reading the bytes


def read_metadata_bytes(path: Path, kind: str, content: bytes | None = None) -> bytes | None:
    """The core metadata file of the distribution at ``path``, byte for byte.

    ``kind`` is ``"wheel"``, ``"sdist"`` or ``"egg"`` (as
    :func:`pypiserver.distributions.parse_filename` reports it).
    ``content`` is the file's bytes, when the caller has read them already:
    the file is then not opened again.  Returns ``None`` when the archive
    has no metadata, the member is over :data:`METADATA_LIMIT`, or the file
    cannot be read; never raises.
    """
    source: Path | IO[bytes] = path if content is None else io.BytesIO(content)
    try:
        if kind == "wheel":
            return _read_wheel(source, path)
        if kind == "egg":
            return _read_zip_member(source, path, "EGG-INFO/PKG-INFO")
        if kind == "sdist":
            return _read_sdist(source, path)
        log.debug("no metadata reader for kind %r (%s)", kind, path)
        return None
    # The archive readers of the standard library raise a wide and loosely
    # documented set of errors on damaged input (BadZipFile, ReadError,
    # EOFError, zlib.error, LZMAError, struct.error, ...).  A file the index
    # cannot read must not stop it from listing the others, so any failure
    # here means "no metadata".
    except Exception as exc:  # noqa: BLE001
        log.debug(
            "cannot read core metadata from %s: %s: %s", path, type(exc).__name__, exc
        )
        return None


def _read_wheel(source: Path | IO[bytes], path: Path) -> bytes | None:
    with zipfile.ZipFile(source) as archive:
        candidates = [
            info
            for info in archive.infolist()
            if _is_dist_info_metadata(info.filename) and not info.is_dir()
        ]
        if not candidates:
            log.debug("no .dist-info/METADATA in %s", path)
            return None
        chosen = _pick_dist_info(candidates, path.name)
        return _read_zip_info(archive, chosen)


def _is_dist_info_metadata(member: str) -> bool:
    parts = member.split("/")
    return (
        len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA"
    )


def _pick_dist_info(
    candidates: list[zipfile.ZipInfo], filename: str
) -> zipfile.ZipInfo:
    # A wheel that vendors another package's dist-info has several; the
    # specification names the one that matches the wheel's own name-version.
    if len(candidates) > 1:
        wanted = _wheel_identity(filename)
        for info in candidates:
            if wanted is not None and _dist_info_identity(info.filename) == wanted:
                return info
    return candidates[0]


def _wheel_identity(filename: str) -> tuple[str, Version] | None:
    try:
        dist = parse_filename(filename)
        return dist.project, Version(dist.version)
    except (InvalidDistributionFilename, InvalidVersion):
        return None


def _dist_info_identity(member: str) -> tuple[str, Version] | None:
    stem = member.split("/", 1)[0][: -len(".dist-info")]
    name, _, version = stem.rpartition("-")
    try:
        return canonicalize_name(name), Version(version)
    except InvalidVersion:
        return None


def _read_zip_member(source: Path | IO[bytes], path: Path, member: str) -> bytes | None:
    with zipfile.ZipFile(source) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            log.debug("no %s in %s", member, path)
            return None
        return _read_zip_info(archive, info)


def _read_zip_info(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
    if info.file_size > METADATA_LIMIT:
        log.debug(
            "%s is %d bytes, over the metadata limit", info.filename, info.file_size
        )
        return None
    with archive.open(info) as stream:
        return _read_declared(stream, info.filename, info.file_size)


def _read_declared(stream: IO[bytes], member: str, declared: int) -> bytes | None:
    """The ``declared`` bytes of a member, at most :data:`METADATA_LIMIT`
    (callers check that first); None if the member holds more than its
    header says.  The read stops one byte past that, so the limit holds
    whatever the archive reader does with a lying header."""
    # Not read(METADATA_LIMIT + 1): a read allocates what it asks for, and
    # 4 MiB per file took 50 us, a tenth of reading a small sdist.
    data = stream.read(declared + 1)
    if len(data) > declared:
        log.debug("%s holds more than the %d bytes its header says", member, declared)
        return None
    return data


def _read_sdist(source: Path | IO[bytes], path: Path) -> bytes | None:
    lower = path.name.lower()
    if lower.endswith(".zip"):
        return _read_zip_sdist(source, path)
    if lower.endswith(_TAR_SUFFIXES):
        if isinstance(source, Path):
            with source.open("rb") as stream:
                return _read_tar_sdist(stream, path)
        return _read_tar_sdist(source, path)
    log.debug("unknown sdist archive format: %s", path)
    return None


def _is_top_level_pkg_info(member: str) -> bool:
    # Some tools write "./name-1.0/PKG-INFO"; the leading "./" names the same
    # place.  Deeper copies (src/name.egg-info/PKG-INFO) are build leftovers.
    parts = member.removeprefix("./").split("/")
    return (
        len(parts) == 2 and parts[0] not in ("", ".", "..") and parts[1] == "PKG-INFO"
    )


def _read_zip_sdist(source: Path | IO[bytes], path: Path) -> bytes | None:
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            if _is_top_level_pkg_info(info.filename) and not info.is_dir():
                return _read_zip_info(archive, info)
    log.debug("no top-level PKG-INFO in %s", path)
    return None


def _read_tar_sdist(stream: IO[bytes], path: Path) -> bytes | None:
    # Iterating a TarFile reads one header at a time, so the loop stops at
    # the first PKG-INFO instead of decompressing the whole archive to build
    # the member list first (getmembers() would).
    mode = _tar_mode(stream.read(6))
    stream.seek(0)
    # Bytes already in memory (from read_facts): a file is streamed as is.
    if mode == "r:gz" and isinstance(stream, io.BytesIO):
        tar = _gunzipped(stream.getvalue())
        if tar is not None:
            stream, mode = io.BytesIO(tar), "r:"
    # An uncompressed archive skips a member by seeking: no bound needed.
    limit = TAR_SCAN_LIMIT if mode != "r:" else None
    with tarfile.open(fileobj=stream, mode=mode) as archive:
        for member in archive:
            if _is_top_level_pkg_info(member.name):
                if member.isfile():
                    return _read_tar_member(archive, member, path)
                # Symlinks and hardlinks could point anywhere in (or out
                # of) the archive; the metadata must be a regular member.
                log.debug("ignoring non-regular %s in %s", member.name, path)
            if limit is not None and member.offset_data + member.size > limit:
                log.warning("no PKG-INFO in the first %d bytes of %s: not looking further", limit, path)
                return None
    log.debug("no top-level PKG-INFO in %s", path)
    return None


def _gunzipped(data: bytes) -> bytes | None:
    """The tar inside gzip ``data``, decompressed in one call; None when it
    would exceed :data:`TAR_IN_MEMORY_LIMIT` or is not one plain gzip
    member (tarfile's streaming reader then takes it as it always has)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        tar = decompressor.decompress(data, TAR_IN_MEMORY_LIMIT)
    except zlib.error:
        return None
    if not decompressor.eof or decompressor.unused_data:
        return None
    return tar


def _read_tar_member(archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bytes | None:
    if member.size > METADATA_LIMIT:
        log.debug("%s in %s is over the metadata limit", member.name, path)
        return None
    stream = archive.extractfile(member)
    if stream is None:
        return None
    with stream:
        return _read_declared(stream, member.name, member.size)


#: The compressions a tar sdist may use, by the bytes each begins with.
_TAR_COMPRESSIONS = ((b"\x1f\x8b", "r:gz"), (b"BZh", "r:bz2"), (b"\xfd7zXZ\x00", "r:xz"))


def _tar_mode(head: bytes) -> str:
    """How to open a tar sdist that begins with ``head``: by what its first
    bytes say, whatever its name says, and otherwise as an uncompressed tar.
    Not tarfile's "r:*", which also tries the legacy .lzma format: that has
    no such mark, so any bytes start a stream, and a 64 MiB file that is no
    archive at all took 13 s to be found so."""
    return next((mode for magic, mode in _TAR_COMPRESSIONS if head.startswith(magic)), "r:")


# --------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, slots=True)
class CoreMetadata:
    """The core metadata fields the JSON API, search and simple pages use.

    Field meanings are those of the core metadata specification; single-use
    fields are ``None`` when absent, multiple-use fields are empty tuples.
    """

    name: str | None = None
    version: str | None = None
    #: "A one-line summary of what the distribution does."
    summary: str | None = None
    #: "A longer description of the distribution" (the message body since 2.1).
    description: str | None = None
    description_content_type: str | None = None
    author: str | None = None
    author_email: str | None = None
    maintainer: str | None = None
    maintainer_email: str | None = None
    #: The ``License`` text, or for metadata 2.4 without it, the SPDX
    #: ``License-Expression``, so that older consumers still see a licence.
    license: str | None = None
    #: Comma-separated, as setuptools and the PEP 621 backends write it.
    keywords: str | None = None
    home_page: str | None = None
    #: A valid PEP 440 specifier set as written, or ``None``.
    requires_python: str | None = None
    requires_dist: tuple[str, ...] = ()
    provides_extra: tuple[str, ...] = ()
    classifiers: tuple[str, ...] = ()
    #: ``Project-URL: label, url`` lines, label to URL, first label wins.
    project_urls: dict[str, str] = field(default_factory=dict, hash=False)
    platform: tuple[str, ...] = ()


_STRING_FIELDS = (
    "name",
    "version",
    "summary",
    "description_content_type",
    "author",
    "author_email",
    "maintainer",
    "maintainer_email",
    "home_page",
)
_EMAIL_NAMES = {
    "name": "name",
    "version": "version",
    "summary": "summary",
    "description": "description",
    "description_content_type": "description-content-type",
    "author": "author",
    "author_email": "author-email",
    "maintainer": "maintainer",
    "maintainer_email": "maintainer-email",
    "home_page": "home-page",
    "license": "license",
    "license_expression": "license-expression",
    "keywords": "keywords",
    "requires_python": "requires-python",
}


def parse_metadata(raw: bytes) -> CoreMetadata:
    """Parse ``METADATA`` / ``PKG-INFO`` bytes; tolerant of any input.

    Undecodable bytes become U+FFFD, malformed or repeated fields fall back
    to their first value, and an invalid ``Requires-Python`` is dropped, so
    one sloppy upload never hides a file from the index.
    """
    # Imported here: only files read for the first time need it, and it
    # brings in much of packaging, a twentieth of a second at every start.
    from packaging.metadata import parse_email

    text = raw.decode("utf-8", errors="replace")
    try:
        parsed, unparsed = parse_email(text)
    # parse_email is lenient by design, but it runs the email parser over
    # arbitrary uploads; an unforeseen failure must not reach the index.
    except Exception as exc:  # noqa: BLE001
        log.debug("unparsable core metadata: %s: %s", type(exc).__name__, exc)
        return CoreMetadata()
    fields: dict[str, object] = dict(parsed)

    def single(key: str) -> str | None:
        value = fields.get(key)
        if isinstance(value, str):
            return value
        # A repeated single-use field lands in ``unparsed``; the first
        # occurrence is what most tools would have read.
        extra = unparsed.get(_EMAIL_NAMES[key])
        return extra[0] if extra else None

    def several(key: str) -> tuple[str, ...]:
        value = fields.get(key)
        return tuple(value) if isinstance(value, list) else ()

    strings = {key: single(key) for key in _STRING_FIELDS}
    return CoreMetadata(
        **strings,
        description=_description(text, fields, unparsed),
        license=single("license") or single("license_expression"),
        keywords=_keywords(fields, unparsed),
        requires_python=_requires_python(single("requires_python")),
        requires_dist=several("requires_dist"),
        provides_extra=several("provides_extra"),
        classifiers=several("classifiers"),
        platform=several("platforms"),
        project_urls=_project_urls(fields, unparsed),
    )


class IndexFields(NamedTuple):
    """What the catalogue keeps of a file's core metadata, as
    :func:`parse_metadata` gives them."""

    name: str | None
    summary: str | None
    requires_python: str | None


def index_fields(raw: bytes) -> IndexFields:
    """``Name``, ``Summary`` and ``Requires-Python``, as :func:`parse_metadata`
    reads them, read from the header lines directly when they are plain.

    The first start reads every file, and the email parser behind
    :func:`parse_metadata` was a fifth of the time it took per file.  Any
    header block the email parser might read otherwise (a line that is not
    a plain header, a folded value of these fields, a carriage return) goes
    to :func:`parse_metadata` itself.
    """
    text = raw.decode("utf-8", errors="replace")
    head = text.split("\n\n", 1)[0]
    found: dict[str, str] = {}
    lines = head.split("\n")
    plain = "\r" not in head and not text.startswith("\n")
    for number, line in enumerate(lines if plain else ()):
        if not line:
            break  # the end of a text that has no body
        if line[:1] in (" ", "\t"):
            continue  # a folded value: of a field not wanted here, see below
        match = _PLAIN_HEADER.match(line)
        if match is None:
            plain = False
            break
        key = match[1].lower()
        if key in _INDEX_FIELDS and key not in found:
            following = lines[number + 1] if number + 1 < len(lines) else ""
            if following[:1] in (" ", "\t"):
                plain = False
                break
            found[key] = line[match.end() :].lstrip(" \t")
    if not plain:
        parsed = parse_metadata(raw)
        return IndexFields(parsed.name, parsed.summary, parsed.requires_python)
    return IndexFields(
        found.get("name"), found.get("summary"), _requires_python(found.get("requires-python"))
    )


#: A header line as the email parser takes it: a name of printable ASCII
#: without spaces or colons, then a colon.  (So not a "From " line.)
_PLAIN_HEADER = re.compile(r"([\041-\071\073-\176]+):")
_INDEX_FIELDS = frozenset({"name", "summary", "requires-python"})


def _description(
    text: str, fields: dict[str, object], unparsed: dict[str, list[str]]
) -> str | None:
    value = fields.get("description")
    if isinstance(value, str):
        # Only a header-borne description (metadata before 2.1) carries the
        # continuation indent; a message body is taken as written.
        return _unfold_description(value) if _has_description_header(text) else value
    # Both a Description header and a body: the body is the 2.1+ form.
    extra = unparsed.get("description")
    return extra[-1] if extra else None


_HEADER_END = re.compile(r"\r?\n\r?\n")
_DESCRIPTION_HEADER = re.compile(r"^description:", re.IGNORECASE | re.MULTILINE)


def _has_description_header(text: str) -> bool:
    headers = _HEADER_END.split(text, maxsplit=1)[0]
    return _DESCRIPTION_HEADER.search(headers) is not None


def _unfold_description(value: str) -> str:
    # The specification folds each line as "\n" + 7 spaces + "|"; setuptools
    # wrote 8 spaces instead.  Either prefix is removed once per line.
    lines = value.split("\n")
    unfolded = [lines[0]]
    for line in lines[1:]:
        if line.startswith("       |"):
            line = line[len("       |") :]
        elif line.startswith("        "):
            line = line[len("        ") :]
        unfolded.append(line)
    return "\n".join(unfolded)


def _keywords(fields: dict[str, object], unparsed: dict[str, list[str]]) -> str | None:
    value = fields.get("keywords")
    if isinstance(value, list):
        return ",".join(value)
    extra = unparsed.get("keywords")
    return extra[0] if extra else None


def _requires_python(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        log.debug("dropping invalid Requires-Python %r", value)
        return None
    return value.strip()


def _project_urls(
    fields: dict[str, object], unparsed: dict[str, list[str]]
) -> dict[str, str]:
    value = fields.get("project_urls")
    if isinstance(value, dict):
        return dict(value)
    # packaging refuses repeated labels outright; keeping the first of each
    # still gives users working links.
    urls: dict[str, str] = {}
    for line in unparsed.get("project-url", []):
        label, _, url = (part.strip() for part in line.partition(","))
        urls.setdefault(label, url)
    return urls
