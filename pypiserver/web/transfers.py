"""Places for the transfers whose pace a client sets: a file over
:data:`~pypiserver.web.files.SMALL_FILE` being sent, a request body being
read.  Each holds one of the server's threads for as long as its client
takes; under granian and gunicorn, which have no timeout for either, for
ever if the client stops.  So a worker process runs at most
``Config.transfer_places`` of them at once and answers a further one 503
(after a wait, for a signed-in request's body: see :func:`read_body`),
which leaves threads for pages and small files whatever clients do.
(gunicorn drains the unread body of a refused request first, for up to
5 s, in the thread that answered it.)"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import bottle

__all__ = ["TransferPlaces", "read_body"]

log = logging.getLogger(__name__)

#: Seconds a refused client is asked to wait: long enough for a short
#: transfer to end, short enough for pip's retries to find a place.
RETRY_AFTER = "5"
_LOG_INTERVAL = 60.0
#: The environ key ``AccessPlugin`` sets on a request whose credentials it
#: checked and accepted.
SIGNED_IN = "pypiserver.signed_in"
#: Seconds a signed-in request waits for a place to read its body in.
SIGNED_IN_WAIT = 10.0

Answer = tuple[int, list[tuple[str, str]], list[bytes]]
T = TypeVar("T")


class TransferPlaces:
    """A worker process's places for transfers paced by their clients."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._places = threading.Semaphore(limit)
        # Once a minute at most: a flood of requests could log each time.
        self._warning, self._notice = _Throttle(_LOG_INTERVAL), _Throttle(_LOG_INTERVAL)

    def take(self, what: str, wait: float = 0.0) -> bool:
        """A place for ``what`` ("a download"), if one is free now or within
        ``wait`` seconds."""
        if self._places.acquire(blocking=False):
            return True
        if wait > 0:
            if self._notice.due():
                log.warning(
                    "%s waits for a place: all %d places for files over 1 MiB and"
                    " request bodies are taken; more --threads give more places",
                    what,
                    self.limit,
                )
            if self._places.acquire(timeout=wait):
                return True
        if self._warning.due():
            log.warning(
                "refusing %s: all %d places for files over 1 MiB and request bodies"
                " are taken (clients slow to read or send them?); more --threads give"
                " more places",
                what,
                self.limit,
            )
        return False

    def give_back(self) -> None:
        self._places.release()

    def refusal(self) -> Answer:
        """The answer to a transfer refused for want of a place."""
        message = (
            f"This server process is already busy with {self.limit} transfers paced by"
            " their clients (files over 1 MiB sent, request bodies read), as many as"
            f" it takes at once. Retry in {RETRY_AFTER} seconds.\n"
        ).encode()
        return 503, [
            ("Retry-After", RETRY_AFTER),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(message))),
        ], [message]


class _Throttle:
    """Says yes at most once per ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self._interval, self._next = interval, 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._interval
        return True


def read_body(places: TransferPlaces, read: Callable[[], T]) -> T:
    """What ``read()`` returns, called in one of ``places``: it reads the
    request body, as fast as the client sends it.  The place is given back
    once the body is read, not when the request ends.  Raises a 503
    :class:`bottle.HTTPResponse` when no place is free.

    A request whose credentials were checked (see ``AccessPlugin``) waits
    up to :data:`SIGNED_IN_WAIT` seconds for a place, so that a burst of
    uploads from CI queues as it would for a thread (twine retries none);
    only those who may update can hold a thread waiting.  Any other is
    refused at once, so that clients without credentials cannot."""
    wait = SIGNED_IN_WAIT if bottle.request.environ.get(SIGNED_IN) else 0.0
    if not places.take("a request body", wait):
        status, headers, body = places.refusal()
        raise bottle.HTTPResponse(body, status, headers=headers)
    try:
        return read()
    finally:
        places.give_back()
