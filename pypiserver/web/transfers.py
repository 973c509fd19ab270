"""Places for the transfers whose pace a client sets: a file over
:data:`~pypiserver.web.files.SMALL_FILE` being sent, a request body being
read.  Each holds one of the server's threads for as long as its client
takes; under granian and gunicorn, which have no timeout for either, for
ever if the client stops.  So a worker process runs at most
``Config.transfer_places`` of them at once and answers a further one 503,
which leaves threads for pages and small files whatever clients do.
(gunicorn drains the unread body of a refused request first, for up to
5 s, in the thread that answered it.)"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import bottle

__all__ = ["TransferPlaces", "in_a_place"]

log = logging.getLogger(__name__)

#: Seconds a refused client is asked to wait: long enough for a short
#: transfer to end, short enough for pip's retries to find a place.
RETRY_AFTER = "5"
_WARNING_INTERVAL = 60.0

Answer = tuple[int, list[tuple[str, str]], list[bytes]]
T = TypeVar("T")


class TransferPlaces:
    """A worker process's places for transfers paced by their clients."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._places = threading.Semaphore(limit)
        self._next_warning = 0.0

    def take(self, what: str) -> bool:
        """A place for ``what`` ("a download"), if one is free now; never
        waits."""
        if self._places.acquire(blocking=False):
            return True
        # Once a minute at most: stalled clients can make this every request.
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + _WARNING_INTERVAL
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


Route = Callable[..., T]


def in_a_place(places: TransferPlaces) -> Callable[[Route[T]], Route[T | bottle.HTTPResponse]]:
    """A decorator for routes that read the request body: each request runs
    in a place of ``places``, or is refused."""

    def decorate(route: Route[T]) -> Route[T | bottle.HTTPResponse]:
        @functools.wraps(route)
        def placed(*args: object, **kwargs: object) -> T | bottle.HTTPResponse:
            if not places.take("a request body"):
                status, headers, body = places.refusal()
                return bottle.HTTPResponse(body, status, headers=headers)
            try:
                return route(*args, **kwargs)
            finally:
                places.give_back()

        return placed

    return decorate
