"""Project pages kept between starts, each with what it was made from.

After a restart every worker process would render, hash and gzip each
project page again on its first request: at 10,000 projects, nearly half the
requests of a first pass over all pages, each costing ten times a cached one.
This store keeps every project's HTML and PEP 691 JSON page, with its ETag
and gzipped body, in one file of the state directory, so a page whose
project is as it was when the store was saved is answered without rendering:
40-50 us in process, against 145-280 us rendered and gzipped.  Side by side
at 10,000 projects (5 rounds after a warm start), the median first pass
went from 10,600 to 18,600 req/s (HTML) and from 10,600 to 16,600 (JSON)
against a store of gzipped bodies alone, which spared only the gzip.

A project's pages are a function of its files (where each is, its size and
modification time, which the catalogue trusts to identify what reading it
taught, as it does at every start), their signatures and yanks: see
:meth:`Catalogue.page_inputs`, whose digest of those is kept with the pages
and compared on each first request.  Everything else a page depends on, the
settings and the code that renders it, is the store's *edition*: a store of
another edition is not used, and is saved again.

The store is written, in a child process, whenever the facts snapshot is
(the first start, or one that found many files changed), when it is
missing, unreadable or of another edition: 3-5 s at 10,000 projects on a
slow 2-core machine.  The file carries a CRC of its contents, so a damaged
one is ignored and saved again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import marshal
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from .. import __version__
from .responses import Page

__all__ = ["FILENAME", "StoredPages", "code_digest", "edition", "is_stale", "save"]

log = logging.getLogger(__name__)

FILENAME = "pages.store"
#: The file: this line, the CRC-32 of the rest, then the marshalled
#: (edition, projects by name).  Bump the number when the layout changes.
_MAGIC = b"pypiserver page store 3\n"
_CRC = struct.Struct("<I")

#: A project as kept: the digest of its page inputs, then for each page the
#: media type asked for, Content-Type, ETag, and the gzipped body or (for a
#: page too small to compress) the body.  One flat tuple: with a tuple per
#: page, reading the store of 10,000 projects took 58 ms rather than 50.
_Project = tuple
_PAGE_FIELDS = 5


class StoredPages:
    """The pages of one saved store, by project.

    Read whole by the process that loads the catalogue, before it forks the
    workers, which inherit the bodies: a page taken from here is that very
    object, not a copy.  So a worker that has served every page holds as
    much as when it rendered each one itself.
    """

    def __init__(self, projects: dict[str, _Project]) -> None:
        self._projects = projects

    @classmethod
    def open(cls, path: Path, wanted_edition: str) -> StoredPages | None:
        """The store saved at ``path``; None if there is none, it is not one
        this version wrote whole, or it is of another edition."""
        started = time.monotonic()
        try:
            saved_edition, projects = _read(path)
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError, TypeError, struct.error) as exc:
            log.warning("ignoring the page store: %s", exc)
            return None
        if saved_edition != wanted_edition:
            log.info("the page store was saved by other code or settings: not used")
            return None
        stored = cls(projects)
        log.info("page store of %d pages read in %.2f s", len(stored), time.monotonic() - started)
        return stored

    def __len__(self) -> int:
        return sum(len(kept) // _PAGE_FIELDS for kept in self._projects.values())

    def page(self, name: str, media: str, inputs: bytes) -> Page | None:
        """The stored page of project ``name`` in ``media``, if it was made
        from the inputs whose digest is ``inputs``."""
        project = self._projects.get(name)
        if project is None or project[0] != inputs:
            return None
        for at in range(1, len(project), _PAGE_FIELDS):
            if project[at] == media:
                return Page.restored(*project[at + 1 : at + _PAGE_FIELDS])
        return None


def edition(hash_algo: str | None) -> str:
    """What pages rendered now depend on beyond the catalogue: the hash
    shown in links, and this very code (any change to a module of the
    package, even unreleased, makes the store saved again)."""
    return f"{hash_algo} {code_digest(Path(__file__).resolve().parents[1])}"


@functools.cache
def code_digest(package: Path) -> str:
    """A digest of this version and of every module under ``package``."""
    hasher = hashlib.blake2b(__version__.encode(), digest_size=16)
    for source in sorted(package.rglob("*.py")):
        hasher.update(source.relative_to(package).as_posix().encode() + b"\0")
        hasher.update(source.read_bytes())
    return hasher.hexdigest()


def is_stale(path: Path, snapshot_mtime_ns: int) -> bool:
    """Whether the store at ``path`` is missing or older than the facts
    snapshot saved at ``snapshot_mtime_ns``: to be saved again."""
    try:
        return os.stat(path).st_mtime_ns < snapshot_mtime_ns
    except OSError:
        return True


def save(path: Path, edition: str, projects: Iterable[tuple[str, bytes, dict[str, Page]]]) -> None:
    """Replace the store at ``path`` with ``projects``: (name, digest of
    its page inputs, its pages by the media type asked for).  Atomic: a
    reader finds the old store or the new."""
    started = time.monotonic()
    kept: dict[str, _Project] = {
        name: (inputs, *(field for media, page in pages.items() for field in _kept(media, page)))
        for name, inputs, pages in projects
    }
    payload = marshal.dumps((edition, kept))
    fd, temp = tempfile.mkstemp(prefix=".pages-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_MAGIC + _CRC.pack(zlib.crc32(payload)))
            out.write(payload)
        os.chmod(temp, 0o644)  # as the other state files
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    log.info(
        "page store of %d pages saved in %.2f s", len(StoredPages(kept)), time.monotonic() - started
    )


def _kept(media: str, page: Page) -> tuple[str, str, str, bytes | None, bytes | None]:
    gzipped = page.gzipped
    return media, page.content_type, page.etag, gzipped, page.body if gzipped is None else None


def _read(path: Path) -> tuple[str, dict[str, _Project]]:
    data = path.read_bytes()  # whole: marshal.load() reads piece by piece, ten times slower
    if not data.startswith(_MAGIC):
        raise ValueError("not a page store of this version")
    (crc,) = _CRC.unpack_from(data, len(_MAGIC))
    payload = memoryview(data)[len(_MAGIC) + _CRC.size :]
    if zlib.crc32(payload) != crc:
        raise ValueError("damaged (its CRC does not match)")
    loaded = marshal.loads(payload)
    if not (isinstance(loaded, tuple) and len(loaded) == 2 and isinstance(loaded[1], dict)):
        raise TypeError("no pages in it")
    return loaded
