"""The simple repository API: ``/simple/`` and ``/simple/<project>/``
(PEP 503 HTML and PEP 691 JSON), and the short ``/<project>/`` forms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import bottle

from .. import render
from ..distributions import normalize_name
from ..index import Catalogue, Project
from . import negotiation
from .responses import Page, plain_error, redirect, send_page

if TYPE_CHECKING:
    from .app import Context
    from .pagestore import StoredPages

__all__ = ["install", "install_short_forms", "list_page", "pages_to_store", "project_page"]


def install(app: bottle.Bottle, ctx: "Context") -> None:
    max_age = ctx.config.index_max_age

    @app.get("/simple", action="list")
    def simple_slash() -> bottle.HTTPResponse:
        return redirect(f"{ctx.base_url()}/simple/{_query()}")

    @app.get("/simple/", action="list")
    def project_list() -> bytes | bottle.HTTPResponse:
        media = _negotiate()
        if media is None:
            return _not_acceptable()
        return send_page(list_page(ctx, media), max_age=max_age, vary_accept=True)

    @app.get("/simple/<name:project>", action="list")
    def project_slash(name: str) -> bottle.HTTPResponse:
        return redirect(f"{ctx.base_url()}/simple/{normalize_name(name)}/{_query()}")

    @app.get("/simple/<name:project>/", action="list")
    def project_page(name: str) -> bytes | bottle.HTTPResponse:
        normalized = normalize_name(name)
        if name != normalized:
            return redirect(f"{ctx.base_url()}/simple/{normalized}/{_query()}")
        return _project_answer(ctx, normalized, render.PACKAGES_PREFIX)

    # hatch reads <upload URL>/+simple/<project>/ (devpi's layout) to skip
    # files already published, and does not follow redirects: answer in place.
    @app.get("/+simple/<name:project>/", action="list")
    def plus_simple(name: str) -> bytes | bottle.HTTPResponse:
        return _project_answer(ctx, normalize_name(name), render.PACKAGES_PREFIX)

    @app.get("/legacy/+simple/<name:project>/", action="list")
    def legacy_plus_simple(name: str) -> bytes | bottle.HTTPResponse:
        return _project_answer(ctx, normalize_name(name), "../" + render.PACKAGES_PREFIX)


def install_short_forms(app: bottle.Bottle, ctx: "Context") -> None:
    """``/<project>/`` and ``/<project>``: registered last, so every other
    route is tried first."""

    @app.get("/<name:project>", action="list")
    @app.get("/<name:project>/", action="list")
    def short_form(name: str) -> bottle.HTTPResponse:
        return redirect(f"{ctx.base_url()}/simple/{normalize_name(name)}/")


def list_page(ctx: "Context", media: str) -> Page:
    """The project list in ``media``, rendered once per catalogue change."""
    catalogue = ctx.catalogue
    catalogue.sync()
    # The generation before the names: a change between the two then only
    # makes the page rebuilt once more, never kept stale.
    generation = catalogue.generation
    names = catalogue.names()
    return ctx.pages.get(("list", media), generation, lambda: _page(media, names, None))


def project_page(
    ctx: "Context", name: str, media: str, prefix: str = render.PACKAGES_PREFIX
) -> Page | None:
    """The page of the project normalised as ``name`` in ``media``, linking
    to files through ``prefix``; None for a project not in the index."""
    key = ("project", name, media, prefix)
    revision = ctx.catalogue.revision(name)
    page = None if revision is None else ctx.pages.cached(key, revision)
    if page is not None:
        return page  # the common case: nothing assembled, nothing rendered
    if ctx.stored_pages is not None and prefix == render.PACKAGES_PREFIX:
        page = _stored_page(ctx, ctx.stored_pages, key, name, media)
        if page is not None:
            return page  # the first request after a restart, for an unchanged project
    project = ctx.catalogue.project(name)
    if project is None:
        return None
    return ctx.pages.get(
        key, project.revision, lambda: _page(media, project, ctx.config.hash_algo, prefix)
    )


def pages_to_store(
    catalogue: Catalogue, hash_algo: str | None
) -> Iterator[tuple[str, bytes, dict[str, Page]]]:
    """Every project's name, the digest of its page inputs, and its pages
    in the media installers and browsers ask for: what the page store keeps
    (see :mod:`.pagestore`)."""
    for name, _ in catalogue.names():
        inputs = catalogue.page_inputs(name)
        project = catalogue.project(name)
        # Both of one revision: a change applied between the two (another
        # process's, from the journal) would pair these pages with the
        # digest of other inputs.
        if inputs is not None and project is not None and project.revision == inputs[0]:
            yield name, inputs[1], {media: _page(media, project, hash_algo) for media in _STORED_MEDIA}


#: What the page store keeps of each project.
_STORED_MEDIA = (negotiation.JSON_V1, negotiation.HTML)


def _stored_page(
    ctx: Context, stored: StoredPages, key: tuple, name: str, media: str
) -> Page | None:
    if media not in _STORED_MEDIA:
        return None
    inputs = ctx.catalogue.page_inputs(name)
    if inputs is None:
        return None
    revision, digest = inputs
    page = stored.page(name, media, digest)
    return None if page is None else ctx.pages.put(key, revision, page)


def _project_answer(ctx: "Context", name: str, prefix: str) -> bytes | bottle.HTTPResponse:
    media = _negotiate()
    if media is None:
        return _not_acceptable()
    page = project_page(ctx, name, media, prefix)
    if page is None:
        return _unknown(ctx, name)
    return send_page(page, max_age=ctx.config.index_max_age, vary_accept=True)


def _negotiate() -> str | None:
    wanted = bottle.request.query.get("format")
    if wanted:
        media = negotiation.FORMAT_ALIASES.get(wanted, wanted)
        return media if media in negotiation.SIMPLE_TYPES else None
    return negotiation.choose(bottle.request.get_header("Accept"))


def _page(
    media: str,
    subject: Project | tuple[tuple[str, str], ...],
    hash_algo: str | None,
    prefix: str = render.PACKAGES_PREFIX,
) -> Page:
    is_list = not isinstance(subject, Project)
    if media == negotiation.JSON_V1:
        body = (
            render.project_list_json(subject)
            if is_list
            else render.project_page_json(subject, hash_algo, prefix)
        )
        return Page(body, media)
    body = (
        render.project_list_html(subject)
        if is_list
        else render.project_page_html(subject, hash_algo, prefix)
    )
    content_type = "text/html; charset=utf-8" if media == negotiation.HTML else media
    return Page(body, content_type)


def _unknown(ctx: "Context", name: str) -> bottle.HTTPResponse:
    if ctx.config.disable_fallback:
        return plain_error(404, f"Project {name} is not in this index.")
    return redirect(f"{ctx.config.fallback_url.rstrip('/')}/{name}/", 303)


def _not_acceptable() -> bottle.HTTPResponse:
    response = plain_error(
        406, "None of the offered types is acceptable: " + ", ".join(negotiation.SIMPLE_TYPES)
    )
    response.set_header("Vary", "Accept")
    return response


def _query() -> str:
    query = bottle.request.query_string
    return f"?{query}" if query else ""
