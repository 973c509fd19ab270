"""gzip of rendered pages: the bytes it gives, and that compressing (and
hashing) a page keeps the interpreter lock."""

from __future__ import annotations

import gzip
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pypiserver.web import compression
from pypiserver.web.responses import Page


def _page_like(size: int) -> bytes:
    """HTML of about ``size`` bytes, as repetitive as a project page."""
    line = b'<a href="../../packages/demo-%d.0-py3-none-any.whl#sha256=%064x">demo-%d.0</a><br>\n'
    lines = b"".join(line % (i, i * 7919, i) for i in range(size // 100 + 1))
    return lines[:size]


@pytest.mark.parametrize(
    "size", [0, 1, 600, 2047, 2048, compression.HELD_MAX, compression.HELD_MAX + 1, 400_000]
)
@pytest.mark.parametrize("kind", ["page", "random"])
def test_gzip_gives_what_gzip_readers_read_back(size, kind):
    body = _page_like(size) if kind == "page" else os.urandom(size)
    zipped = compression.gzip(body)
    assert zipped[:2] == b"\x1f\x8b"
    assert gzip.decompress(zipped) == body
    assert compression.gunzip(zipped) == body
    if kind == "page" and size >= 2048:
        assert len(zipped) < size / 2


def test_threads_compressing_at_once_each_get_their_own_body():
    # Switching threads as often as possible interleaves them between the
    # calls into zlib: the one stream must still serve one body at a time.
    bodies = [_page_like(1000 + 37 * i) + b"%d" % i for i in range(64)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(compression.gzip, bodies * 20))
    finally:
        sys.setswitchinterval(old)
    assert [gzip.decompress(z) for z in results] == bodies * 20


def test_a_page_is_hashed_and_compressed_without_letting_another_thread_run():
    body = _page_like(20_000)  # over hashlib's 2 KB, under HELD_MAX
    counted = [0]
    stop = [False]

    def spin() -> None:
        while not stop[0]:
            counted[0] += 1

    old = sys.getswitchinterval()
    # A thread that wants the lock then waits a second before forcing a
    # switch: only a release by Page() itself could let the spinner count.
    sys.setswitchinterval(1.0)
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        while counted[0] == 0:
            time.sleep(0.001)
        before = counted[0]
        pages = [Page(body, "text/html; charset=utf-8") for _ in range(20)]
        assert counted[0] == before
    finally:
        stop[0] = True
        spinner.join()
        sys.setswitchinterval(old)
    assert gzip.decompress(pages[0].gzipped) == body
    assert len({p.etag for p in pages}) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_process_forked_while_another_thread_compresses_can_compress():
    if compression._held is None:
        pytest.skip("no shared zlib")
    body = _page_like(3000)
    with compression._held._lock:  # as a thread in the middle of a page
        pid = os.fork()
        if pid == 0:  # the child: give up after 5 s rather than hang
            import signal

            signal.alarm(5)
            os._exit(0 if gzip.decompress(compression.gzip(body)) == body else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
