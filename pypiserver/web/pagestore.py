"""Compressed project pages kept between starts, looked up by ETag.

A page's first request in each worker renders it, hashes it (its ETag) and
gzips it, and the gzip is a third of that time or more.  After a restart of
an index of 10,000 projects every worker renders every page once again, and
nearly half the requests of a first pass over all pages pay for that.  This
store keeps the gzipped bodies of every project page the last saved start
rendered, keyed by ETag, in one file of the state directory.  Side by side at
10,000 projects (6 rounds, after a warm start), the median first pass went
from 8,640 to 13,100 req/s for HTML and from 8,700 to 15,300 for JSON.

A page is always rendered from the current catalogue, and only its gzip is
taken from here, by the ETag of the bytes just rendered: a hash of the body
and its media type.  So a stored body is used for exactly the bytes it
compresses, or not at all, and the store never needs to be told what
changed.  Each body taken is also checked against the gzip trailer's CRC and
length, so that no other body, were its ETag the same, is ever sent for it;
and the file carries a CRC of its contents, so a damaged one is ignored
(and saved again).

The store is written, in a child process, whenever the facts snapshot is
(the first start, or one that found many files changed), and when it is
missing or unreadable: 3-5 s at 10,000 projects on a slow 2-core machine.
"""

from __future__ import annotations

import logging
import marshal
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from .responses import Page

__all__ = ["FILENAME", "StoredPages", "is_stale", "save"]

log = logging.getLogger(__name__)

FILENAME = "pages.store"
#: The file: this line, the CRC-32 of the rest, then the marshalled dict
#: of gzipped bodies by ETag.  Bump the number when the layout changes.
_MAGIC = b"pypiserver page store 2\n"
_CRC = struct.Struct("<I")
#: zlib.crc32 releases the interpreter lock above 5 KB: see .compression
#: for why a page's first request must not.
_CRC_PIECE = 5 * 1024


class StoredPages:
    """The gzipped bodies of one saved store, by ETag.

    Read whole by the process that loads the catalogue, before it forks the
    workers, which inherit the bodies: a page taken from here is that very
    object, not a copy.  So a worker that has served every page holds as
    much as when it compressed each one itself.
    """

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self._bodies = bodies

    @classmethod
    def open(cls, path: Path) -> StoredPages | None:
        """The store saved at ``path``; None if there is none or it is not
        one this version wrote whole."""
        started = time.monotonic()
        try:
            bodies = _read(path)
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError, TypeError, struct.error) as exc:
            log.warning("ignoring the page store: %s", exc)
            return None
        log.info("page store of %d pages read in %.2f s", len(bodies), time.monotonic() - started)
        return cls(bodies)

    def __len__(self) -> int:
        return len(self._bodies)

    def gzipped(self, etag: str, body: bytes) -> bytes | None:
        """The stored gzip of ``body``, whose ETag is ``etag``; None if the
        store has none."""
        gzipped = self._bodies.get(etag)
        if gzipped is None or not _trailer_matches(gzipped, body):
            return None
        return gzipped


def is_stale(path: Path, snapshot_mtime_ns: int) -> bool:
    """Whether the store at ``path`` is missing or older than the facts
    snapshot saved at ``snapshot_mtime_ns``: to be saved again."""
    try:
        return os.stat(path).st_mtime_ns < snapshot_mtime_ns
    except OSError:
        return True


def save(path: Path, pages: Iterable[Page]) -> None:
    """Replace the store at ``path`` with the gzipped bodies of ``pages``.
    Atomic: a reader finds the old store or the new."""
    started = time.monotonic()
    bodies = {page.etag: page.gzipped for page in pages if page.gzipped is not None}
    payload = marshal.dumps(bodies)
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
    log.info("page store of %d pages saved in %.2f s", len(bodies), time.monotonic() - started)


def _read(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()  # whole: marshal.load() reads piece by piece, ten times slower
    if not data.startswith(_MAGIC):
        raise ValueError("not a page store of this version")
    (crc,) = _CRC.unpack_from(data, len(_MAGIC))
    payload = memoryview(data)[len(_MAGIC) + _CRC.size :]
    if zlib.crc32(payload) != crc:
        raise ValueError("damaged (its CRC does not match)")
    bodies = marshal.loads(payload)
    if not isinstance(bodies, dict):
        raise TypeError("no pages in it")
    return bodies


def _trailer_matches(gzipped: bytes, body: bytes) -> bool:
    """Whether the gzip trailer (CRC-32, then length mod 2**32, both
    little-endian) describes ``body``."""
    crc, view = 0, memoryview(body)
    for start in range(0, len(view), _CRC_PIECE):
        crc = zlib.crc32(view[start : start + _CRC_PIECE], crc)
    return gzipped[-8:] == struct.pack("<II", crc, len(body) & 0xFFFFFFFF)
