"""gzip for rendered pages, without letting go of the interpreter.

A worker answers from many threads, and ``zlib.compress`` (like ISA-L's and
``hashlib``'s functions on more than 2 KB) releases the interpreter lock for
the time it compresses.  For a project page of a few KB that is some 20 us;
getting the lock back, while the other threads pass it between their own
requests, takes far longer.  Side by side at 10,000 projects (two runs,
of 4 and 6 rounds), compressing with the lock held raised the median first
pass over every page by 23-70% and the pass after it by 30-40%, although
zlib takes twice ISA-L's time for such a page.

So small bodies go through the system's zlib called by ctypes.PyDLL, which
holds the lock, through one deflate stream per process that is reset for
each body.  Large bodies (the project list) still use ISA-L or zlib, and let
the other threads run meanwhile.  Where no shared zlib can be loaded, every
body does.

Decompressing, for the clients that do not accept gzip, was tried the same
way and was slower (6,600-10,400 against 9,300-13,200 req/s, four rounds):
it stays with the zlib module.
"""

from __future__ import annotations

import ctypes
import os
import threading
import zlib

try:
    # ISA-L's deflate, where its wheels exist (see setup.cfg): a third of
    # zlib's time for a page of a few KB, in the same gzip format.
    from isal import isal_zlib
except ImportError:  # pragma: no cover - a platform without its wheels
    isal_zlib = None

__all__ = ["HELD_MAX", "gunzip", "gzip"]

#: Bodies up to this size are compressed with the interpreter lock held.
HELD_MAX = 64 * 1024
#: zlib's window-bits value that reads and writes the gzip format.
_GZIP_WBITS = 31
_Z_OK, _Z_STREAM_END, _Z_FINISH, _Z_DEFLATED, _Z_DEFAULT_STRATEGY = 0, 1, 4, 8, 0
#: Level 1 compresses a 2 KB page about as well as level 6 (730 against 709
#: bytes on average over 400 project pages), in less time.
_LEVEL = 1
_MEM_LEVEL = 6
#: Names of the shared zlib, tried in turn; the first is the soname on Linux.
_LIBZ_NAMES = ("libz.so.1", "libz.dylib", "libz.so")


class _ZStream(ctypes.Structure):
    """zlib's ``z_stream``, as zlib.h declares it.  deflateInit2_ refuses a
    stream of any other size, so a mismatch would fall back to ISA-L."""

    _fields_ = [
        ("next_in", ctypes.c_char_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


class _HeldDeflate:
    """One deflate stream writing gzip, driven with the interpreter lock held."""

    def __init__(self, libz: ctypes.PyDLL) -> None:
        stream_p = ctypes.POINTER(_ZStream)
        libz.zlibVersion.restype = ctypes.c_char_p
        libz.deflateInit2_.argtypes = [stream_p, *[ctypes.c_int] * 5, ctypes.c_char_p, ctypes.c_int]
        libz.deflateReset.argtypes = [stream_p]
        libz.deflateBound.argtypes = [stream_p, ctypes.c_ulong]
        libz.deflateBound.restype = ctypes.c_ulong
        libz.deflate.argtypes = [stream_p, ctypes.c_int]
        self._libz = libz
        self._stream = _ZStream()
        # The lock is for the rare forced switch between two threads'
        # calls, which would otherwise interleave on the one stream.
        self._lock = threading.Lock()
        status = libz.deflateInit2_(
            ctypes.byref(self._stream), _LEVEL, _Z_DEFLATED, _GZIP_WBITS, _MEM_LEVEL,
            _Z_DEFAULT_STRATEGY, libz.zlibVersion(), ctypes.sizeof(_ZStream),
        )  # fmt: skip
        if status != _Z_OK:
            raise OSError(f"deflateInit2_ returned {status}")
        # Room for the largest body's output, reused under the lock.
        self._room = libz.deflateBound(ctypes.byref(self._stream), HELD_MAX)
        self._out = ctypes.create_string_buffer(self._room)

    def forked(self) -> None:
        """In a new child process: the stream is reset before each use, but
        the lock may have been held by a thread the child does not have."""
        self._lock = threading.Lock()

    def __call__(self, body: bytes) -> bytes:
        """``body``, of at most :data:`HELD_MAX` bytes, gzipped."""
        libz, stream, out = self._libz, self._stream, self._out
        with self._lock:
            libz.deflateReset(ctypes.byref(stream))
            stream.next_in, stream.avail_in = body, len(body)
            stream.next_out, stream.avail_out = ctypes.addressof(out), self._room
            status = libz.deflate(ctypes.byref(stream), _Z_FINISH)
            stream.next_in = None  # not keeping the body alive
            if status != _Z_STREAM_END:  # pragma: no cover - the room is zlib's own bound
                raise OSError(f"deflate returned {status}")
            return ctypes.string_at(out, stream.total_out)


def _held_deflate() -> _HeldDeflate | None:
    for name in _LIBZ_NAMES:
        try:
            return _HeldDeflate(ctypes.PyDLL(name))
        except (OSError, AttributeError):
            continue
    return None


#: Forked worker processes each get their own copy.
_held = _held_deflate()
if _held is not None and hasattr(os, "register_at_fork"):
    # A fork while another thread compressed would leave the child's copy
    # of the lock held forever, and every page it renders waiting on it.
    os.register_at_fork(after_in_child=_held.forked)


def gzip(body: bytes) -> bytes:
    """``body`` in the gzip format."""
    if _held is not None and len(body) <= HELD_MAX:
        return _held(body)
    if isal_zlib is not None:
        return isal_zlib.compress(body, 1, wbits=_GZIP_WBITS)
    # A smaller hash table than zlib's default (memLevel 8) halves the time
    # to compress a page of a few KB, with the same result at that size.
    compressor = zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS, 5)
    return compressor.compress(body) + compressor.flush()


def gunzip(data: bytes) -> bytes:
    return zlib.decompress(data, wbits=_GZIP_WBITS)
