"""The PyPI JSON API (``/pypi/<project>/json``), the older ``/<project>/json``,
and yanking over HTTP."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import bottle

from .. import render
from ..index import IndexedFile, NotFound, Project
from ..metadata import CoreMetadata, parse_metadata
from .responses import Page, send_page
from .transfers import read_body

if TYPE_CHECKING:
    from .app import Context

__all__ = ["install"]


def install(app: bottle.Bottle, ctx: "Context") -> None:
    @app.get("/pypi/<name>/json", action="list")
    @app.get("/<name>/json", action="list")
    def project_json(name: str) -> bytes:
        project = _project(ctx, name)
        return _document(ctx, project, project.latest_version)

    @app.get("/pypi/<name>/<version>/json", action="list")
    def release_json(name: str, version: str) -> bytes:
        project = _project(ctx, name)
        files = project.release(version)
        if not files:
            raise _json_error(404, f"No release {version} of {project.name}")
        return _document(ctx, project, files[0].dist.version)

    @app.post("/pypi/<name>/<version>/yank", action="update")
    def yank(name: str, version: str) -> str:
        forms = read_body(ctx.transfers, lambda: bottle.request.forms)
        try:
            ctx.catalogue.yank(name, version, forms.get("filename", ""), forms.get("reason", ""))
        except NotFound as exc:
            raise _json_error(404, str(exc)) from None
        return "OK\n"

    @app.post("/pypi/<name>/<version>/unyank", action="update")
    def unyank(name: str, version: str) -> str:
        forms = read_body(ctx.transfers, lambda: bottle.request.forms)
        try:
            ctx.catalogue.unyank(name, version, forms.get("filename", ""))
        except NotFound as exc:
            raise _json_error(404, str(exc)) from None
        return "OK\n"


def _project(ctx: "Context", name: str) -> Project:
    project = ctx.catalogue.project(name)
    if project is None:
        raise _json_error(404, f"No project {name} in this index")
    return project


def _document(ctx: "Context", project: Project, version: str) -> bytes:
    base = ctx.base_url()

    def build() -> Page:
        metadata = _release_metadata(ctx, project.release(version))
        digests = ctx.catalogue.all_digests(project.files)
        return Page(render.pypi_json(project, version, metadata, base, digests), "application/json")

    page = ctx.pages.get(("pypi", project.name, version, base), project.revision, build)
    return send_page(page, max_age=ctx.config.index_max_age)


def _release_metadata(ctx: "Context", files: tuple[IndexedFile, ...]) -> CoreMetadata | None:
    # A wheel's metadata is the most complete; an sdist's PKG-INFO may be older.
    for file in sorted(files, key=lambda f: f.dist.kind != "wheel"):
        raw = ctx.catalogue.metadata(file)
        if raw is not None:
            return parse_metadata(raw)
    return None


def _json_error(status: int, message: str) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(json.dumps({"message": message}), status=status)
    response.content_type = "application/json"
    return response
