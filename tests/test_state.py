"""The state store: the digest cache, the change journal and its counter."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from conftest import exit_code_in_fork

from pypiserver.distributions import parse_filename
from pypiserver.state import Change, Digests, FileFacts, StateStore

WHEEL = "foo_bar-1.0-py3-none-any.whl"
ALL_DIGESTS = {"sha256": "a" * 64, "md5": "b" * 32, "blake2b_256": "c" * 64, "sha512": "d" * 128}


@pytest.fixture
def store(tmp_path):
    opened = StateStore(tmp_path / "state")
    yield opened
    opened.close()


def _facts() -> FileFacts:
    return FileFacts(
        size=10, mtime_ns=123, digests=dict(ALL_DIGESTS), summary="S",
        metadata_name="Foo-Bar", dist=parse_filename(WHEEL),
    )  # fmt: skip


def test_facts_keep_only_the_digests_asked_for_and_the_rest_stay_on_disk(store):
    store.save_facts("/p/" + WHEEL, _facts(), b"Metadata-Version: 2.1\n")

    kept = store.all_facts(("sha256", "sha512"))["/p/" + WHEEL]
    assert dict(kept.digests) == {"sha256": "a" * 64, "sha512": "d" * 128}
    assert dict(store.facts("/p/" + WHEEL).digests) == {"sha256": "a" * 64}
    assert store.digests(["/p/" + WHEEL, "/p/missing.whl"]) == {"/p/" + WHEEL: ALL_DIGESTS}
    assert (kept.dist, kept.metadata_name, kept.summary) == (parse_filename(WHEEL), "Foo-Bar", "S")


def test_a_snapshot_gives_back_the_facts_saved_in_it(store, fork):
    plain = _facts()._replace(digests=Digests([("sha256", "a" * 64)]), summary=None)
    more = _facts()._replace(digests=Digests([("sha256", "e" * 64), ("md5", "f" * 32)]))
    assert store.snapshot() is None  # none saved yet

    store.save_snapshot([(f"/p{os.sep}{WHEEL}", plain), (f"/q{os.sep}sub/{WHEEL}", more)])
    if os.name == "posix":  # not mkstemp's 0600
        assert (store.directory / "facts.snapshot").stat().st_mode & 0o777 == 0o644

    loaded = store.snapshot()
    assert loaded == {f"/p{os.sep}{WHEEL}": plain, f"/q{os.sep}sub/{WHEEL}": more}
    assert isinstance(loaded[f"/p{os.sep}{WHEEL}"].digests, Digests)
    assert store.snapshot(("sha256", "md5")) is None  # saved keeping other digests


def test_a_snapshot_is_not_trusted_beside_a_new_database(tmp_path):
    first = StateStore(tmp_path / "state")
    first.save_snapshot([("/p/" + WHEEL, _facts()._replace(digests=Digests([("sha256", "a" * 64)])))])
    first.close()
    for leftover in (tmp_path / "state").glob("state.sqlite3*"):
        leftover.unlink()  # the database's rows (and core metadata) are gone

    again = StateStore(tmp_path / "state")
    assert again.snapshot() is None
    again.close()


def test_a_damaged_snapshot_is_ignored(store, caplog):
    (store.directory / "facts.snapshot").write_bytes(b"\x00not marshal data")
    assert store.snapshot() is None
    assert "ignoring the facts snapshot" in caplog.text


def test_digests_is_a_read_only_mapping():
    digests = Digests([("md5", "m"), ("sha256", "s")])
    assert digests["sha256"] == "s" and digests.get("md5") == "m"
    assert "sha512" not in digests and digests.get("sha512") is None
    assert list(digests) == ["sha256", "md5"] and len(digests) == 2
    assert digests == {"sha256": "s", "md5": "m"}
    with pytest.raises(KeyError):
        digests["sha512"]
    with pytest.raises(ValueError):
        Digests([("md5", "m")])


def test_a_change_recorded_by_another_process_moves_the_shared_count(store, tmp_path):
    before = store.change_count()
    script = (
        "import sys; from pathlib import Path; from pypiserver.state import Change, StateStore\n"
        "other = StateStore(Path(sys.argv[1]))\n"
        "for i in range(3): other.record(Change('file', f'x{i}.whl'))\n"
        "other.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(store.directory)], check=True)

    assert store.change_count() == before + 3
    changes, offset = store.changes_since(0)
    assert [c.subject for c in changes] == ["x0.whl", "x1.whl", "x2.whl"]
    assert store.changes_since(offset) == ([], offset)


def test_records_from_two_stores_are_all_counted(tmp_path):
    first, second = StateStore(tmp_path / "s"), StateStore(tmp_path / "s")
    try:
        for i in range(5):
            first.record(Change("file", f"a{i}"))
            second.record(Change("yank", "*"))
        assert first.change_count() == second.change_count() == 10
    finally:
        first.close()
        second.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_uses_a_connection_and_lock_of_its_own(store):
    # The server builds its catalogue, then forks its workers; meanwhile its
    # watcher thread may be using the store.
    store.save_facts("/p/" + WHEEL, _facts(), None)
    holding, done = threading.Event(), threading.Event()

    def busy_watcher() -> None:
        with store._lock:
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=busy_watcher)
    thread.start()
    holding.wait(5)
    try:
        child_wrote = exit_code_in_fork(
            lambda: store.facts("/p/" + WHEEL) is not None
            and store.save_facts("/p/child.whl", _facts(), None) is None
        )
    finally:
        done.set()
        thread.join()

    assert child_wrote == 0
    assert set(store.all_facts()) == {"/p/" + WHEEL, "/p/child.whl"}
