"""Tests for pypiserver.xmlrpc: safe parsing, search, responses."""

from __future__ import annotations

import xmlrpc.client

import pytest

from pypiserver.xmlrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_BODY_BYTES,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SearchEntry,
    XmlRpcError,
    parse_call,
    render_fault,
    render_response,
    respond,
    search,
)


def call(method: str, *params) -> bytes:
    """A request body exactly as xmlrpc.client.ServerProxy would send it."""
    return xmlrpc.client.dumps(params, methodname=method).encode("utf-8")


def answer(body: bytes):
    """Decode a response as a client would; faults raise Fault."""
    (value,), _ = xmlrpc.client.loads(body)
    return value


# --- parse_call ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("search", ({"name": ["foo"], "summary": ["foo"]}, "or")),
        ("search", ({"name": "foo"},)),
        ("search", ()),
        ("list_packages", ()),
        ("search", ({"name": ["caf\u00e9 <&>"]}, "and")),
    ],
)
def test_parse_call_round_trip(method: str, params: tuple) -> None:
    assert parse_call(call(method, *params)) == (method, params)


def test_parse_call_latin1_declared_encoding() -> None:
    body = xmlrpc.client.dumps(
        ({"name": "caf\u00e9"},), methodname="search", encoding="iso-8859-1"
    ).encode("iso-8859-1")
    assert parse_call(body) == ("search", ({"name": "caf\u00e9"},))


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<methodCall><methodName>search</methodName><params><param>
<value><string>&lol3;</string></value></param></params></methodCall>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE methodCall [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>search</methodName><params><param>
<value><string>&xxe;</string></value></param></params></methodCall>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE methodCall SYSTEM "http://127.0.0.1:9/evil.dtd">
<methodCall><methodName>search</methodName></methodCall>"""

BARE_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE methodCall>
<methodCall><methodName>search</methodName></methodCall>"""


@pytest.mark.parametrize(
    "body", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, BARE_DTD],
    ids=["billion-laughs", "external-entity", "external-dtd", "bare-dtd"],
)
def test_parse_call_refuses_dtds_and_entities(body: bytes) -> None:
    with pytest.raises(XmlRpcError, match="not allowed") as excinfo:
        parse_call(body)
    assert excinfo.value.fault_code == INVALID_REQUEST


@pytest.mark.parametrize(
    ("body", "fault_code"),
    [
        (b"", PARSE_ERROR),
        (b"not xml at all", PARSE_ERROR),
        (b"<methodCall><methodName>search</methodName>", PARSE_ERROR),
        (b"<methodCall></methodCall>", INVALID_REQUEST),
        (b"<methodCall><methodName> </methodName></methodCall>", INVALID_REQUEST),
        (b"<methodResponse><params/></methodResponse>", INVALID_REQUEST),
        (
            b"<methodCall><methodName>s</methodName><params><param>"
            b"<value><int>x</int></value></param></params></methodCall>",
            PARSE_ERROR,
        ),
        (
            b"<methodCall><methodName>s</methodName><params><param>"
            b"<value><boolean>7</boolean></value></param></params></methodCall>",
            PARSE_ERROR,
        ),
        (
            b"<methodCall><methodName>s</methodName><params><param>"
            b"<value><blob>x</blob></value></param></params></methodCall>",
            PARSE_ERROR,
        ),
        (
            b"<methodCall><methodName>s</methodName><params><param><value>"
            b"<struct><member><value><int>1</int></value></member></struct>"
            b"</value></param></params></methodCall>",
            PARSE_ERROR,
        ),
    ],
)
def test_parse_call_refuses_malformed(body: bytes, fault_code: int) -> None:
    with pytest.raises(XmlRpcError) as excinfo:
        parse_call(body)
    assert excinfo.value.fault_code == fault_code


def test_parse_call_size_limit() -> None:
    filler = "x" * (MAX_BODY_BYTES - 400)
    at_limit = call("search", {"name": filler})
    assert len(at_limit) <= MAX_BODY_BYTES
    assert parse_call(at_limit)[0] == "search"
    over = call("search", {"name": filler + "x" * 500})
    with pytest.raises(XmlRpcError, match="limit") as excinfo:
        parse_call(over)
    assert excinfo.value.fault_code == INVALID_REQUEST


# --- search --------------------------------------------------------------

ENTRIES = [
    SearchEntry("Foo-Bar", "1.0", "A library for FOO things"),
    SearchEntry("bazinga", "2.1", "Nothing to see"),
    SearchEntry("qux", "0.1", None),
    SearchEntry("food", "3.0", ""),
]


@pytest.mark.parametrize(
    ("spec", "operator", "expected"),
    [
        ({"name": "foo"}, "and", ["Foo-Bar", "food"]),
        ({"name": "FOO"}, "and", ["Foo-Bar", "food"]),
        ({"name": ["foo"], "summary": ["foo"]}, "or", ["Foo-Bar", "food"]),
        ({"name": ["foo"], "summary": ["foo"]}, "and", ["Foo-Bar"]),
        ({"name": ["foo"], "summary": ["foo"]}, "AND", ["Foo-Bar"]),
        ({"name": ["qux", "baz"]}, "and", ["bazinga", "qux"]),
        ({"summary": "see"}, "and", ["bazinga"]),
        ({"summary": "thing"}, "or", ["Foo-Bar", "bazinga"]),
        ({"name": "qux", "summary": "x"}, "and", []),  # missing summary
        ({"name": "qux", "summary": "x"}, "or", ["qux"]),
        ({"name": "-bar"}, "and", ["Foo-Bar"]),
        ({"name": "nope"}, "or", []),
        ({"name": []}, "or", []),
        ({"name": "foo", "version": "9.9"}, "and", ["Foo-Bar", "food"]),
        ({"version": "1.0"}, "or", []),
        ({}, "and", []),
        ({"name": ""}, "and", ["Foo-Bar", "bazinga", "qux", "food"]),
    ],
)
def test_search(spec, operator: str, expected: list[str]) -> None:
    hits = search(ENTRIES, spec, operator)
    assert [hit["name"] for hit in hits] == sorted(
        expected, key=[e.name for e in ENTRIES].index
    )


def test_search_result_shape() -> None:
    assert search(ENTRIES, {"name": ["qux", "foo-"]}, "or") == [
        {
            "name": "Foo-Bar",
            "version": "1.0",
            "summary": "A library for FOO things",
            "_pypi_ordering": 0,
        },
        {"name": "qux", "version": "0.1", "summary": "", "_pypi_ordering": 0},
    ]


def test_search_accepts_a_generator() -> None:
    hits = search((e for e in ENTRIES), {"name": "baz"}, "and")
    assert [hit["version"] for hit in hits] == ["2.1"]


@pytest.mark.parametrize(
    ("spec", "operator", "message"),
    [
        ({"name": "foo"}, "xor", "'xor'"),
        ({"name": "foo"}, 1, "operator"),
        ({"name": 3}, "and", "'name'"),
        ({"summary": ["ok", 3]}, "or", "'summary'"),
        (["foo"], "and", "struct"),
    ],
)
def test_search_rejects_bad_params(spec, operator, message: str) -> None:
    with pytest.raises(XmlRpcError, match=message) as excinfo:
        search(ENTRIES, spec, operator)
    assert excinfo.value.fault_code == INVALID_PARAMS


# --- responses -----------------------------------------------------------


def test_render_response_round_trip() -> None:
    hits = search(ENTRIES, {"name": "foo"}, "and")
    assert answer(render_response(hits)) == hits


def test_render_fault_round_trip() -> None:
    with pytest.raises(xmlrpc.client.Fault) as excinfo:
        answer(render_fault(METHOD_NOT_FOUND, "no such method"))
    assert excinfo.value.faultCode == METHOD_NOT_FOUND
    assert excinfo.value.faultString == "no such method"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (call("search", {"name": "foo"}), ["Foo-Bar", "food"]),
        (call("search", {"name": ["foo"], "summary": ["foo"]}, "and"), ["Foo-Bar"]),
    ],
)
def test_respond_answers_search(body: bytes, expected: list[str]) -> None:
    assert [hit["name"] for hit in answer(respond(body, ENTRIES))] == expected


@pytest.mark.parametrize(
    ("body", "fault_code"),
    [
        (call("list_packages"), METHOD_NOT_FOUND),
        (call("search"), INVALID_PARAMS),
        (call("search", {"name": "x"}, "or", "extra"), INVALID_PARAMS),
        (call("search", {"name": "x"}, "nand"), INVALID_PARAMS),
        (BILLION_LAUGHS, INVALID_REQUEST),
        (b"<garbage", PARSE_ERROR),
    ],
)
def test_respond_turns_errors_into_faults(body: bytes, fault_code: int) -> None:
    with pytest.raises(xmlrpc.client.Fault) as excinfo:
        answer(respond(body, ENTRIES))
    assert excinfo.value.faultCode == fault_code


def test_server_proxy_talks_to_respond() -> None:
    """A real ServerProxy, over a transport that calls respond() directly."""

    class InProcess(xmlrpc.client.Transport):
        def request(self, host, handler, request_body, verbose=False):
            parser, unmarshaller = self.getparser()
            parser.feed(respond(request_body, ENTRIES))
            parser.close()
            return unmarshaller.close()

    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1:1/", transport=InProcess())
    hits = proxy.search({"name": ["foo"], "summary": ["foo"]}, "or")
    assert [hit["name"] for hit in hits] == ["Foo-Bar", "food"]
