"""Keeps the catalogue current with files that change on disk by other
means than an upload: ``scp``, ``cp``, ``rm``, another process.

Watchdog reports events on its own thread; they are queued and applied by one
worker thread, after a short pause that lets a burst of events for the same
file (create, many writes, close) collapse into one look at it.  Requests
never wait for the watcher and the watcher never waits for requests.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    EventsLostEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from .index import Catalogue
from .storage import is_served_name

__all__ = ["Watcher"]

log = logging.getLogger(__name__)

#: How long to wait for more events before acting on a burst.
SETTLE_SECONDS = 0.05
#: Queued when the system dropped events (its queue overflowed): only a look
#: at everything finds what they said.
_RESCAN = "\0rescan"
#: What changes the catalogue.  Not opens and reads (every download is one:
#: at thousands a second, their events alone would keep a core busy), nor a
#: directory's "modified" (every file added is one, and each would rescan).
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent, FileMovedEvent,
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent, EventsLostEvent,
]  # fmt: skip


class Watcher(FileSystemEventHandler):
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self._roots = tuple(Path(os.path.abspath(r)) for r in catalogue.storage.roots)
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._observer = Observer()
        self._worker = threading.Thread(target=self._run, name="pypiserver-watcher", daemon=True)

    def watch(self) -> None:
        """Start receiving events; they wait in the queue until :meth:`start`."""
        if self._observer.is_alive():
            return
        for root in self._roots:
            self._observer.schedule(self, str(root), recursive=True, event_filter=_EVENTS)
        self._observer.daemon = True
        self._observer.start()

    def start(self) -> None:
        """Apply the changes queued since :meth:`watch` now, before the
        caller serves anything, then each change as it comes."""
        self.watch()
        pending: set[str] = set()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                pending.add(item)
        if pending:
            self._apply(pending)
        self._worker.start()

    def stop(self) -> None:
        self._observer.stop()
        self._queue.put(None)
        if self._observer.is_alive():
            self._observer.join(timeout=5)

    # watchdog calls this for every event, on its thread.
    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write") or (
            event.is_directory and event.event_type == "modified"
        ):
            return  # filtered out already where the platform allows
        if isinstance(event, EventsLostEvent):
            self._queue.put(_RESCAN)
            return
        paths = [event.src_path]
        if getattr(event, "dest_path", ""):
            paths.append(event.dest_path)
        for path in paths:
            relpath = self._relpath(os.fsdecode(path))
            if relpath is None:
                continue
            if event.is_directory:
                # Queued as a directory (files never end with "/"): all of it
                # is looked at, for files may land in a new directory before
                # its watch is added, and a removed one's go unreported.
                self._queue.put(relpath + "/")
            elif is_served_name(relpath.rpartition("/")[2]):
                self._queue.put(relpath)

    def _relpath(self, path: str) -> str | None:
        for root in self._roots:
            try:
                parts = Path(path).relative_to(root).parts
            except ValueError:
                continue
            if not parts or any(part.startswith(".") for part in parts):
                return None
            return "/".join(parts)
        return None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = {item}
            while True:
                try:
                    item = self._queue.get(timeout=SETTLE_SECONDS)
                except queue.Empty:
                    break
                if item is None:
                    return
                batch.add(item)
            self._apply(batch)

    def _apply(self, batch: set[str]) -> None:
        files = {item for item in batch if not item.endswith("/")}
        directories = {item[:-1] for item in batch if item.endswith("/")}
        try:
            self.catalogue.notice(None if _RESCAN in batch else files, directories)
        except Exception:  # a bad file must not stop the watcher
            log.exception("could not apply file changes %s", sorted(batch))
