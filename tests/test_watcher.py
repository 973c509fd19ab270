"""What the file watcher makes of watchdog's events, fed to it by hand: the
end-to-end tests drive it with real copies, moves and removals."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest
from dists import make_wheel
from watchdog.events import DirCreatedEvent, EventsLostEvent, FileCreatedEvent

from pypiserver.index import Catalogue
from pypiserver.state import StateStore
from pypiserver.storage import DirectoryStorage
from pypiserver.watcher import Watcher


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "packages").mkdir()
    return tmp_path / "packages"


@pytest.fixture
def watcher(root: Path, tmp_path: Path) -> Watcher:
    catalogue = Catalogue(DirectoryStorage((root,)), StateStore(tmp_path / "state"))
    catalogue.load()
    return Watcher(catalogue)  # never started: no events but these


def _apply_queued(watcher: Watcher) -> set[str]:
    batch = set()
    while True:
        try:
            batch.add(watcher._queue.get_nowait())
        except queue.Empty:
            break
    watcher._apply(batch)
    return batch


def test_a_new_directory_is_looked_at_as_a_whole(watcher, root):
    (root / "new" / "deep").mkdir(parents=True)
    early = make_wheel(root / "new" / "deep", "early", "1.0")  # before any watch: no event
    late = make_wheel(root / "new" / "deep", "late", "1.0")
    (root / ".hidden").mkdir()

    watcher.on_any_event(DirCreatedEvent(str(root / "new")))
    watcher.on_any_event(FileCreatedEvent(str(late)))
    watcher.on_any_event(DirCreatedEvent(str(root / ".hidden")))

    assert _apply_queued(watcher) == {"new/", "new/deep/" + late.name}
    for wheel in (early, late):
        assert watcher.catalogue.file("new/deep/" + wheel.name) is not None


def test_lost_events_make_it_look_at_everything(watcher, root):
    unseen = make_wheel(root, "unseen", "1.0")  # its events were among those dropped

    watcher.on_any_event(EventsLostEvent(str(root)))
    _apply_queued(watcher)

    assert watcher.catalogue.file(unseen.name) is not None
