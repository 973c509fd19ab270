"""Pages for people and probes: the welcome page and the health check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import bottle

from .. import __version__

if TYPE_CHECKING:
    from .app import Context

__all__ = ["install"]

_TEMPLATES = Path(__file__).parent / "templates"


def install(app: bottle.Bottle, ctx: "Context") -> None:
    source = (
        ctx.config.welcome_file.read_text(encoding="utf-8")
        if ctx.config.welcome_file
        else (_TEMPLATES / "welcome.html").read_text(encoding="utf-8")
    )
    template = bottle.SimpleTemplate(source)

    @app.get("/")
    def welcome() -> str:
        bottle.response.content_type = "text/html; charset=utf-8"
        url = ctx.base_url() + "/"
        # NUMPKGS and the upper-case names are what pypiserver's welcome
        # templates have always used.
        return template.render(
            URL=url, VERSION=__version__, NUMPKGS=len(ctx.catalogue), PACKAGES=url + "packages/",
            SIMPLE=url + "simple/",
        )

    @app.get(ctx.config.health_endpoint)
    def health() -> str:
        bottle.response.content_type = "text/plain; charset=utf-8"
        return "Ok"
