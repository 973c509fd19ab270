"""Running the application under an HTTP server.

``--server auto`` picks granian (multi-process, multi-threaded, written in
Rust) when it is installed, else waitress (pure Python, multi-threaded), else
a threaded wsgiref server: in every case one slow download never blocks other
clients.  Any server Bottle knows can be named instead.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import multiprocessing
import os
import sys
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bottle

from .config import Config

__all__ = ["SERVERS", "choose_server", "serve", "granian_app"]

log = logging.getLogger(__name__)

#: Our own names; anything else is passed to Bottle's adapters.
SERVERS = ("auto", "granian", "waitress", "wsgiref", "gunicorn")
_ARGV_VARIABLE = "PYPISERVER_ARGV"
_UNLIMITED = 1 << 50
#: Room for the multipart form's other fields around the file itself.
_FORM_OVERHEAD = 1 << 20
#: The application granian's forked workers inherit (see _serve_granian).
_forked_app: bottle.Bottle | None = None


def choose_server(name: str) -> str:
    if name != "auto":
        return name
    for candidate in ("granian", "waitress"):
        if importlib.util.find_spec(candidate) is not None:
            return candidate
    return "wsgiref"


def serve(config: Config, argv: list[str]) -> None:
    """Serve until interrupted. ``argv`` rebuilds the config in worker processes."""
    server = choose_server(config.server)
    log.info("serving %s on http://%s:%d/ with %s", ", ".join(map(str, config.roots)), config.host, config.port, server)
    if server == "granian":
        _serve_granian(config, argv)
        return
    app = _built(config)
    if server == "waitress":
        import waitress

        # waitress refuses bodies over 1 GiB by default; the application
        # applies --max-upload-size itself, with a clear message.
        limit = _UNLIMITED if config.max_upload_size is None else config.max_upload_size + _FORM_OVERHEAD
        waitress.serve(
            app,
            host=config.host,
            port=config.port,
            threads=config.thread_count,
            max_request_body_size=limit,
            _quiet=True,
        )
    elif server == "wsgiref":
        _serve_wsgiref(app, config)
    else:
        options: dict[str, Any] = {}
        if server == "gunicorn":
            options = {"workers": config.workers or 1, "threads": config.thread_count}
        bottle.run(app, server=server, host=config.host, port=config.port, quiet=config.verbosity < 2, **options)


def granian_app() -> bottle.Bottle:
    """The factory each granian worker process calls: the application its
    parent built before forking it, else (where workers are spawned, not
    forked) one built from the command-line arguments, exactly as asked."""
    if _forked_app is not None:
        return _forked_app
    from .cli import run_config

    return _built(run_config(json.loads(os.environ[_ARGV_VARIABLE])))


def _built(config: Config) -> bottle.Bottle:
    from .web import create_app

    app = create_app(config)
    # The catalogue lives as long as the process: set it aside from the
    # cyclic garbage collector, which would otherwise walk its hundreds of
    # thousands of objects in pauses of a tenth of a second under load.
    gc.freeze()
    return app


def _serve_granian(config: Config, argv: list[str]) -> None:
    from granian import Granian
    from granian.constants import Interfaces

    class Server(Granian):  # type: ignore[misc, valid-type]
        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            # A forked worker runs this inherited handler until it installs
            # its own, once it has the application and its sockets.  A
            # SIGTERM in that window would merely be noted in the worker's
            # copy of the server, and the worker would then serve on while
            # the main process waits for it forever: stop it here instead.
            if os.getpid() != self.pid:
                os._exit(0)
            super().signal_handler_interrupt(*args, **kwargs)

    os.environ[_ARGV_VARIABLE] = json.dumps(argv)
    if sys.platform == "linux" and multiprocessing.get_start_method(allow_none=True) is None:
        # Python 3.14 made forkserver Linux's default, which granian turns
        # into spawn: each worker would load the catalogue again, on the
        # same cores, and keep its own copy.  Forking is what earlier
        # Pythons did and what this server is built for (the catalogue
        # holds its lock across a fork: see index._hold_for_fork).  A start
        # method already chosen by whoever runs the server is kept.
        multiprocessing.set_start_method("fork")
    if multiprocessing.get_start_method() == "fork":  # as granian chooses
        # Built once, here, for the workers to inherit: not loaded by each
        # at once on the same cores.  This process then only watches the
        # directories, and the change journal tells the workers.  (Spawned
        # workers build their own; the state directory's lock makes the
        # first one read new files while the others wait for its results.)
        global _forked_app
        _forked_app = _built(config)
    workers = config.workers or min(os.cpu_count() or 1, 4)
    Server(
        "pypiserver.serving:granian_app",
        address=config.host,
        port=config.port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=config.thread_count,
        factory=True,
        log_enabled=config.verbosity > 0,
        backlog=2048,
        # A worker still alive this long after the SIGTERM that stops the
        # server is killed: one that got its own SIGTERM while starting,
        # before granian's handlers were in place, would otherwise keep the
        # server from stopping until docker or systemd kills it.
        workers_kill_timeout=_WORKERS_KILL_TIMEOUT,
    ).serve()


#: Seconds (granian wants an integer).
_WORKERS_KILL_TIMEOUT = 3


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)


def _serve_wsgiref(app: bottle.Bottle, config: Config) -> None:
    with make_server(config.host, config.port, app, _ThreadingWSGIServer, _QuietHandler) as server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            sys.stderr.write("stopped\n")
