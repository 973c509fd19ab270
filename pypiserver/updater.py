"""``pypi-server update``: which local projects have newer releases upstream.

The package directories are scanned for the newest local release of each
project; the upstream index (PyPI unless told otherwise) is asked for each
project's versions through the simple repository API (PEP 691 JSON, with the
PEP 503 HTML page as a fallback); and a ``pip download`` command is printed,
or run, for every project that has a newer release.
"""

from __future__ import annotations

import html.parser
import json
import os
import shlex
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Literal, TextIO

from packaging.version import InvalidVersion, Version

from .distributions import (
    InvalidDistributionFilename,
    NormalizedName,
    normalize_name,
    parse_filename,
)

__all__ = [
    "DEFAULT_INDEX_URL",
    "LocalProject",
    "ProjectCheck",
    "Status",
    "UpdateOptions",
    "UpdaterError",
    "check_project",
    "fetch_versions",
    "find_local_releases",
    "newest_version",
    "pip_download_args",
    "read_ignorelist",
    "run_update",
]

DEFAULT_INDEX_URL = "https://pypi.org/simple/"

# PEP 691: prefer the JSON form, accept the HTML form from older indexes.
_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
_USER_AGENT = "pypiserver-update"
# The seed's report wraps its row of progress characters at this width.
_PROGRESS_WIDTH = 40
# Checks wait on the network, not the CPU; a few at once keep a long run short
# without hammering the upstream index.
_PARALLEL_CHECKS = 8

#: The progress character of each outcome: up to date, can be updated, no
#: releases on the index, could not be checked.
Status = Literal[".", "u", "e", "!"]


class UpdaterError(ValueError):
    """An update check that cannot go on: an unreadable ignore list, a package
    directory that does not exist, or an index that cannot be reached."""


@dataclass(frozen=True)
class UpdateOptions:
    """What ``pypi-server update`` checks and what it does with the result."""

    #: The package directories to scan.
    roots: tuple[Path, ...]
    #: The simple repository API base URL asked for newer versions.
    index_url: str = DEFAULT_INDEX_URL
    #: Run the ``pip download`` commands instead of only printing them.
    execute: bool = False
    #: Where downloads go; ``None`` means next to the newest local file.
    download_dir: Path | None = None
    #: Offer alpha, beta, release-candidate and dev releases.
    allow_prereleases: bool = False
    #: Projects never checked.
    ignore: frozenset[NormalizedName] = frozenset()
    #: Seconds to wait for each answer of the index.
    timeout: float = 10.0


@dataclass(frozen=True)
class LocalProject:
    """The newest release of a project found in the package directories."""

    #: The project name as written in the newest file's name.
    name: str
    project: NormalizedName
    version: Version
    #: The directory holding the newest file: downloads go beside it.
    directory: Path


@dataclass(frozen=True)
class ProjectCheck:
    """The outcome of asking the index about one local project."""

    local: LocalProject
    status: Status
    #: The version to update to when ``status`` is ``"u"``.
    newer: Version | None = None
    #: Why the project could not be checked when ``status`` is ``"!"``.
    reason: str = ""


# --- the ignore list -----------------------------------------------------------


def read_ignorelist(path: Path) -> frozenset[NormalizedName]:
    """The projects named in ``path``: one a line, ``#`` starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UpdaterError(f"cannot read the ignore list {path}: {reason}") from None
    names = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(normalize_name(name) for name in names if name)


# --- the local side --------------------------------------------------------------


def find_local_releases(roots: Iterable[Path]) -> dict[NormalizedName, LocalProject]:
    """The newest local release of every project under ``roots``.

    Dot-files and dot-directories are skipped (editor and VCS litter), and so
    is every file whose name is not a distribution's.
    """
    newest: dict[NormalizedName, LocalProject] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise UpdaterError(
                f"package directory {root} does not exist or is not a directory"
            )
        for directory, filename in _walk_files(root):
            found = _local_release(directory, filename)
            if found is None:
                continue
            known = newest.get(found.project)
            if known is None or found.version > known.version:
                newest[found.project] = found
    return newest


def _walk_files(root: Path) -> Iterator[tuple[Path, str]]:
    # Sorted walks make the "directory of the newest file" deterministic when
    # the same version sits in two directories.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for filename in sorted(filenames):
            if not filename.startswith("."):
                yield Path(dirpath), filename


def _local_release(directory: Path, filename: str) -> LocalProject | None:
    try:
        dist = parse_filename(filename)
        version = Version(dist.version)
    except (InvalidDistributionFilename, InvalidVersion):
        return None
    return LocalProject(
        name=dist.name, project=dist.project, version=version, directory=directory
    )


# --- the index side -------------------------------------------------------------


def fetch_versions(index_url: str, project: str, timeout: float) -> list[str]:
    """The versions of ``project`` that ``index_url`` offers, yanked ones left out.

    An empty list means the index does not know the project (404).  Raises
    :class:`UpdaterError` with a short reason when the index cannot be asked.
    """
    url = f"{index_url.rstrip('/')}/{urllib.parse.quote(normalize_name(project))}/"
    request = urllib.request.Request(
        url, headers={"Accept": _ACCEPT, "User-Agent": _USER_AGENT}
    )
    try:
        # The default opener follows redirects (an index moved to https, a
        # non-normalised URL sent to the canonical one).
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            headers = response.headers
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 404:
                return []
            raise UpdaterError(f"HTTP {exc.code} {exc.reason} from {url}") from None
    except urllib.error.URLError as exc:
        raise UpdaterError(_network_reason(exc.reason, timeout)) from None
    except (OSError, ValueError) as exc:
        # Timeouts while reading, resets, and URLs urllib cannot open at all.
        raise UpdaterError(_network_reason(exc, timeout)) from None
    return _versions_from_page(body, headers, url)


def _network_reason(reason: object, timeout: float) -> str:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


def _versions_from_page(body: bytes, headers: Message, url: str) -> list[str]:
    content_type = headers.get_content_type()
    if content_type == "text/html":
        charset = headers.get_content_charset() or "utf-8"
        return _versions_from_html(body.decode(charset, errors="replace"))
    if content_type.endswith("json"):
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UpdaterError(f"{url} answered invalid JSON") from None
        if not isinstance(document, dict):
            raise UpdaterError(f"{url} answered JSON that is not a project page")
        return _versions_from_json(document)
    raise UpdaterError(f"{url} answered {content_type}, not a simple repository page")


def _versions_from_json(document: Mapping[str, Any]) -> list[str]:
    files = [entry for entry in document.get("files") or () if isinstance(entry, dict)]
    live = [entry.get("filename") for entry in files if not entry.get("yanked")]
    listed = document.get("versions")
    if not isinstance(listed, list):
        return _distinct_versions(live)
    # PEP 700 lists every version, including ones whose files are all yanked;
    # pip would never pick those, so neither does the update.
    dead = [entry.get("filename") for entry in files if entry.get("yanked")]
    yanked_only = _parsed(_distinct_versions(dead)) - _parsed(_distinct_versions(live))
    return [
        text
        for text in listed
        if isinstance(text, str) and _parsed([text]).isdisjoint(yanked_only)
    ]


def _parsed(texts: Iterable[str]) -> set[Version]:
    versions: set[Version] = set()
    for text in texts:
        try:
            versions.add(Version(text))
        except InvalidVersion:
            continue
    return versions


def _distinct_versions(filenames: Iterable[object]) -> list[str]:
    """The versions the distribution filenames name, in order, each once."""
    seen: dict[str, None] = {}
    for filename in filenames:
        if not isinstance(filename, str):
            continue
        try:
            seen.setdefault(parse_filename(filename).version, None)
        except InvalidDistributionFilename:
            continue
    return list(seen)


class _AnchorCollector(html.parser.HTMLParser):
    """The filenames of a PEP 503 project page's links, yanked ones apart."""

    def __init__(self) -> None:
        super().__init__()
        self.filenames: list[str] = []
        self._href: str | None = None
        self._yanked = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        attributes = dict(attrs)
        self._href = attributes.get("href") or ""
        self._yanked = "data-yanked" in attributes
        self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag != "a" or self._href is None:
            return
        if not self._yanked:
            # PEP 503: the link text must be the file name; the URL's last
            # path segment is the same name when an index leaves the text out.
            text = "".join(self._text).strip()
            path = urllib.parse.urlsplit(self._href).path
            self.filenames.append(text or urllib.parse.unquote(path.rsplit("/", 1)[-1]))
        self._href = None


def _versions_from_html(page: str) -> list[str]:
    collector = _AnchorCollector()
    collector.feed(page)
    collector.close()
    return _distinct_versions(collector.filenames)


# --- deciding -----------------------------------------------------------------------


def newest_version(
    versions: Iterable[str], *, allow_prereleases: bool
) -> Version | None:
    """The highest of ``versions`` that may be offered; invalid ones are ignored."""
    candidates: list[Version] = []
    for text in versions:
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if allow_prereleases or not version.is_prerelease:
            candidates.append(version)
    return max(candidates, default=None)


def check_project(local: LocalProject, options: UpdateOptions) -> ProjectCheck:
    """Ask the index about one project and say whether it can be updated."""
    try:
        versions = fetch_versions(options.index_url, local.project, options.timeout)
    except UpdaterError as exc:
        return ProjectCheck(local, "!", reason=str(exc))
    if not versions:
        return ProjectCheck(local, "e")
    newest = newest_version(versions, allow_prereleases=options.allow_prereleases)
    if newest is not None and newest > local.version:
        return ProjectCheck(local, "u", newer=newest)
    return ProjectCheck(local, ".")


def pip_download_args(check: ProjectCheck, options: UpdateOptions) -> list[str]:
    """The arguments after ``pip`` that download the update ``check`` found."""
    directory = options.download_dir or check.local.directory
    return [
        "-q", "download", "--no-deps",
        "--index-url", options.index_url,
        "-d", str(directory),
        f"{check.local.project}=={check.newer}",
    ]  # fmt: skip


# --- the command --------------------------------------------------------------------


def run_update(
    options: UpdateOptions, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Check every local project, report, and print or run the downloads.

    ``out`` and ``err`` default to the standard streams of the moment of the
    call.  Returns 0 unless a download that was run failed (1) or a package
    directory is missing (2); projects that could not be checked are reported
    but do not fail the command.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    ignore = {normalize_name(name) for name in options.ignore}
    try:
        local = find_local_releases(options.roots)
    except UpdaterError as exc:
        print(f"error: {exc}", file=err)
        return 2
    projects = [local[key] for key in sorted(local) if key not in ignore]
    print(f"checking {len(projects)} packages for newer version", file=out)
    print(file=out)
    checks = _check_all(projects, options, out)

    missing = [check.local.name for check in checks if check.status == "e"]
    if missing:
        print(
            f"no releases found on {options.index_url} for {', '.join(missing)}",
            file=out,
        )
        print(file=out)
    failed_checks = [check for check in checks if check.status == "!"]
    if failed_checks:
        out.flush()
        for check in failed_checks:
            print(f"could not check {check.local.name}: {check.reason}", file=err)
        err.flush()
        print(file=out)

    failures = 0
    for check in (check for check in checks if check.status == "u"):
        args = pip_download_args(check, options)
        print(
            f"# update {check.local.name} from {check.local.version} to {check.newer}",
            file=out,
        )
        print(shlex.join(["pip", *args]), file=out)
        if options.execute and not _run_pip(check, args, out, err):
            failures += 1
        print(file=out)
    return 1 if failures else 0


def _check_all(
    projects: Sequence[LocalProject], options: UpdateOptions, out: TextIO
) -> list[ProjectCheck]:
    checks: list[ProjectCheck] = []
    with ThreadPoolExecutor(max_workers=_PARALLEL_CHECKS) as pool:
        # map() yields in submission order, so the row of characters lines up
        # with the sorted project list however the answers arrive.
        for check in pool.map(
            lambda project: check_project(project, options), projects
        ):
            checks.append(check)
            out.write(check.status)
            if len(checks) % _PROGRESS_WIDTH == 0:
                out.write("\n")
            out.flush()
    if len(checks) % _PROGRESS_WIDTH:
        out.write("\n")
    if checks:
        out.write("\n")
    return checks


def _run_pip(check: ProjectCheck, args: list[str], out: TextIO, err: TextIO) -> bool:
    out.flush()
    command = [sys.executable, "-m", "pip", *args]
    try:
        completed = subprocess.run(
            command,
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
    except OSError as exc:
        print(f"could not update {check.local.name}: cannot run pip ({exc})", file=err)
        return False
    if completed.returncode == 0:
        return True
    # pip's own message says why (no such version, disk full); pass it on.
    detail = (completed.stderr or completed.stdout).strip()
    print(
        f"could not update {check.local.name} to {check.newer}: "
        f"pip exited with status {completed.returncode}",
        file=err,
    )
    if detail:
        print(detail, file=err)
    return False
