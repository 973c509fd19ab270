"""The HTTP layer: Bottle routes over the catalogue."""

from .app import Context, create_app

__all__ = ["Context", "create_app"]
