"""The simple repository API: ``/simple/`` and ``/simple/<project>/``
(PEP 503 HTML and PEP 691 JSON), and the short ``/<project>/`` forms."""

from __future__ import annotations

from typing import TYPE_CHECKING

import bottle

from .. import render
from ..distributions import normalize_name
from ..index import Project
from . import negotiation
from .responses import Page, plain_error, redirect, send_page

if TYPE_CHECKING:
    from .app import Context

__all__ = ["install"]


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
        catalogue = ctx.catalogue
        projects = catalogue.projects()
        page = ctx.pages.get(
            ("list", media), catalogue.generation, lambda: _page(media, projects, None)
        )
        return send_page(page, max_age=max_age, vary_accept=True)

    @app.get("/simple/<name>", action="list")
    def project_slash(name: str) -> bottle.HTTPResponse:
        return redirect(f"{ctx.base_url()}/simple/{normalize_name(name)}/{_query()}")

    @app.get("/simple/<name>/", action="list")
    def project_page(name: str) -> bytes | bottle.HTTPResponse:
        normalized = normalize_name(name)
        if name != normalized:
            return redirect(f"{ctx.base_url()}/simple/{normalized}/{_query()}")
        media = _negotiate()
        if media is None:
            return _not_acceptable()
        project = ctx.catalogue.project(normalized)
        if project is None:
            return _unknown(ctx, normalized)
        page = ctx.pages.get(
            ("project", normalized, media),
            project.revision,
            lambda: _page(media, project, ctx.config.hash_algo),
        )
        return send_page(page, max_age=max_age, vary_accept=True)

    # hatch reads <upload URL>/+simple/<project>/ to see what is published.
    @app.get("/+simple/<name>/", action="list")
    @app.get("/legacy/+simple/<name>/", action="list")
    def plus_simple(name: str) -> bottle.HTTPResponse:
        return redirect(f"{ctx.base_url()}/simple/{normalize_name(name)}/", 302)


def install_short_forms(app: bottle.Bottle, ctx: "Context") -> None:
    """``/<project>/`` and ``/<project>``: registered last, so every other
    route is tried first."""

    @app.get("/<name>", action="list")
    @app.get("/<name>/", action="list")
    def short_form(name: str) -> bottle.HTTPResponse:
        return redirect(f"{ctx.base_url()}/simple/{normalize_name(name)}/")


def _negotiate() -> str | None:
    wanted = bottle.request.query.get("format")
    if wanted:
        media = negotiation.FORMAT_ALIASES.get(wanted, wanted)
        return media if media in negotiation.SIMPLE_TYPES else None
    return negotiation.choose(bottle.request.get_header("Accept"))


def _page(media: str, subject: Project | tuple[Project, ...], hash_algo: str | None) -> Page:
    is_list = not isinstance(subject, Project)
    if media == negotiation.JSON_V1:
        body = (
            render.project_list_json(subject)
            if is_list
            else render.project_page_json(subject, hash_algo)
        )
        return Page(body, media)
    body = render.project_list_html(subject) if is_list else render.project_page_html(subject, hash_algo)
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
