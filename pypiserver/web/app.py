"""Builds the Bottle application: the catalogue, the access policy, and the
route modules, each of which only parses a request, asks the layer below and
answers."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import bottle

from ..accounts import AccessPolicy, Decision, parse_basic_authorization, policy_from_config
from ..config import Config
from ..distributions import NAME_PATTERN
from ..index import Catalogue
from ..state import StateStore, in_child
from ..storage import DirectoryStorage
from ..watcher import Watcher
from . import api, files, pages, pagestore, simple, upload
from .fastpath import FastReads
from .files import KeptFiles
from .pagestore import StoredPages
from .responses import PageCache, base_url, plain_error
from .transfers import SIGNED_IN, TransferPlaces

__all__ = ["Context", "IndexApp", "create_app", "state_dir"]

log = logging.getLogger("pypiserver")
http_log = logging.getLogger("pypiserver.http")


@dataclass
class Context:
    """What every route needs, built once per application."""

    config: Config
    catalogue: Catalogue
    policy: AccessPolicy
    pages: PageCache
    transfers: TransferPlaces
    kept_files: KeptFiles
    watcher: Watcher | None = None
    #: Gzipped project pages an earlier start kept (see :mod:`.pagestore`).
    stored_pages: StoredPages | None = None

    def base_url(self) -> str:
        return base_url(self.config.server_base_url)

    def close(self) -> None:
        """Stop watching the directories and close the state store."""
        if self.watcher is not None:
            self.watcher.stop()
        self.catalogue.state.close()


def create_app(config: Config) -> bottle.Bottle:
    storage = DirectoryStorage(config.roots)
    state = StateStore(state_dir(config))
    catalogue = Catalogue(
        storage, state, hash_algo=config.hash_algo, rescan_on_read=config.backend == "simple-dir"
    )
    watcher = None if config.backend == "simple-dir" else Watcher(catalogue)
    if watcher is not None:
        # Watching before the scan: a file copied in while the catalogue
        # loads is reported, and the change is applied once it has loaded.
        watcher.watch()
    try:
        catalogue.load()
        # Like the facts snapshot, saved in a fork before the watcher's
        # thread starts applying changes.
        stored_pages = _stored_pages(catalogue, config.hash_algo)
    except BaseException:
        if watcher is not None:
            watcher.stop()
        raise
    if watcher is not None:
        watcher.start()
    policy = policy_from_config(
        config.authenticate,
        str(config.password_file) if config.password_file else None,
        config.auther,
    )
    context = Context(
        config,
        catalogue,
        policy,
        PageCache(),
        TransferPlaces(config.transfer_places),
        KeptFiles(),
        watcher,
        stored_pages,
    )

    app = IndexApp(context)
    app.config["pypiserver.context"] = context
    app.install(AccessPlugin(policy))
    for routes in (pages, upload, simple, files, api):
        routes.install(app, context)
    simple.install_short_forms(app, context)
    app.add_hook("after_request", _log_request(config))
    for status in (400, 401, 403, 404, 405, 406, 409, 413, 500):
        app.error_handler[status] = _plain_error_page
    return app


def _stored_pages(catalogue: Catalogue, hash_algo: str | None) -> StoredPages | None:
    """The page store, saved again first when there is none to read (or
    only one of another edition), or this start saved the facts snapshot
    (so many files had changed)."""
    path = catalogue.state.directory / pagestore.FILENAME
    edition = pagestore.edition(hash_algo)
    stale = pagestore.is_stale(path, catalogue.state.snapshot_mtime_ns())
    stored = None if stale else StoredPages.open(path, edition)
    if stored is None:
        projects = simple.pages_to_store(catalogue, hash_algo)
        # In a child: 20,000 pages rendered would enlarge this process's
        # heap, which the workers inherit.
        in_child(lambda: pagestore.save(path, edition, projects), "the page store")
        stored = StoredPages.open(path, edition)
    return stored


class IndexApp(bottle.Bottle):
    """The Bottle application, with installers' hot reads answered before
    routing (see :mod:`.fastpath`)."""

    def __init__(self, context: Context) -> None:
        super().__init__()
        self.fast_reads = FastReads(context)
        # "<name:project>" in a route matches valid project names only: any
        # other path (a NUL, a line break, non-ASCII) is no project of any
        # index, and is answered 404 rather than redirected or passed on.
        self.router.add_filter("project", lambda _conf: (NAME_PATTERN, None, None))

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        answer = self.fast_reads(environ, start_response)
        return answer if answer is not None else self.wsgi(environ, start_response)


class AccessPlugin:
    """The one place permissions are checked.

    A route names the action it performs with ``action=`` in its route
    config: a string, or a function of the request for routes (``POST /``)
    whose action depends on what was posted.
    """

    name = "pypiserver-access"
    api = 2

    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy

    def apply(self, callback: Callable[..., Any], route: bottle.Route) -> Callable[..., Any]:
        action = route.config.get("action")
        if action is None:
            return callback

        def checked(*args: Any, **kwargs: Any) -> Any:
            wanted = action(bottle.request) if callable(action) else action
            denial = self.deny(wanted)
            if denial is not None:
                return denial
            return callback(*args, **kwargs)

        return checked

    def deny(self, action: str | None) -> bottle.HTTPResponse | None:
        if action is None:
            return None
        credentials = parse_basic_authorization(bottle.request.get_header("Authorization"))
        decision = self.policy.decide(action, credentials)
        if decision is Decision.ALLOW:
            if action in self.policy.protected:
                bottle.request.environ[SIGNED_IN] = True
            return None
        if decision is Decision.CHALLENGE:
            response = plain_error(401, f"Authentication required to {action}.")
            response.set_header("WWW-Authenticate", 'Basic realm="pypiserver"')
            return response
        return plain_error(403, f"Not allowed to {action}: wrong username or password.")


def state_dir(config: Config) -> Path:
    """The configured state directory, or one in the first root when it is
    writable, or else one under the user's cache directory."""
    if config.state_dir is not None:
        return config.state_dir
    inside = config.resolved_state_dir
    if os.access(config.roots[0], os.W_OK) or os.access(inside, os.W_OK):
        return inside
    key = hashlib.sha256("\0".join(map(str, config.roots)).encode()).hexdigest()[:16]
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache_home / "pypiserver" / key


def _plain_error_page(error: bottle.HTTPError) -> str:
    bottle.response.content_type = "text/plain; charset=utf-8"
    if error.status_code >= 500:
        log.error("%s", error.traceback or error.body)
        return "Internal server error.\n"
    return f"{error.body}\n" if isinstance(error.body, str) else f"{error.status_line}\n"


def _log_request(config: Config) -> Callable[[], None]:
    def log_request() -> None:
        if not http_log.isEnabledFor(logging.DEBUG):
            return
        try:
            http_log.debug(config.log_req_frmt, {"bottle.request": bottle.request, **bottle.request.environ})
            http_log.debug(config.log_res_frmt, {"status": bottle.response.status, **dict(bottle.response.headers)})
        except (KeyError, TypeError, ValueError) as exc:
            http_log.debug("bad request/response log format: %s", exc)

    return log_request
