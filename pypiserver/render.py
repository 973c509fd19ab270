"""Index documents built from catalogue objects by small pure functions.

* the simple repository API (PEP 503 HTML, PEP 691 JSON) with PEP 592
  yanking, PEP 629 versioning, PEP 658/714 core metadata and PEP 700 fields;
* the PyPI JSON API (``/pypi/<project>/json``) that Renovate, Dependabot and
  many scripts read.

Links in simple pages are relative, so one rendered page serves every host
name and proxy prefix and can be cached as bytes.
"""

from __future__ import annotations

import functools
import json
import re
import time
from html import escape
from json.encoder import encode_basestring_ascii
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from .index import IndexedFile, Project, normalize_version
from .metadata import CoreMetadata

__all__ = [
    "API_VERSION",
    "file_url",
    "files_listing_html",
    "project_list_html",
    "project_list_json",
    "project_page_html",
    "project_page_json",
    "pypi_json",
]

#: PEP 700 (upload-time, size, versions) is simple API version 1.1.
API_VERSION = "1.1"
_META_TAG = f'<meta name="pypi:repository-version" content="{API_VERSION}">'
#: What quote(..., safe="/") leaves as it is.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~/-]*")


def file_url(file: IndexedFile, prefix: str) -> str:
    relpath = file.relpath
    # Most names need no quoting, and quote() is slow enough to show in the
    # time to render 10,000 pages.
    return prefix + (relpath if _UNQUOTED.fullmatch(relpath) else quote(relpath, safe="/"))


def project_list_html(names: Iterable[tuple[str, str]]) -> bytes:
    """The project list from (normalised name, display name) pairs."""
    links = "".join(
        f'<a href="{quote(name)}/">{escape(display)}</a><br>\n' for name, display in names
    )
    return _page("Simple index", links)


def project_list_json(names: Iterable[tuple[str, str]]) -> bytes:
    document = {
        "meta": {"api-version": API_VERSION},
        "projects": [{"name": display} for _, display in names],
    }
    return _json(document)


#: Where the files are, relative to ``/simple/<project>/``.
PACKAGES_PREFIX = "../../packages/"


def project_page_html(project: Project, hash_algo: str | None, prefix: str = PACKAGES_PREFIX) -> bytes:
    links = "".join(_file_anchor(f, hash_algo, prefix) for f in project.files)
    return _page(f"Links for {project.display_name}", links)


def project_page_json(project: Project, hash_algo: str | None, prefix: str = PACKAGES_PREFIX) -> bytes:
    # Written out as text rather than json.dumps() of dicts: it takes half
    # the time, and the first request for each of 10,000 pages pays it.  The
    # bytes are what json.dumps(document, separators=(",", ":")) gives.
    versions = ",".join(map(_json_string, project.versions))
    files = ",".join(_file_json(f, hash_algo, prefix) for f in project.files)
    return (
        f'{{"meta":{{"api-version":"{API_VERSION}"}},"name":{_json_string(project.name)},'
        f'"versions":[{versions}],"files":[{files}]}}'
    ).encode("ascii")


def files_listing_html(files: Iterable[IndexedFile], hash_algo: str | None) -> bytes:
    """The ``/packages/`` page: every file, newest project layout agnostic."""
    links = "".join(_file_anchor(f, hash_algo, prefix="") for f in files)
    return _page("Index of packages", links)


def pypi_json(
    project: Project,
    version: str,
    metadata: CoreMetadata | None,
    base_url: str,
    digests: Mapping[str, Mapping[str, str]],
) -> bytes:
    """The PyPI JSON API document for one release of ``project``; ``digests``
    maps each file's relpath to all its digests."""
    release_files = project.release(version)
    files_url = base_url.rstrip("/") + "/packages/"
    releases: dict[str, list[dict[str, Any]]] = {}
    for file in project.files:
        releases.setdefault(file.dist.version, []).append(_pypi_file(file, files_url, digests[file.relpath]))
    yanked = bool(release_files) and all(f.yanked is not None for f in release_files)
    document = {
        "info": _pypi_info(project, version, metadata, base_url, yanked, release_files),
        "last_serial": project.serial,
        "releases": releases,
        "urls": [_pypi_file(f, files_url, digests[f.relpath]) for f in release_files],
        "vulnerabilities": [],
    }
    return _json(document)


# -- pieces -------------------------------------------------------------------


def _page(title: str, body: str) -> bytes:
    html = (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f"{_META_TAG}\n<title>{escape(title)}</title>\n</head>\n"
        f"<body>\n<h1>{escape(title)}</h1>\n{body}</body>\n</html>\n"
    )
    return html.encode("utf-8")


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _file_anchor(file: IndexedFile, hash_algo: str | None, prefix: str) -> str:
    # Written for speed: the first request for each of 10,000 pages runs it
    # for every file.
    facts = file.facts
    digest = facts.digests.get(hash_algo) if hash_algo else None
    fragment = f"#{hash_algo}={digest}" if digest else ""
    anchor = f'<a href="{file_url(file, prefix)}{fragment}"'  # quoted: nothing to escape
    if facts.requires_python:
        # escape() turns "<" and ">" into entities, as PEP 503 requires.
        anchor += f' data-requires-python="{_escaped(facts.requires_python)}"'
    if file.has_metadata:
        value = f"sha256={facts.metadata_sha256}"
        # PEP 714: the new name, plus the old one for clients not yet updated.
        anchor += f' data-core-metadata="{value}" data-dist-info-metadata="{value}"'
    if file.signed:
        anchor += ' data-gpg-sig="true"'
    if file.yanked is not None:
        anchor += f' data-yanked="{escape(file.yanked)}"'
    return f"{anchor}>{escape(file.dist.filename)}</a><br>\n"


@functools.lru_cache(maxsize=1024)
def _escaped(text: str) -> str:
    # For the few Requires-Python strings that thousands of files share.
    return escape(text)


def _file_json(file: IndexedFile, hash_algo: str | None, prefix: str) -> str:
    """One file's object in a PEP 691 project page, as JSON text."""
    facts = file.facts
    hashes = f'"sha256":"{facts.digests.sha256}"'  # hex digests need no escaping
    if hash_algo and hash_algo != "sha256" and (digest := facts.digests.get(hash_algo)):
        hashes += f',{_json_string(hash_algo)}:"{digest}"'
    requires = "null" if facts.requires_python is None else _json_string(facts.requires_python)
    yanked = file.yanked
    # A reason when one was given, else whether the file is yanked (PEP 592).
    yanked_value = _json_string(yanked) if yanked else _JSON_BOOL[yanked is not None]
    metadata = f'{{"sha256":"{facts.metadata_sha256}"}}' if file.has_metadata else "false"
    return (
        f'{{"filename":{_json_string(file.dist.filename)},'
        f'"url":{_json_string(file_url(file, prefix))},"hashes":{{{hashes}}},'
        f'"requires-python":{requires},"size":{facts.size},"upload-time":"{_iso8601(file)}",'
        f'"yanked":{yanked_value},"core-metadata":{metadata},"gpg-sig":{_JSON_BOOL[file.signed]}}}'
    )


#: A quoted JSON string, escaped as json.dumps() escapes it.
_json_string = encode_basestring_ascii
_JSON_BOOL = {True: "true", False: "false"}


def _iso8601(file: IndexedFile) -> str:
    """The file's upload time, as PEP 700 writes it, in UTC."""
    # From the integer mtime, not file.upload_time (a datetime costs several
    # times more), and the date from a cache (files share days): 2.4 against
    # 4.1 us with strftime, and a page of many files calls this often.
    seconds, nanoseconds = divmod(file.facts.mtime_ns, 1_000_000_000)
    days, second = divmod(seconds, 86_400)
    # %-formatting: an f-string with the same format specs took 3.4 us.
    return "%s%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        _iso_date(days), second // 3600, second // 60 % 60, second % 60, nanoseconds // 1000
    )


@functools.lru_cache(maxsize=1024)
def _iso_date(days: int) -> str:
    return time.strftime("%Y-%m-%dT", time.gmtime(days * 86_400))


def _pypi_file(file: IndexedFile, files_url: str, digests: Mapping[str, str]) -> dict[str, Any]:
    return {
        "comment_text": "",
        "digests": {k: digests[k] for k in ("md5", "sha256", "blake2b_256") if k in digests},
        "downloads": -1,
        "filename": file.filename,
        "has_sig": file.signed,
        "md5_digest": digests.get("md5"),
        "packagetype": file.dist.packagetype,
        "python_version": file.dist.python_version,
        "requires_python": file.facts.requires_python,
        "size": file.size,
        "upload_time": file.upload_time.replace(tzinfo=None).isoformat(timespec="seconds"),
        "upload_time_iso_8601": _iso8601(file),
        "url": files_url + quote(file.relpath, safe="/"),
        "yanked": file.yanked is not None,
        "yanked_reason": file.yanked or None,
    }


def _pypi_info(
    project: Project,
    version: str,
    metadata: CoreMetadata | None,
    base_url: str,
    yanked: bool,
    release_files: tuple[IndexedFile, ...],
) -> dict[str, Any]:
    meta = metadata or CoreMetadata()
    root = base_url.rstrip("/")
    reasons = [f.yanked for f in release_files if f.yanked]
    return {
        "author": meta.author or "",
        "author_email": meta.author_email or "",
        "classifiers": list(meta.classifiers),
        "description": meta.description or "",
        "description_content_type": meta.description_content_type,
        "home_page": meta.home_page or "",
        "keywords": meta.keywords or "",
        "license": meta.license or "",
        "maintainer": meta.maintainer or "",
        "maintainer_email": meta.maintainer_email or "",
        "name": meta.name or project.display_name,
        "package_url": f"{root}/pypi/{project.name}/",
        "platform": ", ".join(meta.platform) or None,
        "project_url": f"{root}/pypi/{project.name}/",
        "project_urls": dict(meta.project_urls) or None,
        "provides_extra": list(meta.provides_extra) or None,
        "release_url": f"{root}/pypi/{project.name}/{normalize_version(version)}/",
        "requires_dist": list(meta.requires_dist) or None,
        "requires_python": meta.requires_python,
        "summary": meta.summary or "",
        "version": version,
        "yanked": yanked,
        "yanked_reason": reasons[0] if yanked and reasons else None,
    }
