"""Shared pieces of HTTP answers: cached pages with ETags, conditional
requests, compression, redirects and the externally visible base URL."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from typing import Callable, Hashable

import bottle

from .compression import gunzip, gzip

#: Smaller bodies are sent as they are: gzip would save little or nothing.
_COMPRESS_MIN = 512
#: Larger pages are few, and decompressing one per request would cost more
#: than keeping it in both forms.
_KEEP_BOTH_FROM = 64 * 1024
#: hashlib releases the interpreter lock for 2,048 bytes or more.
_HASH_PIECE = 2047

__all__ = ["Page", "PageCache", "base_url", "page_answer", "redirect", "send_page", "plain_error"]


class Page:
    """A rendered document, with what conditional requests need.

    A page worth compressing is kept gzipped only: installers ask for gzip,
    and the cache of 10,000 projects' pages then takes a third of the
    memory.  Clients that do not accept gzip get it decompressed, except for
    large pages (the project list), which are kept in both forms.
    """

    __slots__ = ("content_type", "etag", "_body", "_gzipped")

    def __init__(self, body: bytes, content_type: str) -> None:
        self.content_type = content_type
        # A content hash, so every worker process gives the same page the
        # same ETag and a revalidation never depends on which one answers.
        # The media type is part of it: one body served as text/html and as
        # PEP 691 HTML is two representations, which caches must not mix.
        self.etag = f'"{_digest(content_type, body)}"'
        self._gzipped = None
        if len(body) >= _COMPRESS_MIN:
            self._gzipped = gzip(body)
        self._body = body if self._gzipped is None or len(body) >= _KEEP_BOTH_FROM else None

    @classmethod
    def restored(
        cls, content_type: str, etag: str, gzipped: bytes | None, body: bytes | None
    ) -> Page:
        """A page as :mod:`.pagestore` kept it: gzipped, or (too small to be
        worth it) not.  A large one is then decompressed for each client
        that does not accept gzip, which installers all do."""
        page = cls.__new__(cls)
        page.content_type, page.etag, page._gzipped, page._body = content_type, etag, gzipped, body
        return page

    @property
    def body(self) -> bytes:
        if self._body is not None:
            return self._body
        return gunzip(self._gzipped)  # type: ignore[arg-type]

    @property
    def gzipped(self) -> bytes | None:
        """The gzip-encoded body; None for a page too small to be worth it."""
        return self._gzipped


def _digest(content_type: str, body: bytes) -> str:
    hasher = hashlib.blake2b(content_type.encode(), digest_size=12)
    # Fed in pieces under 2 KB, which hashlib hashes without releasing the
    # interpreter lock: see .compression for why a page's first request
    # must not let go of it.
    view = memoryview(body)
    for start in range(0, len(view), _HASH_PIECE):
        hasher.update(view[start : start + _HASH_PIECE])
    return hasher.hexdigest()


class PageCache:
    """Rendered pages keyed by what they show and that thing's revision.

    An entry is rebuilt only when the revision it was built from changes, so
    one project's upload never discards another project's page.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self._entries: OrderedDict[Hashable, tuple[int, Page]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def cached(self, key: Hashable, revision: int) -> Page | None:
        """The page stored for ``key`` if it was built at ``revision``."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] == revision else None

    def get(self, key: Hashable, revision: int, build: Callable[[], Page]) -> Page:
        page = self.cached(key, revision)
        return page if page is not None else self.put(key, revision, build())

    def put(self, key: Hashable, revision: int, page: Page) -> Page:
        """Keep ``page`` for ``key`` at ``revision``; returns it."""
        with self._lock:
            self._entries[key] = (revision, page)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return page


def send_page(page: Page, *, max_age: int, vary_accept: bool = False) -> bytes:
    """Answer with ``page`` through Bottle: see :func:`page_answer`."""
    request, response = bottle.request, bottle.response
    status, headers, body = page_answer(
        page,
        request.environ,
        max_age=max_age,
        vary_accept=vary_accept,
    )
    response.status = status
    for name, value in headers:
        response.set_header(name, value)
    return body


def page_answer(
    page: Page, environ: dict, *, max_age: int, vary_accept: bool = False
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body answering ``page`` to the request in
    ``environ``: a 304 when the client has it, gzip when welcome."""
    compress = page.gzipped is not None and _accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING"))
    # The gzipped bytes are another representation, with their own tag.
    etag = page.etag[:-1] + '-gz"' if compress else page.etag
    headers = [
        ("ETag", etag),
        ("Cache-Control", f"max-age={max_age}, public"),
        ("Vary", "Accept, Accept-Encoding" if vary_accept else "Accept-Encoding"),
    ]
    if _matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
        return 304, headers, b""
    body = page.gzipped if compress else page.body
    headers.append(("Content-Type", page.content_type))
    if compress:
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(len(body))))
    if environ.get("REQUEST_METHOD") == "HEAD":
        body = b""
    return 200, headers, body


def base_url(explicit: str | None) -> str:
    """The URL clients reach this application at, without a trailing slash.

    ``--server-base-url`` wins; otherwise the proxy headers ``X-Forwarded-Proto``,
    ``X-Forwarded-Host`` (which may carry a path, as in the nginx recipe) and
    ``X-Forwarded-Prefix``, then the request itself.
    """
    if explicit:
        return explicit.rstrip("/")
    environ = bottle.request.environ
    scheme = _first(environ.get("HTTP_X_FORWARDED_PROTO")) or environ.get("wsgi.url_scheme", "http")
    host = _first(environ.get("HTTP_X_FORWARDED_HOST")) or environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "localhost")
        port = environ.get("SERVER_PORT", "")
        if port and port != {"http": "80", "https": "443"}.get(scheme):
            host = f"{host}:{port}"
    prefix = _first(environ.get("HTTP_X_FORWARDED_PREFIX")) or ""
    script = environ.get("SCRIPT_NAME", "")
    return f"{scheme}://{host.rstrip('/')}{_slashed(prefix)}{_slashed(script)}".rstrip("/")


def redirect(location: str, status: int = 301) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(status=status)
    response.set_header("Location", location)
    return response


def plain_error(status: int, message: str) -> bottle.HTTPResponse:
    """An error whose body is the message alone, for clients that print it."""
    response = bottle.HTTPResponse(body=message + "\n", status=status)
    response.content_type = "text/plain; charset=utf-8"
    return response


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in candidates


# Clients send the same few headers over and over.
@functools.lru_cache(maxsize=256)
def _accepts_gzip(header: str | None) -> bool:
    if not header:
        return False
    for item in header.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        if coding.lower() in ("gzip", "*"):
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
    return False


def _first(value: str | None) -> str | None:
    # A chain of proxies appends values; the first is what the client used.
    return value.split(",")[0].strip() if value else None


def _slashed(path: str) -> str:
    path = path.strip("/")
    return f"/{path}" if path else ""
