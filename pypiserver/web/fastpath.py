"""The hot reads, answered before Bottle routes the request.

Installers fetch project pages, files and the files' PEP 658 metadata far
more often than anything else is asked for.  When those need no password,
this answers them from the page cache and the catalogue directly, with the
same functions the Bottle routes use, so the answer is identical and only
the routing cost is saved.  Anything else (a query string, a redirect to
make, an unknown project, debug request logging) is left to Bottle.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Iterable

import bottle

from ..distributions import normalize_name
from . import negotiation
from .files import (
    METADATA_SUFFIX,
    download_headers,
    file_answer,
    metadata_max_age,
    metadata_page,
)
from .responses import page_answer
from .simple import list_page, project_page

if TYPE_CHECKING:
    from .app import Context

__all__ = ["FastReads"]

http_log = logging.getLogger("pypiserver.http")

#: The status lines Bottle would send.
_STATUS_LINES = {code: f"{code} {bottle.HTTP_CODES[code]}" for code in (200, 206, 304, 416, 503)}
Answer = tuple[int, list[tuple[str, str]], Iterable[bytes]]


class FastReads:
    """A WSGI pre-router: ``__call__`` answers or returns None."""

    def __init__(self, ctx: "Context") -> None:
        self.ctx = ctx
        self.open_list = "list" not in ctx.policy.protected
        self.open_download = "download" not in ctx.policy.protected
        self.extra_headers = download_headers(ctx)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes] | None:
        if (
            environ.get("REQUEST_METHOD") not in ("GET", "HEAD")
            or environ.get("QUERY_STRING")
            or http_log.isEnabledFor(logging.DEBUG)
        ):
            return None
        path: str = environ.get("PATH_INFO", "")
        answer = None
        if path.startswith("/simple/") and self.open_list:
            answer = self._simple(path[len("/simple/"):], environ)
        elif path.startswith("/packages/") and self.open_download:
            answer = self._file(path[len("/packages/"):], environ)
        if answer is None:
            return None
        status, headers, body = answer
        start_response(_STATUS_LINES[status], headers)
        if environ["REQUEST_METHOD"] == "HEAD":
            getattr(body, "close", lambda: None)()
            return []
        return body

    def _simple(self, rest: str, environ: dict) -> Answer | None:
        media = negotiation.choose(environ.get("HTTP_ACCEPT"))
        if media is None:
            return None
        if rest == "":
            page = list_page(self.ctx, media)
        else:
            name = rest[:-1]
            if not rest.endswith("/") or normalize_name(name) != name:
                return None  # a redirect to the normalised URL: Bottle's
            page = project_page(self.ctx, name, media)
            if page is None:
                return None  # the fallback or a 404: Bottle's
        status, headers, body = page_answer(
            page, environ, max_age=self.ctx.config.index_max_age, vary_accept=True
        )
        return status, headers, [body]

    def _file(self, relpath: str, environ: dict) -> Answer | None:
        # Non-ASCII paths arrive as latin-1 in WSGI; Bottle decodes them.
        if not relpath.isascii():
            return None
        found = self.ctx.catalogue.stored_file(relpath)
        if found is None:
            if relpath.endswith(METADATA_SUFFIX):
                return self._metadata(relpath[: -len(METADATA_SUFFIX)], environ)
            return None  # signatures and 404s: Bottle's
        try:
            return file_answer(*found, environ, self.extra_headers, self.ctx.transfers, self.ctx.kept_files)
        except OSError:
            return None

    def _metadata(self, relpath: str, environ: dict) -> Answer | None:
        # pip and uv ask for one of these for every release they consider.
        page = metadata_page(self.ctx, relpath)
        if page is None:
            return None  # the 404: Bottle's
        status, headers, body = page_answer(page, environ, max_age=metadata_max_age(self.ctx))
        return status, headers, [body]
