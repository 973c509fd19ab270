import pytest

from pypiserver.web.negotiation import HTML, HTML_V1, JSON_V1, choose


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, HTML),
        ("", HTML),
        # pip
        (
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
            JSON_V1,
        ),
        # uv
        (
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
            JSON_V1,
        ),
        # poetry (as of 2.x) and older pip: HTML only
        ("text/html", HTML),
        ("application/vnd.pypi.simple.v1+html", HTML_V1),
        ("application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.9", HTML),
        ("*/*", HTML),
        ("text/*", HTML),
        ("application/*", HTML_V1),
        # a browser
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", HTML),
        ("application/json", None),
        ("image/png", None),
        ("text/html;q=0", None),
        ("*/*;q=0, application/vnd.pypi.simple.v1+json", JSON_V1),
        ("application/vnd.pypi.simple.latest+json", JSON_V1),
    ],
)
def test_choose(accept, expected):
    assert choose(accept) == expected
