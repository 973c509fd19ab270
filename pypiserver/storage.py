"""Where the bytes of distributions live.

:class:`Storage` is the small interface the index needs; :class:`DirectoryStorage`
keeps files in one or more directory trees, the first of which receives
uploads.  Files and directories whose names start with a dot are never
listed: that is where temporary upload files and the server's own state live.
"""

from __future__ import annotations

import errno
import logging
import marshal
import os
import struct
import tempfile
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO, Iterator, NamedTuple, Protocol

from .distributions import SDIST_SUFFIXES, SIGNATURE_SUFFIX

__all__ = [
    "DirectoryStorage",
    "FileExists",
    "ScanAhead",
    "Storage",
    "StoredFile",
    "UnsafePath",
    "is_served_name",
]

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


class UnsafePath(ValueError):
    """A relative path that would leave the package directories or name a
    hidden file."""


class FileExists(FileExistsError):
    """A file of that name is already stored and overwriting is not allowed."""


class StoredFile(NamedTuple):
    root: Path
    #: The path below its root, with "/" separators: the file's URL path.
    relpath: str
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        return self.root / self.relpath

    @property
    def location(self) -> str:
        """The absolute path as a string: the key of the digest cache."""
        return f"{self.root}{os.sep}{self.relpath}" if os.sep == "/" else str(self.path)

    @property
    def filename(self) -> str:
        return self.relpath.rpartition("/")[2]


class Storage(Protocol):
    roots: tuple[Path, ...]

    def scan(self, under: str = "") -> Iterator[StoredFile]:
        """Every file named like a distribution or signature, first root
        first; only those below the directory ``under`` when it is given."""

    def stat(self, relpath: str) -> StoredFile | None:
        """The stored file at ``relpath`` in the first root holding it."""

    def locate(self, path: Path) -> StoredFile | None:
        """The stored file for an absolute path a file watcher reported."""

    def write(self, relpath: str, source: BinaryIO, *, overwrite: bool) -> StoredFile:
        """Store ``source`` at ``relpath`` in the upload root, atomically."""

    def remove(self, relpath: str) -> None:
        """Remove the file at ``relpath`` from every root holding it."""


_SUFFIXES = tuple(
    suffix + signed
    for suffix in (".whl", ".egg", *SDIST_SUFFIXES)
    for signed in ("", SIGNATURE_SUFFIX)
)


def is_served_name(filename: str) -> bool:
    """Whether a directory entry of this name may be part of the index: not
    hidden, and ending like a distribution or its signature.  The catalogue
    parses the name in full and skips what does not parse."""
    return not filename.startswith(".") and filename.lower().endswith(_SUFFIXES)


class DirectoryStorage:
    """Distributions kept in directory trees on a local file system."""

    def __init__(self, roots: tuple[Path, ...]) -> None:
        self.roots = tuple(Path(os.path.abspath(root)) for root in roots)

    def scan(self, under: str = "") -> Iterator[StoredFile]:
        parts = under.split("/") if under else []
        if any(part.startswith(".") or not part for part in parts):
            return  # hidden, or not below the roots: nothing is served there
        prefix = "".join(f"{part}/" for part in parts)
        if len(self.roots) == 1:
            yield from _walk(self.roots[0], os.path.join(self.roots[0], *parts), prefix)
            return
        seen: set[str] = set()
        for root in self.roots:
            for stored in _walk(root, os.path.join(root, *parts), prefix):
                # A file present in two roots is served from the first one.
                if stored.relpath not in seen:
                    seen.add(stored.relpath)
                    yield stored

    def stat(self, relpath: str) -> StoredFile | None:
        parts = _safe_parts(relpath)
        for root in self.roots:
            stored = _stat(root, "/".join(parts))
            if stored is not None:
                return stored
        return None

    def locate(self, path: Path) -> StoredFile | None:
        path = Path(os.path.abspath(path))
        for root in self.roots:
            try:
                relative = path.relative_to(root)
            except ValueError:
                continue
            parts = relative.parts
            if not parts or any(part.startswith(".") for part in parts):
                return None
            if not is_served_name(parts[-1]):
                return None
            return self.stat("/".join(parts))
        return None

    def write(self, relpath: str, source: BinaryIO, *, overwrite: bool) -> StoredFile:
        parts = _safe_parts(relpath)
        root = self.roots[0]
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The temporary file is a dot-file in the target directory, so it is
        # never listed and the final rename stays on one file system.
        fd, temp_name = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as temp:
                _copy(source, temp)
                temp.flush()
                os.fsync(temp.fileno())
            os.chmod(temp_name, 0o644)
            _publish(temp_name, target, overwrite=overwrite)
        finally:
            if os.path.exists(temp_name):
                os.unlink(temp_name)
        stored = _stat(root, "/".join(parts))
        assert stored is not None
        return stored

    def remove(self, relpath: str) -> None:
        parts = _safe_parts(relpath)
        for root in self.roots:
            try:
                os.unlink(root.joinpath(*parts))
            except FileNotFoundError:
                pass


class ScanAhead:
    """``storage.scan()``, begun at once in a forked child process and read
    back when iterated: on a second core, the scan's tens of thousands of
    stat() calls take place while this process does other work, and the
    files already scanned are given while the child scans the rest.

    The files are those ``storage.scan()`` gives, in its order.  Where
    there is no fork(), they are scanned here when iterated instead; and if
    the child fails, the files it did not send are scanned here.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._child = _start_scan(storage)

    def __iter__(self) -> Iterator[StoredFile]:
        child, self._child = self._child, None
        if child is None:
            yield from self._storage.scan()
            return
        roots, new = self._storage.roots, tuple.__new__
        sent: list[str] = []
        # Frame by frame, as the child sends them: this process learns a
        # frame's files while the child scans the next.  (Holding 60,000
        # rows would also leave the heap fragmented for good: see _walk.)
        for frame in child:
            for root, relpath, size, mtime_ns in marshal.loads(frame):
                sent.append(relpath)
                yield new(StoredFile, (roots[root], relpath, size, mtime_ns))
        if not child.complete:
            log.warning("scanning in a child process failed; scanning the rest here")
            done = set(sent)
            yield from (s for s in self._storage.scan() if s.relpath not in done)

    def __del__(self) -> None:
        # Never iterated (an error came first): reap the child all the same.
        child, self._child = self._child, None
        if child is not None:
            child.abandon()


class _ChildScan:
    """The frames of rows a scanning child sends through a pipe."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd
        #: Whether the child sent the end of a complete scan and exited well.
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        ended = False
        try:
            with os.fdopen(self.fd, "rb") as pipe:
                while len(header := pipe.read(_FRAME_LENGTH.size)) == _FRAME_LENGTH.size:
                    (length,) = _FRAME_LENGTH.unpack(header)
                    if length == 0:
                        ended = True
                        break
                    frame = pipe.read(length)
                    if len(frame) != length:
                        break  # the child stopped in the middle of a frame
                    yield frame
        finally:
            self.complete = self._exited_well() and ended

    def abandon(self) -> None:
        os.close(self.fd)  # its next write fails, and it exits
        self._exited_well()

    def _exited_well(self) -> bool:
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped by a SIGCHLD handler of the embedding program
            return True  # the end of the frames tells
        return status == 0


#: Each frame of rows is marshalled after its length; a length of 0 ends a
#: complete scan.
_FRAME_LENGTH = struct.Struct("<I")
_ROWS_PER_FRAME = 1000
#: Room for the frames of about 15,000 files, which a child scanning 60,000
#: sends before the parent, decoding the facts snapshot meanwhile, reads.
#: Measured at 60,000 files on 2 cores, both 64 KB and 8 MB loaded slower.
_PIPE_SIZE = 1024 * 1024


def _start_scan(storage: Storage) -> _ChildScan | None:
    """A child process scanning ``storage``; None where none can be had."""
    if not hasattr(os, "fork"):
        return None
    read, write = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or a lower limit: the child waits for the reader more often
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:
        os.close(read)
        _scan_into(storage, write)  # never returns
    os.close(write)
    return _ChildScan(pid, read)


def _scan_into(storage: Storage, fd: int) -> None:
    status = 1
    try:
        index = {id(root): n for n, root in enumerate(storage.roots)}
        with os.fdopen(fd, "wb") as out:
            rows = []
            for s in storage.scan():
                rows.append((index[id(s.root)], s.relpath, s.size, s.mtime_ns))
                if len(rows) == _ROWS_PER_FRAME:
                    _send(out, rows)
            _send(out, rows)
            out.write(_FRAME_LENGTH.pack(0))
        status = 0
    finally:
        os._exit(status)


def _send(out: BinaryIO, rows: list) -> None:
    if rows:
        frame = marshal.dumps(rows)
        out.write(_FRAME_LENGTH.pack(len(frame)) + frame)
        out.flush()
        rows.clear()


def _safe_parts(relpath: str) -> list[str]:
    parts = relpath.replace("\\", "/").split("/")
    if not parts or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise UnsafePath(f"{relpath!r} is not a path inside the package directories")
    if any("\x00" in part or ":" in part for part in parts):
        raise UnsafePath(f"{relpath!r} contains characters not allowed in a file name")
    return parts


def _walk(root: Path, directory: str, prefix: str) -> Iterator[StoredFile]:
    """The files below ``directory``, whose relpaths start with ``prefix``."""
    # Plain strings and os.scandir: this runs over every file at start-up.
    try:
        scanner = os.scandir(directory)
    except OSError:
        return
    # One entry at a time, in the directory's order: holding (or sorting)
    # 60,000 entries would leave the heap fragmented for good.
    with scanner:
        try:
            yield from _files_in(root, scanner, prefix)
        except OSError:  # the directory went away while being read
            return


def _files_in(root: Path, scanner: Iterator[os.DirEntry], prefix: str) -> Iterator[StoredFile]:
    new = tuple.__new__  # the tuple's own constructor, without a Python call
    for entry in scanner:
        name = entry.name
        if name.startswith("."):
            continue
        try:
            if entry.is_dir():
                yield from _walk(root, entry.path, f"{prefix}{name}/")
            elif is_served_name(name) and entry.is_file():
                stat = entry.stat()
                yield new(StoredFile, (root, prefix + name, stat.st_size, stat.st_mtime_ns))
        except OSError:
            continue


def _stat(root: Path, relpath: str) -> StoredFile | None:
    try:
        stat = os.stat(root / relpath)
    except OSError:
        return None
    # From the one stat, not a second through os.path.isfile(): every
    # worker looks again at each change the journal reports.
    if not S_ISREG(stat.st_mode):
        return None
    return StoredFile(root, relpath, stat.st_size, stat.st_mtime_ns)


def _copy(source: BinaryIO, target: BinaryIO) -> None:
    while chunk := source.read(_CHUNK):
        target.write(chunk)


def _publish(temp_name: str, target: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(temp_name, target)
        return
    # A hard link fails if the name exists, so two concurrent uploads of the
    # same filename cannot both win and no check-then-write race exists.
    try:
        os.link(temp_name, target)
    except FileExistsError:
        raise FileExists(f"{target.name} already exists") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
            raise
        if target.exists():
            raise FileExists(f"{target.name} already exists") from None
        os.replace(temp_name, target)
