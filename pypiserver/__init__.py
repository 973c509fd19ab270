"""pypiserver: a private Python package index.

``app(**config)`` returns a WSGI application (a Bottle app) for any WSGI
server; ``paste_app_factory`` is the ``egg:pypiserver#main`` entry point for
paste deploy; the ``pypi-server`` command runs it with a production server.
"""

from __future__ import annotations

from typing import Any

import bottle

__version__ = "3.0.0.dev0"

__all__ = ["__version__", "app", "bottle", "default_config", "paste_app_factory"]


def app(**config: Any) -> bottle.Bottle:
    """A new WSGI application serving the given package directories.

    Keywords are pypiserver's: ``roots`` (or ``root``), ``password_file``
    (``passwords``), ``authenticate`` (``authenticated``), ``auther``,
    ``fallback_url``, ``disable_fallback`` (``redirect_to_fallback``),
    ``hash_algo``, ``cache_control``, ``welcome_file``, ``health_endpoint``,
    ``overwrite``, ``backend_arg``, ``server_base_url`` and the rest of
    :class:`pypiserver.config.Config`.
    """
    from .config import Config
    from .web import create_app

    return create_app(Config.from_kwargs(**config).checked())


def default_config(**overrides: Any) -> dict[str, Any]:
    """The default keyword configuration of :func:`app`, updated by ``overrides``."""
    from dataclasses import asdict

    from .config import Config

    values = asdict(Config())
    values.update(overrides)
    return values


def paste_app_factory(global_config: dict[str, Any], **local_conf: Any) -> bottle.Bottle:
    """The ``use = egg:pypiserver#main`` factory: ini values arrive as strings."""
    return app(**local_conf)
