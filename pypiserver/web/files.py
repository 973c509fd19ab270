"""Downloads: ``/packages/`` and every file below it, with the PEP 658
``.metadata`` file beside each wheel and the ``.asc`` signatures."""

from __future__ import annotations

import mimetypes
from typing import TYPE_CHECKING

import bottle

from .. import render
from ..storage import StoredFile
from .responses import Page, plain_error, redirect, send_page

if TYPE_CHECKING:
    from .app import Context

__all__ = ["install"]

METADATA_SUFFIX = ".metadata"


def install(app: bottle.Bottle, ctx: "Context") -> None:
    config = ctx.config
    download_headers = (
        {"Cache-Control": f"public, max-age={config.cache_control}"}
        if config.cache_control is not None
        else {}
    )

    @app.get("/packages", action="list")
    def listing_slash() -> bottle.HTTPResponse:
        return redirect(f"{ctx.base_url()}/packages/")

    @app.get("/packages/", action="list")
    def listing() -> bytes:
        catalogue = ctx.catalogue
        page = ctx.pages.get(
            ("packages",),
            catalogue.generation,
            lambda: Page(
                render.files_listing_html(
                    (f for p in catalogue.projects() for f in p.files), config.hash_algo
                ),
                "text/html; charset=utf-8",
            ),
        )
        return send_page(page, max_age=config.index_max_age)

    @app.get("/packages/<relpath:path>", action="download")
    def download(relpath: str) -> bytes | bottle.HTTPResponse:
        catalogue = ctx.catalogue
        file = catalogue.file(relpath)
        if file is not None:
            return _send_file(file.stored, download_headers)
        signature = catalogue.signature(relpath)
        if signature is not None:
            return _send_file(signature, download_headers)
        if relpath.endswith(METADATA_SUFFIX):
            return _metadata(ctx, relpath[: -len(METADATA_SUFFIX)])
        return plain_error(404, f"No file {relpath} in this index.")


def _metadata(ctx: "Context", relpath: str) -> bytes | bottle.HTTPResponse:
    catalogue = ctx.catalogue
    file = catalogue.file(relpath)
    raw = catalogue.metadata(file) if file is not None and file.has_metadata else None
    if file is None or raw is None:
        return plain_error(404, f"No metadata file for {relpath} in this index.")
    page = ctx.pages.get(
        ("metadata", relpath),
        file.facts.mtime_ns,
        lambda: Page(raw, "application/octet-stream"),
    )
    return send_page(page, max_age=ctx.config.cache_control or 0)


def _send_file(stored: StoredFile, headers: dict[str, str]) -> bottle.HTTPResponse:
    # Never let a guessed encoding ("gzip" for .tar.gz) reach the headers: a
    # client would unpack the archive before checking its hash.
    mimetype = mimetypes.guess_type(stored.filename, strict=False)[0] or "application/octet-stream"
    if stored.filename.endswith(".asc"):
        mimetype = "application/pgp-signature"
    response = bottle.static_file(
        stored.relpath, root=str(stored.root), mimetype=mimetype, headers=headers
    )
    if isinstance(response, bottle.HTTPResponse):
        response.set_header("Accept-Ranges", "bytes")
    return response
