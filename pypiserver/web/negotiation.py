"""Choosing a representation from the ``Accept`` header (PEP 691)."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["HTML", "JSON_V1", "HTML_V1", "SIMPLE_TYPES", "choose", "FORMAT_ALIASES"]

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
HTML = "text/html"
#: What the simple API offers, in the order that breaks ties: a browser's or
#: curl's ``*/*`` gets HTML, a client naming the JSON type gets JSON.
SIMPLE_TYPES = (HTML, HTML_V1, JSON_V1)
#: Short names accepted by the ``?format=`` query parameter.
FORMAT_ALIASES = {"json": JSON_V1, "html": HTML}


# Installers send the same few headers over and over.
@lru_cache(maxsize=256)
def choose(accept: str | None, offers: tuple[str, ...] = SIMPLE_TYPES) -> str | None:
    """The offer the client prefers, or None when it accepts none of them.

    No header means the client takes anything, and gets the first offer.
    """
    if not accept or not accept.strip():
        return offers[0]
    # PEP 691: "latest" names whichever version the server speaks newest.
    accept = accept.replace("vnd.pypi.simple.latest+", "vnd.pypi.simple.v1+")
    best: tuple[float, int, int] | None = None
    chosen = None
    for rank, offer in enumerate(offers):
        quality, specificity = _quality(accept, offer)
        if quality <= 0:
            continue
        key = (quality, specificity, -rank)
        if best is None or key > best:
            best, chosen = key, offer
    return chosen


def _quality(accept: str, offer: str) -> tuple[float, int]:
    """The q-value the header gives ``offer``, from its most specific match."""
    offer_type, _, offer_subtype = offer.partition("/")
    found: tuple[float, int] = (0.0, -1)
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media_type, _, media_subtype = media.lower().partition("/")
        if media == "*/*" or media == "*":
            specificity = 0
        elif media_type == offer_type and media_subtype == "*":
            specificity = 1
        elif media_type == offer_type and media_subtype == offer_subtype:
            specificity = 2
        else:
            continue
        if specificity > found[1]:
            found = (_q(params), specificity)
    return found[0], found[1]


def _q(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0
