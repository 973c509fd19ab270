"""What the server remembers between requests, restarts and processes.

The state directory (a dot-directory, never served) holds:

* ``state.sqlite3`` — per file, what was learnt by reading it once (digests,
  core metadata), keyed by path, size and modification time so a changed file
  is read again; and the yank state of releases and files.
* ``facts.snapshot`` — the facts of every file the catalogue listed at its
  last start, in one marshal blob: a restart reads it instead of 60,000 rows
  of the database.  It may be older than the database; the catalogue checks
  each file's size and modification time against it, as against a row.
* ``pages.store`` — every project page the last saved start rendered,
  gzipped, with a digest of what it was made from (written by
  :mod:`pypiserver.web.pagestore`): after a restart, an unchanged project's
  pages need not be rendered again.
* ``changes.log`` — an append-only journal of the writes this server made
  (uploads, removals, yanks) and of the files its watchers saw change, and
  ``changes.count``, eight bytes counting them.  Every worker process maps
  the counter into memory and reads it on each request, which costs no
  system call; when it has moved, the worker replays the journal lines it
  has not seen.  So an upload acknowledged by one worker is listed by all on
  the next request.
* ``lock`` and ``changes.lock`` — empty files for advisory locks: of several
  workers starting at once, one reads the new files while the others wait;
  and two processes never lose each other's increment of the count.
"""

from __future__ import annotations

import json
import logging
import marshal
import mmap
import os
import secrets
import sqlite3
import struct
import tempfile
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, ContextManager, Iterable, Iterator, Mapping, NamedTuple

from .distributions import Distribution

try:
    import fcntl
except ImportError:  # Windows: one process at a time is the common case there
    fcntl = None  # type: ignore[assignment]

__all__ = ["Digests", "FileFacts", "StateStore", "Change", "Yank", "in_child"]

log = logging.getLogger(__name__)

#: Bump when the files table changes: it is a cache, rebuilt by reading the
#: files again.
_SCHEMA_VERSION = 4
#: Bump when the layout of ``facts.snapshot`` changes.
_SNAPSHOT_FORMAT = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    md5 TEXT NOT NULL,
    blake2b_256 TEXT NOT NULL,
    other_digests TEXT,
    requires_python TEXT,
    summary TEXT,
    metadata BLOB,
    metadata_sha256 TEXT,
    metadata_name TEXT,
    filename TEXT NOT NULL,
    name TEXT NOT NULL,
    project TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    python_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS yanks (
    project TEXT NOT NULL,
    version TEXT NOT NULL,
    filename TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (project, version, filename)
);
-- Made up when the files table is created: the facts snapshot names the
-- table it was taken from, and is not trusted beside another.
CREATE TABLE IF NOT EXISTS identity (id TEXT NOT NULL);
"""


class Digests(Mapping[str, str]):
    """Hex digests by hashlib name: always sha256, perhaps a few more.  A
    dict would do, but the catalogue keeps one per file, and this is a
    quarter of a dict's size."""

    __slots__ = ("sha256", "_more")

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        more: list[tuple[str, str]] = []
        sha256 = None
        for name, digest in pairs:
            if name == "sha256":
                sha256 = digest
            else:
                more.append((name, digest))
        if sha256 is None:
            raise ValueError("a sha256 digest is required")
        self.sha256: str = sha256
        self._more = tuple(more)  # usually the shared empty tuple

    @classmethod
    def of_sha256(cls, sha256: str) -> Digests:
        """Only a sha256 digest: what most files keep."""
        digests = cls.__new__(cls)
        digests.sha256 = sha256
        digests._more = ()
        return digests

    def __getitem__(self, name: str) -> str:
        if name == "sha256":
            return self.sha256
        for key, value in self._more:
            if key == name:
                return value
        raise KeyError(name)

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        # Mapping's get() goes through __getitem__ and an exception.
        if name == "sha256":
            return self.sha256
        return next((value for key, value in self._more if key == name), default)

    def __iter__(self) -> Iterator[str]:
        yield "sha256"
        yield from (key for key, _ in self._more)

    def __len__(self) -> int:
        return 1 + len(self._more)

    def __repr__(self) -> str:
        return f"Digests({dict(self)!r})"


class FileFacts(NamedTuple):
    """What reading a distribution once taught us."""

    size: int
    mtime_ns: int
    #: hashlib name -> hex digest; always sha256, md5 and blake2b_256.
    digests: Mapping[str, str]
    requires_python: str | None = None
    summary: str | None = None
    #: sha256 of the core metadata file, when one could be read.
    metadata_sha256: str | None = None
    #: The project name as the core metadata spells it ("Foo-Lib" where
    #: the filename says "foo_lib").
    metadata_name: str | None = None
    #: What the filename says, parsed once and kept so a restart does not
    #: parse 60,000 names again.
    dist: Distribution | None = None


@dataclass(frozen=True, slots=True)
class Yank:
    project: str
    version: str
    #: Empty when the whole release is yanked.
    filename: str
    reason: str


@dataclass(frozen=True, slots=True)
class Change:
    #: "file" (a path was written or removed), "yank", "tree" (too many
    #: files changed below the directory ``subject`` to name them: look at
    #: all of it), or "rescan" (the same for everything).
    kind: str
    subject: str


class StateStore:
    """The SQLite database and change journal in one state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.journal = directory / "changes.log"
        self.journal.touch(exist_ok=True)
        self._counter = _map_counter(directory / "changes.count")
        self._lock = threading.Lock()
        self._db = self._connect()
        #: Connections opened before this process was forked: never used or
        #: closed here (see :meth:`_after_fork`).
        self._inherited: list[sqlite3.Connection] = []
        _OPEN_STORES.add(self)
        with self.exclusive(), self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if self._db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
                self._db.execute("DROP TABLE IF EXISTS files")
                self._db.execute("DROP TABLE IF EXISTS identity")
                self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT id FROM identity").fetchone()
            if row is None:
                row = (secrets.token_hex(8),)
                self._db.execute("INSERT INTO identity VALUES (?)", row)
        self._identity: str = row[0]

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.directory / "state.sqlite3", check_same_thread=False, timeout=30)

    def _after_fork(self) -> None:
        # SQLite forbids using a connection in a child of the process that
        # opened it (the server builds its catalogue once and forks its
        # workers), and another thread may have held the lock at the fork.
        # The inherited connection is kept, unclosed: closing it could undo
        # the parent's locks on the database.
        self._inherited.append(self._db)
        self._lock = threading.Lock()
        self._db = self._connect()

    def close(self) -> None:
        _OPEN_STORES.discard(self)
        with self._lock:
            self._db.close()
            self._counter.close()

    # -- file facts ----------------------------------------------------------

    def exclusive(self) -> ContextManager[None]:
        """Hold the state directory's lock, shared by every process using it:
        only one of several starting workers reads the new files."""
        return self._locked("lock")

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        with open(self.directory / name, "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def all_facts(self, digests: Collection[str] = ("sha256",)) -> dict[str, FileFacts]:
        """The facts of every file, keeping only the named ``digests`` (the
        others stay on disk: see :meth:`digests`).  Strings repeated across
        rows (names, versions, tags, summaries) are shared, which matters at
        60,000 files."""
        shared: dict[str, str] = {}
        with self._lock:
            # Row by row, not fetchall(): the rows' own strings are dropped
            # as soon as they are converted, which keeps the peak low.
            rows = self._db.execute(f"SELECT path, {_fact_columns(digests)} FROM files")
            return {row[0]: _facts(row[1:], digests, shared.setdefault) for row in rows}

    def facts(self, path: str, digests: Collection[str] = ("sha256",)) -> FileFacts | None:
        return self.facts_for([path], digests).get(path)

    def facts_for(self, paths: list[str], digests: Collection[str] = ("sha256",)) -> dict[str, FileFacts]:
        """The facts of those of ``paths`` that have any."""
        shared: dict[str, str] = {}
        found: dict[str, FileFacts] = {}
        with self._lock:
            for chunk in _slices(paths):
                rows = self._db.execute(
                    f"SELECT path, {_fact_columns(digests)} FROM files"
                    f" WHERE path IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
                found.update((row[0], _facts(row[1:], digests, shared.setdefault)) for row in rows)
        return found

    def snapshot(self, digests: Collection[str] = ("sha256",)) -> dict[str, FileFacts] | None:
        """The facts :meth:`save_snapshot` saved with the same ``digests``
        kept, by path, or None if there are none.  They may be out of date:
        a file whose size or modification time differs is to be looked up
        with :meth:`facts_for`."""
        try:
            with open(self.directory / _SNAPSHOT, "rb") as file, mmap.mmap(
                file.fileno(), 0, access=mmap.ACCESS_READ
            ) as data:
                # Mapped, not read: no copy of the file's bytes (16 MB at
                # 60,000 files) in memory while they are decoded.
                header, columns = marshal.loads(data)
            if header != self._snapshot_header(digests):
                return None
            return _facts_of_columns(columns)
        except (OSError, EOFError, ValueError, TypeError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("ignoring the facts snapshot: %s", exc)
            return None

    def snapshot_size(self) -> int:
        """The saved snapshot's size in bytes, 0 if there is none: about
        270 bytes per file the last start found."""
        try:
            return os.stat(self.directory / _SNAPSHOT).st_size
        except OSError:
            return 0

    def snapshot_mtime_ns(self) -> int:
        """When the snapshot was last saved, 0 if there is none: files
        derived from the same start (the page store) are older when it was
        saved again since."""
        try:
            return os.stat(self.directory / _SNAPSHOT).st_mtime_ns
        except OSError:
            return 0

    def save_snapshot(
        self, files: Iterable[tuple[str, FileFacts]], digests: Collection[str] = ("sha256",)
    ) -> None:
        """Replace the snapshot with ``files``: (path, facts keeping only
        ``digests``).  Atomic: a reader finds the old snapshot or the new."""
        # In a child process: marshal's bookkeeping for 60,000 files would
        # leave this long-lived process's heap 10+ MB larger for good.
        in_child(lambda: self._write_snapshot(files, digests), "the facts snapshot")

    def _snapshot_header(self, digests: Collection[str]) -> tuple:
        # A row of the files table is never deleted, only replaced when its
        # file is read again: so the snapshot's facts hold while the file's
        # size and modification time match, and their table keeps them.
        return (_SNAPSHOT_FORMAT, self._identity, sorted(digests))

    def _write_snapshot(self, files: Iterable[tuple[str, FileFacts]], digests: Collection[str]) -> None:
        data = marshal.dumps((self._snapshot_header(digests), _columns(files)))
        fd, temp = tempfile.mkstemp(prefix=".snapshot-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(temp, 0o644)  # not mkstemp's 0600: as the other state files
            os.replace(temp, self.directory / _SNAPSHOT)
        except BaseException:
            os.unlink(temp)
            raise

    def digests(self, paths: list[str]) -> dict[str, dict[str, str]]:
        """Every digest stored for each of ``paths`` (the JSON API shows md5
        and blake2b_256, which the catalogue does not keep in memory)."""
        found: dict[str, dict[str, str]] = {}
        with self._lock:
            for chunk in _slices(paths):
                rows = self._db.execute(
                    "SELECT path, sha256, md5, blake2b_256, other_digests FROM files"
                    f" WHERE path IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
                for path, *base, other in rows:
                    found[path] = dict(zip(_BASE_DIGESTS, base))
                    found[path].update(json.loads(other) if other else {})
        return found

    def save_facts(self, path: str, facts: FileFacts, metadata: bytes | None) -> None:
        self.save_many_facts([(path, facts, metadata)])

    def save_many_facts(self, items: list[tuple[str, FileFacts, bytes | None]]) -> None:
        """Save in one transaction: a first scan of a large tree saves thousands."""
        rows = [_row(path, facts, metadata) for path, facts, metadata in items]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )

    def forget(self, path: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM files WHERE path = ?", (path,))

    def metadata(self, path: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT metadata FROM files WHERE path = ?", (path,)
            ).fetchone()
        return row[0] if row else None

    # -- yanks ---------------------------------------------------------------

    def yanks(self) -> list[Yank]:
        with self._lock:
            rows = self._db.execute(
                "SELECT project, version, filename, reason FROM yanks"
            ).fetchall()
        return [Yank(*row) for row in rows]

    def yank(self, project: str, version: str, filename: str, reason: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO yanks VALUES (?, ?, ?, ?)",
                (project, version, filename, reason),
            )

    def unyank(self, project: str, version: str, filename: str) -> bool:
        with self._lock, self._db:
            cursor = self._db.execute(
                "DELETE FROM yanks WHERE project = ? AND version = ? AND filename = ?",
                (project, version, filename),
            )
        return cursor.rowcount > 0

    # -- change journal -------------------------------------------------------

    def journal_size(self) -> int:
        try:
            return os.stat(self.journal).st_size
        except OSError:
            return 0

    def change_count(self) -> int:
        """How many changes were ever recorded: read from shared memory."""
        return _COUNT.unpack_from(self._counter)[0]

    def record(self, *changes: Change) -> None:
        lines = "".join(f"{change.kind}\t{change.subject}\n" for change in changes).encode("utf-8")
        # O_APPEND makes each write land whole at the end, even when several
        # processes write at once.
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines)
        finally:
            os.close(fd)
        # Counted after it is in the journal: a reader that sees the new
        # count finds the line.  The lock keeps two writers' increments.
        with self._locked("changes.lock"):
            _COUNT.pack_into(self._counter, 0, self.change_count() + 1)

    def changes_since(self, offset: int) -> tuple[list[Change], int]:
        """The changes recorded after byte ``offset``, and the new offset."""
        with open(self.journal, "rb") as journal:
            journal.seek(offset)
            data = journal.read()
        complete = data[: data.rfind(b"\n") + 1]
        return list(_parse_changes(complete)), offset + len(complete)


def in_child(work: Callable[[], None], what: str) -> None:
    """Run ``work`` in a forked child process and wait for it, so that what
    it allocates never enlarges this long-lived process's heap; where there
    is no fork() (or none to be had), here.  A failure is logged as not
    saving ``what``, never raised: it only costs a later start time."""
    try:
        pid = os.fork() if hasattr(os, "fork") else -1
    except OSError:
        pid = -1
    if pid == -1:
        try:
            work()
        except Exception:
            log.exception("cannot save %s", what)
        return
    if pid == 0:
        status = 1
        try:
            work()
            status = 0
        except BaseException:
            log.exception("cannot save %s", what)
        finally:
            os._exit(status)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return  # reaped by a SIGCHLD handler of the program embedding us
    if status != 0:
        log.warning("%s was not saved (status %d)", what, status)


_BASE_DIGESTS = ("sha256", "md5", "blake2b_256")
_SNAPSHOT = "facts.snapshot"
_COUNT = struct.Struct("<Q")
_OPEN_STORES: weakref.WeakSet[StateStore] = weakref.WeakSet()


def _reconnect_after_fork() -> None:
    for store in list(_OPEN_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reconnect_after_fork)


def _map_counter(path: Path) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < _COUNT.size:
            os.ftruncate(fd, _COUNT.size)  # zeros: no change recorded yet
        return mmap.mmap(fd, _COUNT.size)
    finally:
        os.close(fd)


def _fact_columns(keep: Collection[str]) -> str:
    """The columns :func:`_facts` reads.  Digests not kept are read as NULL:
    at 60,000 files, building and dropping their hex strings costs time and
    leaves the heap fragmented."""
    digests = ", ".join(k if k in keep else "NULL" for k in _BASE_DIGESTS)
    other = "other_digests" if set(keep) - set(_BASE_DIGESTS) else "NULL"
    return (
        f"size, mtime_ns, {digests}, {other}, requires_python, summary,"
        " metadata_sha256, metadata_name, filename, name, project, version, kind, python_version"
    )


def _facts(row: tuple, keep: Collection[str], share: Callable[[str, str], str]) -> FileFacts:
    """The facts of one cached row; ``share`` returns one string object for
    equal strings (``dict.setdefault`` of a dict kept for the whole read)."""
    (
        size, mtime_ns, sha256, md5, blake2b, other, requires_python, summary, metadata_sha256, name,
        filename, dist_name, project, version, kind, python_version,
    ) = row  # fmt: skip
    if md5 is None and blake2b is None and other is None:
        digests = Digests.of_sha256(sha256)  # the usual case, built without a loop
    else:
        more = [("md5", md5), ("blake2b_256", blake2b)]
        if other:
            more.extend(json.loads(other).items())
        digests = Digests([("sha256", sha256), *((k, v) for k, v in more if v and k in keep)])
    # Loops written out: this runs for every file at every start.
    dist = Distribution(
        filename,  # unique to its row: nothing to share
        share(dist_name, dist_name), share(project, project), share(version, version),
        share(kind, kind), share(python_version, python_version),
    )  # fmt: skip
    return FileFacts(
        size, mtime_ns, digests,
        requires_python and share(requires_python, requires_python),
        summary and share(summary, summary),
        metadata_sha256,
        name and share(name, name),
        dist,
    )  # fmt: skip


def _slices(paths: list[str], size: int = 500) -> Iterator[list[str]]:
    # SQLite limits the parameters of one statement.
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


# The snapshot is a list of columns, not of rows: a list refers to the
# catalogue's own objects, where a row would be a tuple built for each file,
# and 60,000 short-lived tuples mixed with what the catalogue keeps would
# leave the heap megabytes larger for good, at saving and at loading.
# marshal stores an object referred to twice once, and loads it as one.
def _columns(files: Iterable[tuple[str, FileFacts]]) -> list[list]:
    columns: list[list] = [[] for _ in range(14)]
    add = [column.append for column in columns]
    # Equal strings as one object (files read since the last start are not).
    share = {}.setdefault
    for path, facts in files:
        dist = facts.dist
        if dist is None:
            raise ValueError("facts without a parsed filename cannot be saved")
        digests = facts.digests
        add[0](path)
        add[1](facts.size)
        add[2](facts.mtime_ns)
        # The bare sha256 when that is all, as it usually is.
        add[3](digests["sha256"] if len(digests) == 1 else tuple(digests.items()))
        add[4](facts.requires_python and share(facts.requires_python, facts.requires_python))
        add[5](facts.summary and share(facts.summary, facts.summary))
        add[6](facts.metadata_sha256)
        add[7](facts.metadata_name and share(facts.metadata_name, facts.metadata_name))
        add[8](dist.filename)
        for column, value in enumerate(dist[1:], 9):
            add[column](share(value, value))
    return columns


def _facts_of_columns(columns: list[list]) -> dict[str, FileFacts]:
    facts: dict[str, FileFacts] = {}
    new = tuple.__new__  # the tuples' own constructor, without a Python call
    sha256_only = Digests.of_sha256
    for (
        path, size, mtime_ns, kept, requires_python, summary, metadata_sha256, name,
        filename, dist_name, project, version, kind, python_version,
    ) in zip(*columns, strict=True):  # fmt: skip
        digests = sha256_only(kept) if type(kept) is str else Digests(kept)
        dist = new(Distribution, (filename, dist_name, project, version, kind, python_version))
        facts[path] = new(
            FileFacts, (size, mtime_ns, digests, requires_python, summary, metadata_sha256, name, dist)
        )
    return facts


def _row(path: str, facts: FileFacts, metadata: bytes | None) -> tuple:
    digests = facts.digests
    other = {k: v for k, v in digests.items() if k not in _BASE_DIGESTS}
    return (
        path,
        facts.size,
        facts.mtime_ns,
        *(digests[k] for k in _BASE_DIGESTS),
        json.dumps(other, sort_keys=True) if other else None,
        facts.requires_python,
        facts.summary,
        metadata,
        facts.metadata_sha256,
        facts.metadata_name,
        *_dist_columns(facts.dist),
    )


def _dist_columns(dist: Distribution | None) -> tuple[str, ...]:
    if dist is None:
        raise ValueError("facts without a parsed filename cannot be cached")
    return (dist.filename, dist.name, dist.project, dist.version, dist.kind, dist.python_version)


def _parse_changes(data: bytes) -> Iterator[Change]:
    for line in data.decode("utf-8", "replace").splitlines():
        kind, _, subject = line.partition("\t")
        if kind and subject:
            yield Change(kind, subject)
