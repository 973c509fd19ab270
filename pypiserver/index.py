"""The in-memory catalogue: projects, their files, digests, metadata, yanks.

Every read is answered from memory.  A file is read (hashed, its core
metadata extracted) once, when it is first seen, and what was learnt is kept
in the state store so a restart does not read it again.  Changes arrive by
three roads, all ending in :meth:`Catalogue.refresh`: writes made through
this catalogue, the file watcher (files copied in by other means), and the
change journal (what another process wrote or its watcher saw).

A :class:`Project` is assembled when asked for and not kept: what is kept
is each project's revision, which changes with the project and keys the
rendered pages, so a page is served without assembling anything.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import logging
import os
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Mapping, NamedTuple

from packaging.version import InvalidVersion, Version

from . import metadata as core_metadata
from .distributions import (
    SIGNATURE_SUFFIX,
    Distribution,
    NormalizedName,
    normalize_name,
    parse_filename,
    version_ranks,
)
from .state import Change, Digests, FileFacts, StateStore
from .storage import ScanAhead, Storage, StoredFile

__all__ = [
    "Catalogue",
    "IndexedFile",
    "NotFound",
    "Project",
    "read_facts",
    "normalize_version",
]

log = logging.getLogger(__name__)

#: Digests every file gets: sha256 for the simple API, all three for the
#: PyPI JSON API.
BASE_ALGORITHMS = ("sha256", "md5", "blake2b_256")
_CHUNK = 1024 * 1024
_PROGRESS_EVERY = 5000
#: Up to this many paths seen changed by the watcher go to the journal one
#: by one; more become one "rescan", or one "tree" line per directory the
#: watcher saw created, removed or moved.
_SHARED_CHANGES_MAX = 1000
#: The facts snapshot is saved again at start when it is stale for more than
#: this part (1/n) of the files: changed, added or removed since.
_SNAPSHOT_STALE_PART = 20
#: A start whose snapshot is larger (about 4,000 files) scans in a child
#: process: below that, the fork would cost more than it saves.
_SCAN_AHEAD_SNAPSHOT = 1 << 20


class NotFound(LookupError):
    """No project, release or file of that name."""


class IndexedFile(NamedTuple):
    """A file as its project lists it.  A tuple, like the records it joins:
    the first request for each page builds one per file of the project."""

    dist: Distribution
    stored: StoredFile
    facts: FileFacts
    #: Whether a detached ``.asc`` signature is stored beside the file.
    signed: bool = False
    #: None when the file is not yanked, else the reason ("" for none given).
    yanked: str | None = None

    @property
    def relpath(self) -> str:
        return self.stored.relpath

    @property
    def filename(self) -> str:
        return self.dist.filename

    @property
    def size(self) -> int:
        return self.facts.size

    @property
    def upload_time(self) -> datetime:
        # Integer arithmetic: a float of nanoseconds can be off by a microsecond.
        seconds, nanoseconds = divmod(self.facts.mtime_ns, 1_000_000_000)
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanoseconds // 1000)

    @property
    def has_metadata(self) -> bool:
        """Whether a PEP 658 metadata file is served for this file."""
        return self.dist.kind == "wheel" and self.facts.metadata_sha256 is not None


@dataclass(frozen=True, slots=True)
class Project:
    name: NormalizedName
    display_name: str
    #: Sorted by version, then filename.
    files: tuple[IndexedFile, ...]
    #: The project's revision when it was assembled (see
    #: :meth:`Catalogue.revision`).  Local to this process: never shown to
    #: clients.
    revision: int

    @property
    def serial(self) -> int:
        """The JSON API's ``last_serial``: the newest file's modification time
        in microseconds.  Every worker process computes the same number, and
        it grows when a file is added or replaced."""
        return max(f.facts.mtime_ns for f in self.files) // 1000

    @property
    def versions(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for file in self.files:
            seen.setdefault(file.dist.version, None)
        return tuple(seen)

    def release(self, version: str) -> tuple[IndexedFile, ...]:
        wanted = normalize_version(version)
        return tuple(f for f in self.files if normalize_version(f.dist.version) == wanted)

    @property
    def latest_version(self) -> str:
        """The newest version that is not yanked, preferring final releases."""
        candidates = [f for f in self.files if f.yanked is None] or list(self.files)
        stable = [f for f in candidates if not _version(f.dist.version).is_prerelease]
        return max(stable or candidates, key=lambda f: f.dist.sort_key).dist.version


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: What the catalogue keeps per file: its name parsed, where it is, and
#: what reading it taught.
_Entry = tuple[Distribution, StoredFile, FileFacts]


def normalize_version(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def read_facts(path: str, dist: Distribution, extra_algorithm: str | None) -> tuple[FileFacts, bytes | None]:
    """Read a distribution once: its digests and core metadata."""
    hashers = {
        "sha256": hashlib.sha256(),
        "md5": hashlib.md5(usedforsecurity=False),
        "blake2b_256": hashlib.blake2b(digest_size=32),
    }
    if extra_algorithm and extra_algorithm not in hashers:
        hashers[extra_algorithm] = hashlib.new(extra_algorithm)
    content = None
    with open(path, "rb") as stream:
        stat = os.fstat(stream.fileno())
        if stat.st_size <= _CHUNK:
            # Most files: read once, and their metadata found in these bytes.
            content = stream.read()
            for hasher in hashers.values():
                hasher.update(content)
        else:
            while chunk := stream.read(_CHUNK):
                for hasher in hashers.values():
                    hasher.update(chunk)
    raw = core_metadata.read_metadata_bytes(Path(path), dist.kind, content)
    requires_python = summary = metadata_sha256 = name = None
    if raw is not None:
        parsed = core_metadata.index_fields(raw)
        requires_python, summary = parsed.requires_python, parsed.summary
        metadata_sha256 = hashlib.sha256(raw).hexdigest()
        # Metadata naming another project is ignored: the filename decides.
        if parsed.name and normalize_name(parsed.name) == dist.project:
            name = parsed.name
    facts = FileFacts(
        dist=dist,
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        digests={name: h.hexdigest() for name, h in hashers.items()},
        requires_python=requires_python or None,
        summary=summary or None,
        metadata_sha256=metadata_sha256,
        metadata_name=name,
    )
    return facts, raw


class Catalogue:
    """Projects, releases and files over a :class:`Storage`."""

    def __init__(
        self,
        storage: Storage,
        state: StateStore,
        *,
        hash_algo: str | None = "sha256",
        rescan_on_read: bool = False,
    ) -> None:
        self.storage = storage
        self.state = state
        self.hash_algo = hash_algo
        # The digests pages show; the others are read from the state store
        # when the JSON API asks (60,000 files x two more hex strings is
        # real memory in every worker).
        self._kept_digests = frozenset({"sha256", hash_algo} - {None})
        self._extra_digest = None if hash_algo in (None, "sha256") else hash_algo
        #: The ``simple-dir`` behaviour: look at the directories on every read.
        self.rescan_on_read = rescan_on_read
        self._write_lock = threading.RLock()
        _LIVE.add(self)
        self._revisions = itertools.count(1)
        self._files: dict[str, _Entry] = {}
        self._signatures: dict[str, StoredFile] = {}
        #: Relpaths by project: lists, a third of the size of sets at 10,000 projects.
        self._by_project: dict[NormalizedName, list[str]] = {}
        #: Bumped for each project that changes: keys its rendered pages.
        self._project_revisions: dict[NormalizedName, int] = {}
        self._names: tuple[tuple[NormalizedName, str], ...] | None = None
        #: Computed when first asked for, dropped when the project changes:
        #: the project list shows every one after each upload.
        self._display_names: dict[NormalizedName, str] = {}
        #: The projects whose relpaths are sorted by version: sorted when
        #: first assembled (in place, adding no object for the garbage
        #: collector to scan) and dropped from here when the project
        #: changes, so its HTML page, JSON page and API answers sort it once.
        self._in_order: set[NormalizedName] = set()
        self._yanked_releases: dict[tuple[str, str], str] = {}
        self._yanked_files: dict[tuple[str, str], str] = {}
        self._yank_rows: frozenset = frozenset()
        self._yanked_projects: frozenset[str] = frozenset()
        self._journal_offset = 0
        self._change_count = 0
        #: Bumped on every change: keys the project-list page cache.
        self.generation = 0

    # -- reading --------------------------------------------------------------

    def names(self) -> tuple[tuple[NormalizedName, str], ...]:
        """(normalised name, display name) of every project, sorted: what
        the project list shows, without assembling any project."""
        self.sync()
        names = self._names
        if names is None:
            # Under the lock, or a change applied meanwhile by the watcher
            # could be overwritten by this older list.
            with self._write_lock:
                names = self._names
                if names is None:
                    names = self._names = tuple(
                        (name, self._display_name(name)) for name in sorted(self._by_project)
                    )
        return names

    def projects(self) -> Iterator[Project]:
        """Every project, sorted by name, each assembled as it is reached."""
        for name, _ in self.names():
            project = self._get(name)
            if project is not None:
                yield project

    def revision(self, name: NormalizedName) -> int | None:
        """The revision of the project normalised as ``name``, None if there
        is no such project.  It changes whenever the project does, so a page
        rendered at one revision is current while the revision stays."""
        self.sync()
        return self._project_revisions.get(name)

    def page_inputs(self, name: NormalizedName) -> tuple[int, bytes] | None:
        """The revision of the project normalised as ``name`` and a digest
        of everything its pages are made from, beyond the settings; None if
        there is no such project.  Unlike the revision, the digest is the
        same in every process and after a restart, for the page store."""
        self.sync()
        with self._write_lock:
            relpaths = self._by_project.get(name)
            if not relpaths:
                return None
            return self._project_revisions[name], self._page_inputs(relpaths)

    def project(self, name: str) -> Project | None:
        self.sync()
        return self._get(normalize_name(name))

    def file(self, relpath: str) -> IndexedFile | None:
        """The distribution at ``relpath``, as its project lists it."""
        self.sync()
        entry = self._files.get(relpath)
        # Built alone: a download need not assemble the whole project.
        return None if entry is None else self._indexed(*entry)

    def stored_file(self, relpath: str) -> tuple[StoredFile, FileFacts] | None:
        """The distribution at ``relpath`` and what reading it taught us: all
        a download needs, without the signature and yank lookups of file()."""
        self.sync()
        entry = self._files.get(relpath)
        return None if entry is None else entry[1:]

    def signature(self, relpath: str) -> StoredFile | None:
        self.sync()
        return self._signatures.get(relpath)

    def metadata(self, file: IndexedFile) -> bytes | None:
        """The stored core metadata (a wheel's METADATA, an sdist's PKG-INFO)."""
        if file.facts.metadata_sha256 is None:
            return None
        return self.state.metadata(file.stored.location)

    def all_digests(self, files: Iterable[IndexedFile]) -> dict[str, dict[str, str]]:
        """Every digest known for each of ``files`` (by relpath), including
        those not kept in memory."""
        files = list(files)
        stored = self.state.digests([f.stored.location for f in files])
        return {
            f.relpath: stored.get(f.stored.location) or dict(f.facts.digests) for f in files
        }

    def __len__(self) -> int:
        return len(self._by_project)

    # -- keeping current ------------------------------------------------------

    def load(self) -> None:
        """Build the catalogue from the storage, reading only unknown files."""
        started = time.monotonic()
        with _collector_paused():
            unread = self._load()
        log.info(
            "catalogue of %d projects, %d files ready in %.2f s (%d files read)",
            len(self._by_project), len(self._files), time.monotonic() - started, unread,
        )

    def _load(self) -> int:
        # The journal's end before the scan: a change recorded during the
        # scan is replayed by the first request, not lost.
        journal_offset = self.state.journal_size()
        # Over a large tree, scanned on another core while this one decodes
        # the snapshot, then learns the files sent so far: at 60,000 files
        # the load takes 0.8 s, against 1.1 s when the child sent them all
        # at the end, and a few tenths more scanned here.
        large = self.state.snapshot_size() > _SCAN_AHEAD_SNAPSHOT
        scanned = ScanAhead(self.storage) if large else self.storage.scan()
        known = self.state.snapshot(self._kept_digests)
        from_snapshot = known is not None
        if known is None:
            known = self.state.all_facts(self._kept_digests)
        described = len(known)
        with self._write_lock:
            unknown = self._learn_known(scanned, known)
        unread = [s for s in unknown if not s.relpath.endswith(SIGNATURE_SUFFIX)]
        # Files the snapshot does not describe as they are, and files it
        # describes that are gone.
        stale = len(unread) + max(0, described - len(self._files))
        if unread:
            # Several worker processes may start at once over one tree: the
            # first reads the new files, the others then find them known.
            # Files changed since the snapshot are usually known too.
            with self.state.exclusive():
                known = self.state.facts_for([s.location for s in unread], self._kept_digests)
                unread = [s for s in unread if not self._knows(known.get(s.location), s)]
                known.update(self._read_all(unread))
        with self._write_lock:
            for stored in unknown:
                self._learn(stored, known.get(stored.location), [])
            self._journal_offset = journal_offset
            self._change_count = -1  # the first request replays any later lines
            self._load_yanks()
            self._invalidate(list(self._by_project))
            if not from_snapshot or stale > len(self._files) // _SNAPSHOT_STALE_PART:
                self._save_snapshot()
        return len(unread)

    def _learn_known(self, scanned: Iterable[StoredFile], known: dict[str, FileFacts]) -> list[StoredFile]:
        """Add each scanned file its cached facts still describe to the
        empty catalogue; returns the others (new, changed, signatures) for
        :meth:`_learn`.  What :meth:`_learn` does, in one loop: this runs
        for every file at start."""
        unknown: list[StoredFile] = []
        files, by_project = self._files, self._by_project
        new = tuple.__new__  # the tuple's own constructor, without a Python call
        root, directory = None, ""
        for stored in scanned:
            if stored.root is not root:
                root = stored.root
                directory = stored.location[: -len(stored.relpath)]
            facts = known.get(directory + stored.relpath)  # stored.location, without building it
            dist = facts.dist if facts is not None else None
            if dist is None or not self._knows(facts, stored):
                unknown.append(stored)
                continue
            relpath = stored.relpath
            if relpath == dist.filename:
                relpath = dist.filename
            elif stored.filename != dist.filename:
                unknown.append(stored)
                continue
            # One object for each value kept twice, as in _learn().
            stored = new(StoredFile, (root, relpath, facts.size, facts.mtime_ns))
            files[relpath] = (dist, stored, facts)
            members = by_project.get(dist.project)
            if members is None:
                by_project[dist.project] = [relpath]
            else:
                members.append(relpath)
        return unknown

    def _save_snapshot(self) -> None:
        entries = ((stored.location, facts) for _, stored, facts in self._files.values())
        self.state.save_snapshot(entries, self._kept_digests)

    def _read_all(self, unread: list[StoredFile]) -> dict[str, FileFacts]:
        learnt: dict[str, FileFacts] = {}
        batch: list[tuple[str, FileFacts, bytes | None]] = []
        for count, stored in enumerate(unread, 1):
            dist = _parse(stored.filename)
            if dist is None:
                continue
            read = self._read(stored, dist)
            if read is None:
                continue
            batch.append(read)
            learnt[stored.location] = self._trim(read[1])
            if count % _PROGRESS_EVERY == 0:
                self.state.save_many_facts(batch)
                batch.clear()
                log.info("read %d of %d new files", count, len(unread))
        self.state.save_many_facts(batch)
        return learnt

    def sync(self) -> None:
        """Catch up with changes made by other processes (or, for the
        ``simple-dir`` behaviour, with the directories themselves)."""
        if self.rescan_on_read:
            self.rescan()
            return
        # Read before the journal: a change recorded meanwhile moves the
        # count again, and the next request replays it.
        count = self.state.change_count()
        if count == self._change_count:
            return
        with self._write_lock:
            if count == self._change_count:
                return  # another thread applied it while this one waited
            changes, self._journal_offset = self.state.changes_since(self._journal_offset)
            rescanned = self._apply(changes)
            # Noted only now: a thread that finds the count current must
            # find its changes applied, not still being applied.
            self._change_count = -1 if rescanned else count

    def rescan(self, under: str = "") -> list[str]:
        """Reconcile with the storage: learn new files, forget removed ones;
        only below the directory ``under`` when it is given, which costs
        what that directory holds, not what the index does.  Returns the
        relpaths that changed."""
        journal_offset = None if under else self.state.journal_size()  # as in _load()
        found = {s.relpath: s for s in self.storage.scan(under)}
        inside = f"{under}/" if under else ""
        with self._write_lock:
            known = itertools.chain(self._files, self._signatures)
            vanished = {relpath for relpath in known if relpath.startswith(inside)} - set(found)
            changed = [s.relpath for s in found.values() if not self._is_current(s)]
            for relpath in itertools.chain(vanished, changed):
                self.refresh(relpath)
            if journal_offset is not None:  # every line recorded before it began is applied
                self._journal_offset = journal_offset
                self._change_count = -1  # as in _load()
                self._load_yanks()
        return sorted(vanished) + changed

    def refresh(self, relpath: str) -> bool:
        """Look at one path again: it was created, changed or removed.
        Returns whether the catalogue changed."""
        stored = self.storage.stat(relpath)
        with self._write_lock:
            if stored is not None and self._is_current(stored):
                return False  # as known: no page to render again
            touched = self._forget(relpath)
            if stored is not None:
                fresh: list[tuple[str, FileFacts, bytes | None]] = []
                touched |= self._learn(stored, self.state.facts(stored.location, self._kept_digests), fresh)
                self.state.save_many_facts(fresh)
            self._invalidate(touched)
            return bool(touched)

    def notice(self, relpaths: Iterable[str] | None, directories: Iterable[str] = ()) -> None:
        """Changes the file watcher saw on disk: the files ``relpaths`` and
        everything below ``directories`` (created, removed or moved), or
        everything when ``relpaths`` is None.  They go into the journal,
        which tells every worker process at once: workers forked from the
        process that watches have no watcher of their own, and where each
        watches for itself, they see a change at slightly different times,
        so a client sent to another worker by its next request (pip
        downloading what a page listed) would miss the file there."""
        if relpaths is None:
            lines = _journal_lines(self.rescan(), Change("rescan", "*"))
        else:
            trees = _outermost(directories)
            files = [r for r in sorted(set(relpaths)) if not _below(r, trees)]
            changed = [relpath for relpath in files if self.refresh(relpath)]
            in_trees = [relpath for tree in trees for relpath in self.rescan(tree)]
            lines = _journal_lines(changed, Change("rescan", "*")) + _journal_lines(
                in_trees, *(Change("tree", tree) for tree in trees)
            )
        if lines:
            self.state.record(*lines)
        # Then catch up with the journal (only now: replaying it first would
        # apply this very change unrecorded).  The process that forks the
        # workers serves no request that would, and a worker it forks later
        # starts from where it is.
        self.sync()

    # -- writing --------------------------------------------------------------

    def store(self, relpath: str, source: BinaryIO, *, overwrite: bool) -> IndexedFile | StoredFile:
        """Store an uploaded file and list it at once, in every worker."""
        stored = self.storage.write(relpath, source, overwrite=overwrite)
        self.refresh(stored.relpath)
        self.state.record(Change("file", stored.relpath))
        return self.file(stored.relpath) or stored

    def remove(self, relpath: str) -> None:
        self.storage.remove(relpath)
        self.refresh(relpath)
        self.state.record(Change("file", relpath))

    def yank(self, project: str, version: str, filename: str = "", reason: str = "") -> None:
        self._require(project, version, filename)
        self.state.yank(normalize_name(project), normalize_version(version), filename, reason)
        self._yanks_changed()

    def unyank(self, project: str, version: str, filename: str = "") -> bool:
        self._require(project, version, filename)
        done = self.state.unyank(normalize_name(project), normalize_version(version), filename)
        self._yanks_changed()
        return done

    # -- internals ------------------------------------------------------------

    def _require(self, project: str, version: str, filename: str) -> None:
        found = self.project(project)
        files = found.release(version) if found else ()
        if not files:
            raise NotFound(f"no release {version} of project {project}")
        if filename and filename not in {f.filename for f in files}:
            raise NotFound(f"release {version} of {project} has no file {filename}")

    def _yanks_changed(self) -> None:
        with self._write_lock:
            self.state.record(Change("yank", "*"))
            self._load_yanks()

    def _apply(self, changes: list[Change]) -> bool:
        """Apply journal lines; returns whether that took a rescan (after
        which the lines recorded since it began are replayed)."""
        if any(c.kind == "rescan" for c in changes):
            self.rescan()
            return True
        trees = _outermost(c.subject for c in changes if c.kind == "tree")
        for tree in trees:
            self.rescan(tree)
        # A path below a tree just rescanned is as it is on disk now, as in notice().
        paths = {c.subject for c in changes if c.kind == "file" and not _below(c.subject, trees)}
        for relpath in paths:
            self.refresh(relpath)
        if any(c.kind == "yank" for c in changes):
            self._load_yanks()
        return False

    def _is_current(self, stored: StoredFile) -> bool:
        """Whether the catalogue has ``stored`` as it now is on disk."""
        if stored.relpath.endswith(SIGNATURE_SUFFIX):
            known = self._signatures.get(stored.relpath)
            return known is not None and known.root == stored.root
        entry = self._files.get(stored.relpath)
        return entry is not None and entry[1].root == stored.root and self._knows(entry[2], stored)

    def _read(
        self, stored: StoredFile, dist: Distribution
    ) -> tuple[str, FileFacts, bytes | None] | None:
        """(cache key, facts, core metadata) of a file read now; None if it
        cannot be read."""
        try:
            facts, raw = read_facts(stored.location, dist, self.hash_algo)
        except OSError as exc:
            log.warning("cannot read %s: %s", stored.path, exc)
            return None
        return stored.location, facts, raw

    def _trim(self, facts: FileFacts) -> FileFacts:
        kept = Digests((k, v) for k, v in facts.digests.items() if k in self._kept_digests)
        return facts._replace(digests=kept)

    def _knows(self, facts: FileFacts | None, stored: StoredFile) -> bool:
        """Whether ``facts`` still describe the stored file."""
        if facts is None:
            return stored.relpath.endswith(SIGNATURE_SUFFIX)  # nothing to know
        return (
            facts.size == stored.size
            and facts.mtime_ns == stored.mtime_ns
            and (self._extra_digest is None or self._extra_digest in facts.digests)
        )

    def _learn(
        self,
        stored: StoredFile,
        cached: FileFacts | None,
        fresh: list[tuple[str, FileFacts, bytes | None]],
    ) -> set[NormalizedName]:
        """Add one stored file; returns the projects it touched."""
        if stored.relpath.endswith(SIGNATURE_SUFFIX):
            self._signatures[stored.relpath] = stored
            return {_project_of(stored.relpath[: -len(SIGNATURE_SUFFIX)])} - {None}  # type: ignore[return-value]
        facts = cached
        # The cached parse of the name, unless the cache describes another file.
        dist = facts.dist if facts is not None else None
        if dist is None or (dist.filename != stored.relpath and dist.filename != stored.filename):
            dist = _parse(stored.filename)
        if dist is None:
            return set()
        if not self._knows(facts, stored):
            read = self._read(stored, dist)
            if read is None:
                return set()
            fresh.append(read)
            facts = self._trim(read[1])
        if stored.relpath is not dist.filename or stored.size is not facts.size:
            # The file may have been written since it was listed: the facts
            # describe what was read.  And one object for each value kept
            # twice (a top-level file's path is its name), at 60,000 files.
            relpath = dist.filename if stored.relpath == dist.filename else stored.relpath
            stored = StoredFile(stored.root, relpath, facts.size, facts.mtime_ns)
        self._files[stored.relpath] = (dist, stored, facts)
        members = self._by_project.get(dist.project)
        if members is None:
            self._by_project[dist.project] = [stored.relpath]
        elif stored.relpath not in members:
            members.append(stored.relpath)
        return {dist.project}

    def _forget(self, relpath: str) -> set[NormalizedName]:
        if self._signatures.pop(relpath, None) is not None:
            project = _project_of(relpath[: -len(SIGNATURE_SUFFIX)])
            return {project} if project else set()
        entry = self._files.pop(relpath, None)
        if entry is None:
            return set()
        members = self._by_project.get(entry[0].project, [])
        if relpath in members:
            members.remove(relpath)
        return {entry[0].project}

    def _invalidate(self, names: Iterable[NormalizedName]) -> None:
        """Forget the assembled form of changed projects; they are built
        again when next asked for."""
        changed = False
        for name in names:
            changed = True
            self._display_names.pop(name, None)
            self._in_order.discard(name)
            if self._by_project.get(name):
                self._project_revisions[name] = next(self._revisions)
            else:
                self._by_project.pop(name, None)
                self._project_revisions.pop(name, None)
        if changed:
            self._names = None
            self.generation = next(self._revisions)

    def _get(self, name: NormalizedName) -> Project | None:
        # Under the lock, so no change is half applied to what is read.
        with self._write_lock:
            relpaths = self._by_project.get(name)
            if not relpaths:
                return None
            return self._assemble(name, relpaths)

    def _display_name(self, name: NormalizedName) -> str:
        shown = self._display_names.get(name)
        if shown is None:
            # The same in every worker process, so their pages are identical;
            # no version parsing, since this runs for every project of the list.
            entries = [self._files[r] for r in self._by_project[name]]
            sdists = [e for e in entries if e[0].kind == "sdist"]
            dist, _, facts = max(sdists or entries, key=lambda e: e[0].filename)
            shown = self._display_names[name] = facts.metadata_name or dist.name
        return shown

    def _assemble(self, name: NormalizedName, relpaths: list[str]) -> Project:
        if name not in self._in_order:
            _sort_by_version(relpaths, self._files)
            self._in_order.add(name)
        files = tuple([self._indexed(*self._files[relpath]) for relpath in relpaths])
        return Project(name, self._display_name(name), files, self._project_revisions[name])

    def _page_inputs(self, relpaths: list[str]) -> bytes:
        # Every field of the project's IndexedFiles: the name parsed, where
        # the file is, and its size and modification time, which stand for
        # its facts (as they do when a start takes facts from the snapshot),
        # its signature and its yank; the display name is made from those.
        # Sorted by path, as the versions may not be sorted yet.  Written
        # for speed: after a restart, each worker's first request for each
        # page runs this instead of rendering it.
        files, signatures, yanked_projects = self._files, self._signatures, self._yanked_projects
        lines = []
        for relpath in sorted(relpaths):
            dist, stored, _ = files[relpath]
            line = f"{stored.root}\0{relpath}\0{stored.size}\0{stored.mtime_ns}"
            if signatures and relpath + SIGNATURE_SUFFIX in signatures:
                line += "\0signed"
            if dist.project in yanked_projects:
                line += f"\0yanked {self._yank_reason(dist.project, dist)!r}"
            lines.append(line)
        text = "\n".join(lines).encode("utf-8", "surrogateescape")
        return hashlib.blake2b(text, digest_size=16).digest()

    def _indexed(self, dist: Distribution, stored: StoredFile, facts: FileFacts) -> IndexedFile:
        # A page's first request builds one of these per file: tuple.__new__
        # rather than the named tuple's Python constructor, and no name built
        # in an index without signatures (the common case).
        signed = bool(self._signatures) and stored.relpath + SIGNATURE_SUFFIX in self._signatures
        yanked = self._yank_reason(dist.project, dist)
        return tuple.__new__(IndexedFile, (dist, stored, facts, signed, yanked))

    def _yank_reason(self, name: str, dist: Distribution) -> str | None:
        if name not in self._yanked_projects:
            return None  # the common case, without parsing the version
        reason = self._yanked_files.get((name, dist.filename))
        if reason is None:
            reason = self._yanked_releases.get((name, normalize_version(dist.version)))
        return reason

    def _load_yanks(self) -> None:
        rows = frozenset(self.state.yanks())
        if rows == self._yank_rows:
            return
        releases: dict[tuple[str, str], str] = {}
        files: dict[tuple[str, str], str] = {}
        for yank in rows:
            if yank.filename:
                files[(yank.project, yank.filename)] = yank.reason
            else:
                releases[(yank.project, yank.version)] = yank.reason
        touched = {y.project for y in rows ^ self._yank_rows}
        self._yanked_releases, self._yanked_files, self._yank_rows = releases, files, rows
        self._yanked_projects = frozenset(y.project for y in rows)
        self._invalidate([p for p in touched if p in self._by_project])  # type: ignore[misc]


#: Every catalogue of this process, for the fork handlers below.
_LIVE: weakref.WeakSet[Catalogue] = weakref.WeakSet()
_held_at_fork: list[threading.RLock] = []


def _hold_for_fork() -> None:
    # The server forks its workers from the process that built the
    # catalogue, whose watcher thread may be applying a change: a child
    # forked halfway through would keep half a change, and a lock that no
    # thread of its own will ever release.
    for catalogue in list(_LIVE):
        catalogue._write_lock.acquire()
        _held_at_fork.append(catalogue._write_lock)


def _release_after_fork() -> None:
    while _held_at_fork:
        _held_at_fork.pop().release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_hold_for_fork, after_in_parent=_release_after_fork, after_in_child=_release_after_fork
    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    # Loading creates a few objects per file and frees almost none, so the
    # cyclic garbage collector would walk the growing heap again and again
    # for nothing: a fifth of the load time at 60,000 files.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            # Straight into the oldest generation, where they belong: else
            # the first collection after loading walks them all as young
            # objects (0.1-0.2 s at 60,000 files).  Not when another part
            # of the program has frozen objects, which this would thaw.
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


def _journal_lines(changed: list[str], *instead: Change) -> tuple[Change, ...]:
    """The journal lines that tell other processes of ``changed``: each
    path, or when there are many (a whole tree copied in), the lines
    ``instead``, which cost a worker one scan rather than a request spent
    replaying thousands of paths."""
    if len(changed) > _SHARED_CHANGES_MAX:
        return instead
    return tuple(Change("file", relpath) for relpath in changed)


def _outermost(directories: Iterable[str]) -> list[str]:
    """``directories`` without those inside another of them."""
    kept: list[str] = []
    for directory in sorted(set(directories)):  # a parent sorts before its children
        if not _below(directory, kept):
            kept.append(directory)
    return kept


def _below(relpath: str, directories: Iterable[str]) -> bool:
    return any(relpath.startswith(directory + "/") for directory in directories)


def _sort_by_version(relpaths: list[str], files: Mapping[str, _Entry]) -> None:
    """Sort ``relpaths`` as ``Distribution.sort_key`` orders their files,
    comparing versions once per distinct version, not once per pair."""
    dists = {relpath: files[relpath][0] for relpath in relpaths}
    ranks = version_ranks({dist.version for dist in dists.values()})
    relpaths.sort(key=lambda r: (ranks[dists[r].version], dists[r].filename))


def _parse(filename: str) -> Distribution | None:
    try:
        return parse_filename(filename)
    except ValueError:
        return None


def _project_of(filename_or_relpath: str) -> NormalizedName | None:
    try:
        return parse_filename(filename_or_relpath.rpartition("/")[2]).project
    except ValueError:
        return None


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def iter_search_entries(catalogue: Catalogue) -> Iterator[tuple[str, str, str]]:
    """(name, version, summary) of the latest release of every project."""
    for project in catalogue.projects():
        version = project.latest_version
        summary = next((f.facts.summary for f in project.release(version) if f.facts.summary), "")
        yield project.display_name, version, summary or ""
