"""The catalogue as several worker processes use it: each has its own, over
one package directory and one state directory."""

from __future__ import annotations

from pathlib import Path

from dists import make_wheel

from pypiserver.index import Catalogue
from pypiserver.state import StateStore
from pypiserver.storage import DirectoryStorage


def _worker(root: Path, state_dir: Path) -> Catalogue:
    catalogue = Catalogue(DirectoryStorage((root,)), StateStore(state_dir))
    catalogue.load()
    return catalogue


def test_change_one_worker_notices_is_listed_by_the_others(tmp_path):
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "early", "1.0")
    first, second = (_worker(root, tmp_path / "state") for _ in range(2))

    # As when only the first worker's file watcher has reported the copy yet.
    late = make_wheel(root, "late", "1.0")
    first.notice([late.name])
    assert [f.filename for f in second.project("late").files] == [late.name]

    late.unlink()
    first.notice([late.name])
    assert second.project("late") is None
    assert second.project("early") is not None


def test_notice_of_an_unchanged_file_changes_nothing(tmp_path):
    root = tmp_path / "packages"
    root.mkdir()
    wheel = make_wheel(root, "steady", "1.0")
    catalogue = _worker(root, tmp_path / "state")
    revision = catalogue.revision("steady")
    count = catalogue.state.change_count()

    catalogue.notice([wheel.name])  # a second watcher event for the same copy

    assert catalogue.revision("steady") == revision  # its pages stay cached
    assert catalogue.state.change_count() == count  # nothing for others to replay
