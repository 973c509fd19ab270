"""The XML-RPC ``search`` call that ``pip search`` and older tools send.

A client POSTs a ``methodCall`` for ``search(spec, operator="and")`` where
``spec`` maps a field (``name``, ``summary``) to a string or a list of
strings, e.g. ``search({"name": ["foo"], "summary": ["foo"]}, "or")``.  The
answer is a list of ``{"name", "version", "summary", "_pypi_ordering"}``.

The request body is untrusted XML: it is first parsed with :mod:`defusedxml`
with DTDs, entities and external references forbidden, so entity bombs and
external-entity tricks fail before :mod:`xmlrpc.client` decodes the values.
"""

from __future__ import annotations

import re
import xmlrpc.client
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from xml.parsers.expat import ExpatError

import defusedxml
import defusedxml.ElementTree

__all__ = [
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_BODY_BYTES",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SEARCH_FIELDS",
    "SearchEntry",
    "XmlRpcError",
    "parse_call",
    "render_fault",
    "render_response",
    "respond",
    "search",
]

#: Larger bodies are refused unread; a search call is a few hundred bytes.
MAX_BODY_BYTES = 1024 * 1024

# Fault codes from the XML-RPC "specification for fault code interoperability".
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

#: The ``spec`` keys that are matched; other keys are ignored, as PyPI did.
SEARCH_FIELDS = ("name", "summary")

_OPERATORS = {"and": all, "or": any}


class XmlRpcError(ValueError):
    """An XML-RPC request that cannot be answered; ``fault_code`` says why."""

    def __init__(self, message: str, fault_code: int = PARSE_ERROR) -> None:
        super().__init__(message)
        self.fault_code = fault_code


@dataclass(frozen=True)
class SearchEntry:
    """One searchable release: what a search hit reports."""

    name: str
    version: str
    summary: Optional[str] = None


def _parse_safely(body: bytes) -> Any:
    """Parse with every dangerous XML feature forbidden; return the root."""
    try:
        return defusedxml.ElementTree.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException as exc:
        raise XmlRpcError(
            f"refused XML-RPC request: {type(exc).__name__} "
            "(DTDs, entities and external references are not allowed)",
            INVALID_REQUEST,
        ) from exc
    except defusedxml.ElementTree.ParseError as exc:
        raise XmlRpcError(f"malformed XML-RPC request: {exc}") from exc


def parse_call(body: bytes) -> Tuple[str, tuple]:
    """Return ``(method_name, params)`` of an XML-RPC ``methodCall`` body."""
    if len(body) > MAX_BODY_BYTES:
        raise XmlRpcError(
            f"XML-RPC request of {len(body)} bytes is over the "
            f"{MAX_BODY_BYTES}-byte limit",
            INVALID_REQUEST,
        )
    root = _parse_safely(body)
    if root.tag != "methodCall":
        raise XmlRpcError(
            f"expected an XML-RPC <methodCall>, got <{root.tag}>",
            INVALID_REQUEST,
        )
    if not (root.findtext("methodName") or "").strip():
        raise XmlRpcError(
            "XML-RPC request has no <methodName>", INVALID_REQUEST
        )
    try:
        params, method = xmlrpc.client.loads(body)
    # The unmarshaller reports bad values with whatever error its
    # conversion raised; all of them mean the same thing to the client.
    except (
        ExpatError,
        xmlrpc.client.Error,
        ValueError,
        TypeError,
        LookupError,
    ) as exc:
        raise XmlRpcError(f"malformed XML-RPC request: {exc!r}") from exc
    return method.strip(), params


def _terms(field: str, value: Any) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(
        isinstance(item, str) for item in value
    ):
        return list(value)
    raise XmlRpcError(
        f"search field {field!r} must be a string or a list of strings, "
        f"not {value!r}",
        INVALID_PARAMS,
    )


def _field_matches(field: str, text: Optional[str], terms: Sequence[str]) -> bool:
    fold = _fold_name if field == "name" else str.casefold
    haystack = fold(text or "")
    return any(fold(term) in haystack for term in terms)


def _fold_name(name: str) -> str:
    # Names compare as PEP 503 normalises them: "FOO_lib" finds "Foo-Lib".
    return re.sub(r"[-_.]+", "-", name).casefold()


def search(
    entries: Iterable[SearchEntry],
    spec: Mapping[str, Any],
    operator: str = "and",
) -> List[Dict[str, Any]]:
    """Entries whose fields contain the spec's terms, in the given order.

    Terms match as case-insensitive substrings; a field with several terms
    matches if any of them does.  ``operator`` combines the fields.  A spec
    with no known field finds nothing rather than the whole index.
    """
    if not isinstance(spec, Mapping):
        raise XmlRpcError(
            f"search spec must be a struct, not {spec!r}", INVALID_PARAMS
        )
    combine = _OPERATORS.get(operator.lower() if isinstance(operator, str) else "")
    if combine is None:
        raise XmlRpcError(
            f"search operator must be 'and' or 'or', not {operator!r}",
            INVALID_PARAMS,
        )
    wanted = {
        field: _terms(field, value)
        for field, value in spec.items()
        if field in SEARCH_FIELDS
    }
    if not wanted:
        return []
    return [
        {
            "name": entry.name,
            "version": entry.version,
            "summary": entry.summary or "",
            "_pypi_ordering": 0,
        }
        for entry in entries
        if combine(
            _field_matches(field, getattr(entry, field), terms)
            for field, terms in wanted.items()
        )
    ]


def render_response(value: Any) -> bytes:
    """An XML-RPC ``methodResponse`` carrying ``value``."""
    return xmlrpc.client.dumps((value,), methodresponse=True).encode("utf-8")


def render_fault(code: int, message: str) -> bytes:
    """An XML-RPC ``methodResponse`` carrying a fault."""
    fault = xmlrpc.client.Fault(code, message)
    return xmlrpc.client.dumps(fault, methodresponse=True).encode("utf-8")


def respond(body: bytes, entries: Iterable[SearchEntry]) -> bytes:
    """Answer one XML-RPC request body; errors become faults, not exceptions.

    XML-RPC reports errors inside a 200 response, so the web layer can send
    whatever this returns as ``text/xml``.
    """
    try:
        method, params = parse_call(body)
        if method != "search":
            raise XmlRpcError(
                f"unsupported XML-RPC method {method!r}; only 'search' is "
                "served",
                METHOD_NOT_FOUND,
            )
        if not 1 <= len(params) <= 2:
            raise XmlRpcError(
                "search takes (spec, operator='and'), got "
                f"{len(params)} parameters",
                INVALID_PARAMS,
            )
        return render_response(search(entries, *params))
    except XmlRpcError as exc:
        return render_fault(exc.fault_code, str(exc))
