"""Directory storage: what a scan lists, here or in a child process."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from dists import make_wheel

from pypiserver import storage
from pypiserver.storage import DirectoryStorage, ScanAhead


@pytest.fixture
def tree(tmp_path: Path) -> DirectoryStorage:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "team" / "deep").mkdir(parents=True)
    (first / ".hidden").mkdir()
    second.mkdir()
    make_wheel(first, "top", "1.0")
    make_wheel(first / "team" / "deep", "nested", "1.0")
    make_wheel(first / ".hidden", "secret", "1.0")
    make_wheel(second, "top", "1.0")  # the first root's copy is served
    make_wheel(second, "other", "2.0")
    (second / "other-2.0-py3-none-any.whl.asc").write_text("signature")
    (second / "notes.txt").write_text("not a distribution")
    # Enough files for several frames of rows.
    for n in range(2 * storage._ROWS_PER_FRAME + 7):
        (second / f"many-{n}.tar.gz").write_bytes(b"x" * (n % 5))
    return DirectoryStorage((first, second))


def _listing(files) -> list[tuple]:
    # The roots by identity: the catalogue's start-up loop relies on it.
    return [(id(s.root), s.relpath, s.size, s.mtime_ns) for s in files]


def test_a_scan_ahead_lists_what_a_scan_here_lists(tree, fork):
    here = _listing(tree.scan())
    assert len(here) == 2 * storage._ROWS_PER_FRAME + 7 + 4

    ahead = ScanAhead(tree)
    assert (ahead._child is not None) == (fork == "works")
    assert _listing(ahead) == here


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("failing_at", [5, storage._ROWS_PER_FRAME + 5], ids=["first-frame", "second-frame"])
def test_a_scan_ahead_whose_child_fails_scans_here(tree, monkeypatch, caplog, failing_at):
    # Failing in the second frame, after the first was sent and its files
    # given: the rest are scanned here, and each file is given once.
    parent = os.getpid()
    scan = DirectoryStorage.scan

    def fails_in_a_child(self):
        for n, stored in enumerate(scan(self)):
            if os.getpid() != parent and n == failing_at:
                raise OSError("the disk went away")
            yield stored

    monkeypatch.setattr(DirectoryStorage, "scan", fails_in_a_child)
    with caplog.at_level(logging.WARNING, logger="pypiserver.storage"):
        listed = _listing(ScanAhead(tree))
    assert listed == _listing(tree.scan())
    assert "scanning in a child process failed" in caplog.text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_scan_ahead_never_read_leaves_no_child_behind(tree):
    ahead = ScanAhead(tree)
    pid = ahead._child.pid
    del ahead  # as when an error comes between the start and the reading
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_scan_ahead_left_half_read_leaves_no_child_behind(tree):
    ahead = ScanAhead(tree)
    pid = ahead._child.pid
    files = iter(ahead)
    next(files)
    files.close()  # as when an error comes while the files are learnt
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_scan_below_a_directory_lists_what_a_whole_scan_lists_there(tree):
    first, second = tree.roots
    (second / "team").mkdir()
    for root in (first, second):
        make_wheel(root / "team", "in-both", "1.0")  # served from the first
    make_wheel(second / "team", "in-second", "1.0")
    whole = [(s.root, s.relpath) for s in tree.scan() if s.relpath.startswith("team/")]

    below = [(s.root, s.relpath) for s in tree.scan("team")]

    assert sorted(below) == sorted(whole)
    assert (first, "team/deep/nested-1.0-py3-none-any.whl") in below
    assert (first, "team/in_both-1.0-py3-none-any.whl") in below
    assert (second, "team/in_second-1.0-py3-none-any.whl") in below
    assert len(below) == 3
    assert [s.relpath for s in tree.scan("team/deep")] == ["team/deep/nested-1.0-py3-none-any.whl"]


@pytest.mark.parametrize("under", ["missing", "team/deep/nested-1.0-py3-none-any.whl", ".hidden", "team/../.hidden", "/"])
def test_a_scan_below_what_is_no_served_directory_lists_nothing(tree, under):
    assert list(tree.scan(under)) == []
