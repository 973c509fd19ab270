import pytest
from packaging.version import Version

from pypiserver.distributions import (
    InvalidDistributionFilename,
    is_distribution,
    normalize_name,
    parse_filename,
    version_ranks,
)


@pytest.mark.parametrize(
    ("filename", "project", "version", "kind", "python_version"),
    [
        ("foo-1.0-py3-none-any.whl", "foo", "1.0", "wheel", "py3"),
        ("Foo_Bar-2.0.1-py2.py3-none-any.whl", "foo-bar", "2.0.1", "wheel", "py2.py3"),
        ("foo-1.0-1-py3-none-any.whl", "foo", "1.0", "wheel", "py3"),
        ("foo-1.0-12abc-cp311-cp311-manylinux_2_17_x86_64.whl", "foo", "1.0", "wheel", "cp311"),
        ("zope.interface-6.0-cp311-cp311-win_amd64.whl", "zope-interface", "6.0", "wheel", "cp311"),
        ("foo-1.0.tar.gz", "foo", "1.0", "sdist", "source"),
        ("foo-1.0.tgz", "foo", "1.0", "sdist", "source"),
        ("foo-1.0.zip", "foo", "1.0", "sdist", "source"),
        ("foo-1.0.tar.bz2", "foo", "1.0", "sdist", "source"),
        ("foo-1.0.tar.xz", "foo", "1.0", "sdist", "source"),
        ("foo-bar-1.0rc1.tar.gz", "foo-bar", "1.0rc1", "sdist", "source"),
        ("Foo.Bar_baz-3.0.post1.tar.gz", "foo-bar-baz", "3.0.post1", "sdist", "source"),
        ("foo-2-1.0.tar.gz", "foo-2", "1.0", "sdist", "source"),
        ("foo-1.0-2.tar.gz", "foo", "1.0-2", "sdist", "source"),
        ("foo-1.0.dev3+local.7.tar.gz", "foo", "1.0.dev3+local.7", "sdist", "source"),
        ("foo-1.0-py3.11.egg", "foo", "1.0", "egg", "py3.11"),
        ("foo_bar-1.0-py2.7-linux-x86_64.egg", "foo-bar", "1.0", "egg", "py2.7"),
        ("foo-1.0.egg", "foo", "1.0", "egg", ""),
    ],
)
def test_parse_filename(filename, project, version, kind, python_version):
    dist = parse_filename(filename)
    assert (dist.project, dist.version, dist.kind, dist.python_version) == (
        project,
        version,
        kind,
        python_version,
    )
    assert dist.filename == filename
    assert is_distribution(filename)


@pytest.mark.parametrize(
    "filename",
    [
        "foo.tar.gz",  # no version
        "foo-bar.tar.gz",  # "bar" is no version
        "foo-1.0.exe",  # unknown suffix
        "foo-1.0.whl",  # too few wheel fields
        "foo-notaversion-py3-none-any.whl",
        "foo-1.0-py3-none-any.whl.asc",  # a signature, not a distribution
        ".foo-1.0.tar.gz",  # hidden
        "sub/foo-1.0.tar.gz",  # a path
        "..\\foo-1.0.tar.gz",
        "README.txt",
        "-1.0.tar.gz",
    ],
)
def test_invalid_filenames(filename):
    with pytest.raises(InvalidDistributionFilename):
        parse_filename(filename)
    assert not is_distribution(filename)


@pytest.mark.parametrize(
    ("name", "normalized"),
    [("Foo", "foo"), ("foo_bar", "foo-bar"), ("Foo.Bar", "foo-bar"), ("a__-.b", "a-b")],
)
def test_normalize_name(name, normalized):
    assert normalize_name(name) == normalized


def test_sort_key_orders_by_version_not_text():
    names = ["foo-1.10.tar.gz", "foo-1.9.tar.gz", "foo-1.10rc1.tar.gz"]
    ordered = sorted((parse_filename(n) for n in names), key=lambda d: d.sort_key)
    assert [d.version for d in ordered] == ["1.9", "1.10rc1", "1.10"]


def test_version_ranks_order_like_sort_key_and_tie_equal_versions():
    ranks = version_ranks(["1.10", "1.9", "1.10rc1", "1.0", "1.0.0", "not-a-version"])
    assert ranks["not-a-version"] < ranks["1.0"] == ranks["1.0.0"] < ranks["1.9"]
    assert ranks["1.9"] < ranks["1.10rc1"] < ranks["1.10"]


@pytest.mark.parametrize(
    "texts",
    [
        # Only plain releases, ranked by their numbers without Version objects.
        ["2", "1.10", "1.9.9", "01.2", "1.2.0", "1.2", "10.0.0.0", "1", "0.0", "0", "1.0.1"],
        # Each of these makes the whole set ranked by Version objects.
        ["1.2", "1-2", "1.2.post1", "1.2+local", "1!0.5", "1.2rc1", "1.2.dev0", "v1.2"],
    ],
)
def test_version_ranks_are_those_of_version_objects(texts):
    by_version = sorted({Version(t) for t in texts})
    assert version_ranks(texts) == {t: by_version.index(Version(t)) for t in texts}
