"""The HTTP server's own ceiling: a minimal WSGI application serving the
pre-rendered static index and the files, run under granian exactly as our
server runs it (same workers, threads and backlog).

It does what nginx's configuration does and nothing more: no catalogue, no
access checks, no ETags, every answer read into memory at start.  Whatever
separates it from nginx is granian's WSGI interface on this machine; whatever
separates ours from it is the work ours does per request.

    BENCH_STATIC=DIR BENCH_PACKAGES=DIR python -m bench.static_app PORT
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["StaticIndex", "app", "serve"]

JSON_MEDIA = "application/vnd.pypi.simple.v1+json"
_TYPES = {"html": "text/html", "json": JSON_MEDIA}
_FILE = "application/octet-stream"


class StaticIndex:
    """A WSGI application over ``static`` (the benchmark corpus's pages and
    metadata files) and ``packages`` (its distributions), every one read into
    memory at once: no request touches the disk."""

    def __init__(self, static: Path, packages: Path) -> None:
        #: (URL path, "html" or "json", gzipped): the page's bytes.
        self.pages: dict[tuple[str, str, bool], bytes] = {}
        for page in (static / "simple").rglob("index.*"):
            url = "/" + page.parent.relative_to(static).as_posix() + "/"
            kind = page.name.split(".")[1]
            self.pages[url, kind, page.suffix == ".gz"] = page.read_bytes()
        files = [*static.joinpath("metadata").iterdir(), *packages.iterdir()]
        self.files = {f"/packages/{f.name}": f.read_bytes() for f in files if f.is_file()}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        headers = [("Content-Type", _FILE)]
        if path == "/health":
            body: bytes | None = b"ok\n"
        elif path.startswith("/simple/"):
            kind = "json" if JSON_MEDIA in environ.get("HTTP_ACCEPT", "") else "html"
            headers = [("Content-Type", _TYPES[kind]), ("Vary", "Accept, Accept-Encoding")]
            body = None
            if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
                body = self.pages.get((path, kind, True))
                if body is not None:
                    headers.append(("Content-Encoding", "gzip"))
            if body is None:
                body = self.pages.get((path, kind, False))
        else:
            body = self.files.get(path)
        if body is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]


#: Read once in the main process, for the forked workers to inherit.
_loaded: StaticIndex | None = None


def app() -> StaticIndex:
    """The factory granian's workers call."""
    return _loaded or StaticIndex(
        Path(os.environ["BENCH_STATIC"]), Path(os.environ["BENCH_PACKAGES"])
    )


def serve(port: int) -> None:
    """Read the index, then serve it as ours is served."""
    global _loaded
    _loaded = app()
    from granian import Granian
    from granian.constants import Interfaces

    from pypiserver.config import DEFAULT_THREADS

    Granian(
        "bench.static_app:app",
        address="127.0.0.1",
        port=port,
        interface=Interfaces.WSGI,
        # As pypiserver.serving runs ours by default.
        workers=min(os.cpu_count() or 1, 4),
        blocking_threads=DEFAULT_THREADS,
        factory=True,
        log_enabled=False,
        backlog=2048,
    ).serve()


if __name__ == "__main__":
    # Through the module granian's workers import, not __main__, whose
    # loaded index they would not see.
    importlib.import_module("bench.static_app").serve(int(sys.argv[1]))
