"""What a distribution's filename says: its project, version and kind.

The grammar is the one pip and PyPI use: wheels per the binary distribution
format specification, sdists per the source distribution format (plus the
legacy archive suffixes older tools produced), and eggs.  Names and versions
are normalised with :mod:`packaging`, never by hand.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Literal, NamedTuple, NewType

from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

__all__ = [
    "Distribution",
    "InvalidDistributionFilename",
    "Kind",
    "NAME_PATTERN",
    "NormalizedName",
    "SDIST_SUFFIXES",
    "SIGNATURE_SUFFIX",
    "normalize_name",
    "parse_filename",
    "is_distribution",
    "version_ranks",
]

NormalizedName = NewType("NormalizedName", str)
Kind = Literal["wheel", "sdist", "egg"]

#: Archive suffixes an sdist has been published with over the years; the
#: current specification allows only ``.tar.gz``, but old indexes hold the rest.
SDIST_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz", ".tar")
SIGNATURE_SUFFIX = ".asc"

#: Project names per the core metadata specification: ASCII letters, digits,
#: and ".", "_", "-" inside, starting and ending with a letter or digit.
NAME_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_NAME = re.compile(f"^{NAME_PATTERN}$")
# An egg is ``name-version(-pyX.Y)(-platform).egg`` with "-" escaped as "_".
_EGG = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-py(?P<py>\d+(?:\.\d+)*))?(?:-(?P<plat>.+))?\.egg$"
)


class InvalidDistributionFilename(ValueError):
    """A filename that is not a wheel, sdist or egg as the packaging
    specifications (binary and source distribution formats) define them."""


def normalize_name(name: str) -> NormalizedName:
    """The PEP 503 normalised form of a project name."""
    return NormalizedName(canonicalize_name(name))


# NamedTuples here and for the other per-file records: the catalogue holds
# 60,000 of each, and a tuple is built several times faster than a frozen
# dataclass.
class Distribution(NamedTuple):
    """A distribution file named by the grammar above."""

    filename: str
    #: The project name as written in the filename.
    name: str
    #: The PEP 503 normalised project name, the key every lookup uses.
    project: NormalizedName
    #: The version as written in the filename (what pip shows and matches).
    version: str
    kind: Kind
    #: The wheel's or egg's Python tag ("py3", "cp311"); "source" for sdists,
    #: as the PyPI JSON API reports it.
    python_version: str

    @property
    def packagetype(self) -> str:
        """The PyPI JSON API name for this kind of file."""
        return {"wheel": "bdist_wheel", "sdist": "sdist", "egg": "bdist_egg"}[self.kind]

    @property
    def sort_key(self) -> tuple[Version, str]:
        return (_version_or_zero(self.version), self.filename)


def parse_filename(filename: str) -> Distribution:
    """Parse a distribution filename.

    Raises :class:`InvalidDistributionFilename` with a message a user can act
    on when the name follows none of the formats.
    """
    if "/" in filename or "\\" in filename or filename.startswith("."):
        raise InvalidDistributionFilename(f"{filename!r} is not a plain file name")
    lower = filename.lower()
    if lower.endswith(".whl"):
        return _parse_wheel(filename)
    if lower.endswith(".egg"):
        return _parse_egg(filename)
    for suffix in SDIST_SUFFIXES:
        if lower.endswith(suffix):
            return _parse_sdist(filename, filename[: -len(suffix)])
    raise InvalidDistributionFilename(
        f"{filename!r} is not a distribution: expected a wheel (.whl), an sdist "
        f"({', '.join(SDIST_SUFFIXES)}) or an egg (.egg)"
    )


def is_distribution(filename: str) -> bool:
    """Whether ``filename`` names a distribution (signatures are not)."""
    try:
        parse_filename(filename)
    except InvalidDistributionFilename:
        return False
    return True


def _parse_wheel(filename: str) -> Distribution:
    try:
        name, version, _build, tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise InvalidDistributionFilename(f"invalid wheel filename: {exc}") from None
    written_name = filename.split("-", 1)[0]
    written_version = filename.split("-", 2)[1]
    pythons = sorted({tag.interpreter for tag in tags})
    return Distribution(
        filename=filename,
        name=written_name,
        project=NormalizedName(name),
        version=written_version if _is_version(written_version) else str(version),
        kind="wheel",
        python_version=".".join(pythons),
    )


def _parse_sdist(filename: str, stem: str) -> Distribution:
    # Names may contain "-" in old sdists ("foo-bar-1.0.tar.gz"), so the
    # version is the longest tail after a "-" that parses as a version.
    parts = stem.split("-")
    for cut in range(1, len(parts)):
        name, version = "-".join(parts[:cut]), "-".join(parts[cut:])
        if _NAME.match(name) and _is_version(version):
            return Distribution(
                filename=filename,
                name=name,
                project=normalize_name(name),
                version=version,
                kind="sdist",
                python_version="source",
            )
    raise InvalidDistributionFilename(
        f"invalid sdist filename {filename!r}: expected NAME-VERSION{filename[len(stem):]}"
        " with a PEP 440 version"
    )


def _parse_egg(filename: str) -> Distribution:
    match = _EGG.match(filename)
    if not match or not _NAME.match(match["name"]) or not _is_version(match["version"]):
        raise InvalidDistributionFilename(
            f"invalid egg filename {filename!r}: expected NAME-VERSION[-pyX.Y][-PLATFORM].egg"
        )
    return Distribution(
        filename=filename,
        name=match["name"],
        project=normalize_name(match["name"]),
        version=match["version"],
        kind="egg",
        python_version=f"py{match['py']}" if match["py"] else "",
    )


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def version_ranks(versions: Iterable[str]) -> dict[str, int]:
    """Each version string's place in version order (unparseable ones as
    "0"); equal versions such as "1.0" and "1.0.0" share a place."""
    distinct = set(versions)
    plain = [_plain_release(text) for text in distinct]
    # Most projects have only plain releases, whose order is their numbers'
    # order: tuples compare without a Python call, Version objects do not.
    key = dict(zip(distinct, plain)).__getitem__ if None not in plain else _version_or_zero
    ranks: dict[str, int] = {}
    rank, previous = -1, None
    for text in sorted(distinct, key=key):
        parsed = key(text)
        if parsed != previous:
            rank, previous = rank + 1, parsed
        ranks[text] = rank
    return ranks


_PLAIN_RELEASE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


@lru_cache(maxsize=4096)
def _plain_release(text: str) -> tuple[int, ...] | None:
    """The numbers of a release such as "1.10.0" without trailing zeros (so
    "1.0" and "1.0.0" are equal, as Version compares them); None for any
    other version."""
    if not _PLAIN_RELEASE.fullmatch(text):
        return None
    numbers = [int(part) for part in text.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


# Sorting a project's files parses each version; a project's files share a
# few versions, and the same strings come back on every rebuild.
@lru_cache(maxsize=4096)
def _version_or_zero(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")

