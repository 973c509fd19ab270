"""Downloads: ``/packages/`` and every file below it, with the PEP 658
``.metadata`` file beside each wheel and the ``.asc`` signatures."""

from __future__ import annotations

import email.utils
import functools
import mimetypes
import os
import re
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator

import bottle

from .. import render
from ..state import FileFacts
from ..storage import StoredFile
from .responses import Page, plain_error, redirect, send_page
from .transfers import TransferPlaces

if TYPE_CHECKING:
    from .app import Context

__all__ = [
    "KeptFiles",
    "download_headers",
    "file_answer",
    "install",
    "metadata_max_age",
    "metadata_page",
]

METADATA_SUFFIX = ".metadata"


#: Files up to this size are sent as one block, larger ones in chunks.
SMALL_FILE = 1 << 20
#: Looked up once: a getattr() that falls back to its default costs a
#: microsecond, on every download where there is no O_BINARY (all but Windows).
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)
#: A large file is read this much at a time.  granian queues up to 16 of
#: them for a client slow to read: with 64 KiB, 48 stalled downloads of a
#: large file took 51 MiB more in a worker (113 MiB with 256 KiB), and one
#: download still ran at 1.3-1.4 GB/s here (1.4-1.75 with 256 KiB).
_CHUNK = 1 << 16
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
#: Files up to this size are kept in memory once sent (see KeptFiles) ...
KEPT_FILE = 64 * 1024
#: ... up to this much in all, in each worker process.  At the benchmark's
#: 60,000 files a worker takes 135-140 MB without them; the target is 150.
KEPT_BYTES = 12 << 20


class KeptFiles:
    """The bytes of small files already sent, to send them again without
    reading them.

    Reading a file is four system calls (open, fstat, pread, close), and
    each lets the worker's other threads take the interpreter.  Under load
    those hand-offs, not the reads, set the pace: strace counted 28 futex
    calls per download against 4 per page.  Sending a 1 KB wheel of each of
    10,000 projects a second time, a server keeping them made 24,000-27,000
    req/s with p99 7-10 ms, one reading them 16,500-20,600 with p99 12-25
    (three runs each, see bench/README.md).

    An entry holds only while the catalogue's facts for the file are the
    very object it was kept with: a change the catalogue learns of (upload,
    overwrite, a file replaced by hand) gives the file new facts, and its
    next download reads it again.  The oldest entries go first.
    """

    def __init__(self, max_bytes: int = KEPT_BYTES, max_file: int = KEPT_FILE) -> None:
        self._entries: OrderedDict[str, tuple[FileFacts, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self._max_bytes, self._max_file = max_bytes, max_file

    def get(self, location: str, facts: FileFacts) -> bytes | None:
        entry = self._entries.get(location)
        return entry[1] if entry is not None and entry[0] is facts else None

    def keep(self, location: str, facts: FileFacts, data: bytes) -> None:
        """Keep ``data``, read from ``location`` as ``facts`` describe it."""
        if len(data) > min(self._max_file, self._max_bytes):
            return
        with self._lock:
            old = self._entries.pop(location, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._entries[location] = (facts, data)
            self._bytes += len(data)
            while self._bytes > self._max_bytes:
                self._bytes -= len(self._entries.popitem(last=False)[1][1])

    @property
    def size(self) -> int:
        """The bytes kept, in all."""
        return self._bytes


def download_headers(ctx: "Context") -> list[tuple[str, str]]:
    """The headers ``--cache-control`` adds to every download."""
    max_age = ctx.config.cache_control
    return [] if max_age is None else [("Cache-Control", f"public, max-age={max_age}")]


def install(app: bottle.Bottle, ctx: "Context") -> None:
    extra = download_headers(ctx)

    @app.get("/packages", action="list")
    def listing_slash() -> bottle.HTTPResponse:
        return redirect(f"{ctx.base_url()}/packages/")

    @app.get("/packages/", action="list")
    def listing() -> bytes:
        catalogue = ctx.catalogue
        catalogue.sync()  # then the generation, then the files: see simple.list_page
        page = ctx.pages.get(
            ("packages",),
            catalogue.generation,
            lambda: Page(
                render.files_listing_html(
                    (f for p in catalogue.projects() for f in p.files), ctx.config.hash_algo
                ),
                "text/html; charset=utf-8",
            ),
        )
        return send_page(page, max_age=ctx.config.index_max_age)

    @app.get("/packages/<relpath:path>", action="download")
    def download(relpath: str) -> bytes | bottle.HTTPResponse:
        catalogue = ctx.catalogue
        stored, facts = catalogue.stored_file(relpath) or (catalogue.signature(relpath), None)
        if stored is not None:
            try:
                status, headers, body = file_answer(
                    stored, facts, bottle.request.environ, extra, ctx.transfers, ctx.kept_files
                )
            except OSError:  # removed since the catalogue last looked
                return plain_error(404, f"No file {relpath} in this index.")
            return bottle.HTTPResponse(body, status, headers=headers)
        if relpath.endswith(METADATA_SUFFIX):
            page = metadata_page(ctx, relpath[: -len(METADATA_SUFFIX)])
            if page is None:
                return plain_error(404, f"No metadata file for {relpath} in this index.")
            return send_page(page, max_age=metadata_max_age(ctx))
        return plain_error(404, f"No file {relpath} in this index.")


def metadata_page(ctx: Context, relpath: str) -> Page | None:
    """The PEP 658 metadata file of the distribution at ``relpath``; None
    when there is no such distribution or it has no metadata."""
    catalogue = ctx.catalogue
    file = catalogue.file(relpath)
    if file is None or not file.has_metadata:
        return None
    key = ("metadata", relpath)
    page = ctx.pages.cached(key, file.facts.mtime_ns)
    if page is not None:
        return page  # without asking the state store for the bytes again
    raw = catalogue.metadata(file)
    if raw is None:
        return None
    return ctx.pages.get(key, file.facts.mtime_ns, lambda: Page(raw, "application/octet-stream"))


def metadata_max_age(ctx: Context) -> int:
    """``Cache-Control: max-age`` of metadata files: that of the files."""
    return ctx.config.cache_control or 0


def file_answer(
    stored: StoredFile,
    facts: FileFacts | None,
    environ: dict,
    extra_headers: list[tuple[str, str]],
    places: TransferPlaces,
    kept: KeptFiles,
) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
    """Status, headers and body sending ``stored`` to the request in
    ``environ``: conditional requests, one byte range, HEAD.  ``facts`` are
    the catalogue's for it, whose sha256 digest is the ETag (the same from
    every worker process and every host).  A small file is sent from
    ``kept`` when it is there, and kept once read.  A body over
    :data:`SMALL_FILE` needs one of ``places``, else the answer is 503.
    Raises OSError when the file cannot be opened."""
    data = None if facts is None else kept.get(stored.location, facts)
    if data is not None:
        return _answer(data, stored, facts, environ, extra_headers, places, kept)
    # A raw descriptor: fewer objects and system calls than open() for the
    # small files most downloads are.
    fd = os.open(stored.location, _OPEN_FLAGS)
    try:
        return _answer(fd, stored, facts, environ, extra_headers, places, kept)
    except BaseException:
        os.close(fd)
        raise


def _answer(
    source: int | bytes,
    stored: StoredFile,
    facts: FileFacts | None,
    environ: dict,
    extra_headers: list[tuple[str, str]],
    places: TransferPlaces,
    kept: KeptFiles,
) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
    """:func:`file_answer` for an open descriptor, which it closes or hands
    to the returned body, or for the file's kept bytes (``facts`` then
    describe them)."""
    if isinstance(source, bytes):
        size, mtime_ns = len(source), facts.mtime_ns  # type: ignore[union-attr]
    else:
        stat = os.fstat(source)
        size, mtime_ns = stat.st_size, stat.st_mtime_ns
    mtime = mtime_ns // 1_000_000_000
    headers = [
        ("Content-Type", _mimetype(stored.filename)),
        ("Accept-Ranges", "bytes"),
        ("Last-Modified", _http_date(mtime)),
        *extra_headers,
    ]
    etag = None
    # A digest read before the file last changed would be a wrong tag.
    if facts is not None and facts.size == size and facts.mtime_ns == mtime_ns:
        etag = f'"{facts.digests["sha256"]}"'
        headers.append(("ETag", etag))
    if _not_modified(environ, etag, mtime):
        _close(source)
        return 304, [h for h in headers if h[0] != "Content-Type"], []
    status, start, end = 200, 0, size
    wanted = _byte_range(environ.get("HTTP_RANGE"), size)
    if wanted == "unsatisfiable":
        _close(source)
        message = f"Range not satisfiable: the file has {size} bytes.\n".encode()
        return 416, [
            ("Content-Range", f"bytes */{size}"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(message))),
        ], [message]
    if wanted is not None:
        status, (start, end) = 206, wanted
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
    headers.append(("Content-Length", str(end - start)))
    if environ.get("REQUEST_METHOD") == "HEAD":
        _close(source)
        return status, headers, []
    if isinstance(source, bytes):
        return status, headers, [source[start:end]]
    if end - start <= SMALL_FILE:
        data = _read_exactly(source, start, end - start)
        os.close(source)
        # Only bytes whose tag was sent: those the catalogue's facts describe.
        if etag is not None and len(data) == size:
            kept.keep(stored.location, facts, data)  # type: ignore[arg-type]
        return status, headers, [data]
    if not places.take("a download"):
        os.close(source)
        return places.refusal()
    try:
        return status, headers, _Chunks(os.fdopen(source, "rb"), start, end, places.give_back)
    except BaseException:
        places.give_back()
        raise


def _close(source: int | bytes) -> None:
    if isinstance(source, int):
        os.close(source)


def _read_exactly(fd: int, offset: int, length: int) -> bytes:
    parts = []
    while length > 0:
        chunk = _pread(fd, length, offset)
        if not chunk:  # cut short since fstat: send what there is
            break
        parts.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _pread(fd: int, length: int, offset: int) -> bytes:
    if hasattr(os, "pread"):  # one system call instead of two
        return os.pread(fd, length, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, length)


class _Chunks:
    """A large file's bytes from ``start`` to ``end``, read as they are sent:
    memory stays flat whatever the file's size."""

    def __init__(self, handle: BinaryIO, start: int, end: int, done: Callable[[], None]) -> None:
        self._handle, self._start, self._end = handle, start, end
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        self._handle.seek(self._start)
        left = self._end - self._start
        while left > 0:
            chunk = self._handle.read(min(_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        """Called by the server once the body is sent or the client gone."""
        done, self._done = self._done, None
        self._handle.close()
        if done is not None:
            done()

    def __del__(self) -> None:
        # For a server that drops the body without closing it (PEP 3333 says
        # it must not), or a read error before Bottle has wrapped it: the
        # place would otherwise be lost for the life of the process.
        self.close()


def _mimetype(filename: str) -> str:
    head, _, suffix = filename.lower().rpartition(".")
    if suffix in _COMPRESSIONS:  # "tar.gz": the type is the archive's
        suffix = f"{head.rpartition('.')[2]}.{suffix}"
    return _mimetype_of_suffix(suffix)


_COMPRESSIONS = frozenset({"gz", "bz2", "xz", "z", "zst", "lz", "lzma"})


@functools.lru_cache(maxsize=64)
def _mimetype_of_suffix(suffix: str) -> str:
    # Never let a guessed encoding ("gzip" for .tar.gz) reach the headers: a
    # client would unpack the archive before checking its hash.
    if suffix == "asc":
        return "application/pgp-signature"
    return mimetypes.guess_type(f"file.{suffix}", strict=False)[0] or "application/octet-stream"


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@functools.lru_cache(maxsize=1024)
def _http_date(timestamp: int) -> str:
    """An IMF-fixdate (RFC 9110), as email.utils.formatdate(usegmt=True)
    writes it.  Cached by the second: the files of one upload share theirs,
    and a file downloaded often asks for the same one each time."""
    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year}"
        f" {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _not_modified(environ: dict, etag: str | None, mtime: int) -> bool:
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match:
        # When both are sent, the tag decides (RFC 9110, 13.2.2).
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or (etag is not None and etag in tags)
    since = environ.get("HTTP_IF_MODIFIED_SINCE")
    if since:
        parsed = email.utils.parsedate_tz(since.split(";")[0].strip())
        return parsed is not None and email.utils.mktime_tz(parsed) >= mtime
    return False


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end) of a single ``bytes=`` range; None to send the whole file
    (no range, a malformed one or several, which RFC 9110 lets a server
    ignore); "unsatisfiable" when it lies beyond the end."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(size - length, 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, end
