"""The catalogue as several worker processes use it: each has its own, over
one package directory and one state directory."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import exit_code_in_fork
from dists import make_wheel

from pypiserver import index
from pypiserver.index import Catalogue
from pypiserver.state import StateStore
from pypiserver.storage import DirectoryStorage, ScanAhead


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


def test_a_project_listed_once_lists_a_new_release_in_version_order(tmp_path):
    root = tmp_path / "packages"
    root.mkdir()
    for version in ("1.10", "1.9"):
        make_wheel(root, "ordered", version)
    catalogue = _worker(root, tmp_path / "state")
    assert catalogue.project("ordered").versions == ("1.9", "1.10")

    # Added after the files were put in order once: appended to the project.
    catalogue.notice([make_wheel(root, "ordered", "1.9.5").name])
    catalogue.notice([make_wheel(root, "ordered", "1.2").name])

    assert catalogue.project("ordered").versions == ("1.2", "1.9", "1.9.5", "1.10")


def test_a_large_batch_of_changes_reaches_the_others_as_one_rescan(tmp_path, monkeypatch):
    monkeypatch.setattr(index, "_SHARED_CHANGES_MAX", 2)
    root = tmp_path / "packages"
    root.mkdir()
    watching, serving = (_worker(root, tmp_path / "state") for _ in range(2))
    copied = [make_wheel(root, f"bulk-{n}", "1.0") for n in range(3)]
    offset = watching.state.journal_size()

    watching.notice([w.name for w in copied])

    recorded, _ = watching.state.changes_since(offset)
    assert [c.kind for c in recorded] == ["rescan"]
    assert all(serving.project(f"bulk-{n}") is not None for n in range(3))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_worker_forked_while_a_change_is_applied_gets_all_of_it(tmp_path):
    root = tmp_path / "packages"
    root.mkdir()
    catalogue = _worker(root, tmp_path / "state")
    applying = threading.Event()

    def watcher_thread() -> None:
        # A change applied in steps, under the catalogue's lock.
        with catalogue._write_lock:
            applying.set()
            shutil.copy(make_wheel(tmp_path, "half", "1.0"), root)
            time.sleep(0.3)  # the fork is asked for meanwhile
            catalogue.refresh("half-1.0-py3-none-any.whl")

    thread = threading.Thread(target=watcher_thread)
    thread.start()
    applying.wait(5)
    # The fork waits for the change; the child can then take the lock.
    code = exit_code_in_fork(
        lambda: catalogue.project("half") is not None and catalogue._write_lock.acquire(timeout=2)
    )
    thread.join()
    assert code == 0


def test_the_watching_process_keeps_up_with_the_journal(tmp_path):
    # A worker forked from it later starts where it is, not at its start.
    root = tmp_path / "packages"
    root.mkdir()
    watching, serving = (_worker(root, tmp_path / "state") for _ in range(2))
    upload = make_wheel(tmp_path, "uploaded", "1.0")
    serving.store(upload.name, io.BytesIO(upload.read_bytes()), overwrite=False)
    copied = make_wheel(root, "copied", "1.0")

    watching.notice([copied.name])

    assert watching._journal_offset == watching.state.journal_size()
    assert {"uploaded", "copied"} <= set(watching._by_project)


def test_a_request_during_another_threads_replay_waits_for_it(tmp_path, monkeypatch):
    root = tmp_path / "packages"
    root.mkdir()
    serving, uploading = (_worker(root, tmp_path / "state") for _ in range(2))
    upload = make_wheel(tmp_path, "uploaded", "1.0")
    uploading.store(upload.name, io.BytesIO(upload.read_bytes()), overwrite=False)
    replaying = threading.Event()
    refresh = serving.refresh

    def slow_refresh(relpath: str) -> bool:
        replaying.set()
        time.sleep(0.3)  # a replay that takes a while
        return refresh(relpath)

    monkeypatch.setattr(serving, "refresh", slow_refresh)
    first = threading.Thread(target=serving.sync)
    first.start()
    replaying.wait(5)
    # The next request, on another thread, while the first replays.
    assert serving.revision("uploaded") is not None
    first.join()


def _unreadable(*args):
    raise AssertionError("a file was read again")


@pytest.mark.parametrize("scan", ["here", "ahead"])
def test_a_restart_over_two_roots_with_subdirectories_reads_nothing(tmp_path, monkeypatch, scan):
    # The start-up loop finds each file's facts by its root's path and its
    # relpath: both parts must come out as the snapshot recorded them,
    # whether this process scanned or a child did (as over a large tree).
    scans_ahead = []
    if scan == "ahead":
        monkeypatch.setattr(index, "_SCAN_AHEAD_SNAPSHOT", -1)
        monkeypatch.setattr(index, "ScanAhead", lambda s: scans_ahead.append(s) or ScanAhead(s))
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "team" / "deep").mkdir(parents=True)
    second.mkdir()
    make_wheel(first, "top", "1.0")
    make_wheel(first / "team" / "deep", "nested", "1.0")
    make_wheel(second, "other", "2.0")

    def worker() -> Catalogue:
        catalogue = Catalogue(DirectoryStorage((first, second)), StateStore(tmp_path / "state"))
        catalogue.load()
        return catalogue

    before = worker()
    monkeypatch.setattr(index, "read_facts", _unreadable)
    monkeypatch.setattr(StateStore, "all_facts", _unreadable)
    monkeypatch.setattr(StateStore, "facts_for", _unreadable)
    after = worker()

    assert after.file("team/deep/nested-1.0-py3-none-any.whl") is not None
    for name in ("top", "nested", "other"):
        assert after.project(name).files == before.project(name).files
    assert after.project("other").files[0].stored.root == second
    assert len(scans_ahead) == (2 if scan == "ahead" else 0)


def test_a_restart_takes_every_fact_from_the_snapshot(tmp_path, monkeypatch):
    root = tmp_path / "packages"
    root.mkdir()
    for n in range(3):
        make_wheel(root, f"kept-{n}", "1.0")
    before = _worker(root, tmp_path / "state")
    assert (tmp_path / "state" / "facts.snapshot").exists()

    monkeypatch.setattr(index, "read_facts", _unreadable)
    monkeypatch.setattr(StateStore, "all_facts", _unreadable)  # nor the table row by row
    after = _worker(root, tmp_path / "state")

    for n in range(3):
        assert after.project(f"kept-{n}").files == before.project(f"kept-{n}").files


def test_files_changed_since_the_snapshot_are_known_from_the_table(tmp_path, monkeypatch):
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "steady", "1.0")
    replaced = make_wheel(root, "replaced", "1.0")
    running = _worker(root, tmp_path / "state")
    snapshot = (tmp_path / "state" / "facts.snapshot").read_bytes()
    # While the server runs: one file replaced, one added.
    replaced.write_bytes(make_wheel(tmp_path, "replaced", "1.0", summary="Other bytes").read_bytes())
    added = make_wheel(root, "added", "1.0")
    running.notice([replaced.name, added.name])
    expected = {name: running.project(name).files for name in ("steady", "replaced", "added")}

    monkeypatch.setattr(index, "read_facts", _unreadable)
    restarted = _worker(root, tmp_path / "state")

    assert {name: restarted.project(name).files for name in expected} == expected
    # Two of three files missed is more than the part that leaves it as it was.
    assert (tmp_path / "state" / "facts.snapshot").read_bytes() != snapshot


def test_a_snapshot_describing_many_removed_files_is_saved_again(tmp_path):
    root = tmp_path / "packages"
    root.mkdir()
    wheels = [make_wheel(root, f"gone-{n}", "1.0") for n in range(3)]
    _worker(root, tmp_path / "state")
    snapshot = tmp_path / "state" / "facts.snapshot"
    before = snapshot.read_bytes()
    for wheel in wheels[1:]:
        wheel.unlink()

    restarted = _worker(root, tmp_path / "state")

    assert [p.name for p in restarted.projects()] == ["gone-0"]
    assert snapshot.read_bytes() != before
    assert list(restarted.state.snapshot()) == [str(wheels[0])]


def test_a_new_directory_is_read_without_scanning_the_rest(tmp_path, monkeypatch):
    root = tmp_path / "packages"
    (root / "old").mkdir(parents=True)
    make_wheel(root / "old", "untouched", "1.0")
    watching, serving = (_worker(root, tmp_path / "state") for _ in range(2))
    (root / "new" / "deep").mkdir(parents=True)
    arrived = make_wheel(root / "new" / "deep", "arrived", "1.0")
    scanned: list[str] = []
    scan = DirectoryStorage.scan
    monkeypatch.setattr(DirectoryStorage, "scan", lambda self, under="": scanned.append(under) or scan(self, under))
    offset = watching.state.journal_size()

    watching.notice([], ["new", "new/deep"])  # a directory and one inside it

    assert scanned == ["new"]
    assert [c.subject for c in watching.state.changes_since(offset)[0]] == ["new/deep/" + arrived.name]
    assert serving.project("arrived").files[0].relpath == "new/deep/" + arrived.name
    assert scanned == ["new"]  # the other worker replayed one path, scanning nothing

    shutil.rmtree(root / "new")
    watching.notice([], ["new"])
    assert watching.project("arrived") is None and serving.project("arrived") is None
    assert serving.project("untouched") is not None


def test_a_directory_moved_within_the_index_is_listed_where_it_went(tmp_path):
    root = tmp_path / "packages"
    (root / "before").mkdir(parents=True)
    moved = make_wheel(root / "before", "mover", "1.0")
    signature = moved.with_name(moved.name + ".asc")
    signature.write_text("signature")
    watching, serving = (_worker(root, tmp_path / "state") for _ in range(2))

    (root / "before").rename(root / "after")
    watching.notice([], ["before", "after"])

    for catalogue in (watching, serving):
        (listed,) = catalogue.project("mover").files
        assert listed.relpath == "after/" + moved.name
        assert catalogue.signature("after/" + signature.name) is not None
        assert catalogue.signature("before/" + signature.name) is None


def test_many_files_below_a_directory_reach_the_others_as_that_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(index, "_SHARED_CHANGES_MAX", 2)
    root = tmp_path / "packages"
    root.mkdir()
    watching, serving = (_worker(root, tmp_path / "state") for _ in range(2))
    (root / "bulk").mkdir()
    for n in range(3):
        make_wheel(root / "bulk", f"bulk-{n}", "1.0")
    loose = make_wheel(root, "loose", "1.0")
    offset = watching.state.journal_size()

    watching.notice([loose.name, "bulk/bulk-0-1.0-py3-none-any.whl"], ["bulk"])

    recorded, _ = watching.state.changes_since(offset)
    assert [(c.kind, c.subject) for c in recorded] == [("file", loose.name), ("tree", "bulk")]
    assert all(serving.project(f"bulk-{n}") is not None for n in range(3))
    assert serving.project("loose") is not None
