"""Reading an upload form from the request body as it streams in.

File parts go to spooled temporary files (memory up to 1 MiB, then an
unnamed file on disk beside the packages), so an upload of any size costs a
bounded amount of memory and is written to disk once before it is stored.
Text fields are small and kept in memory, with a limit.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping
from urllib.parse import parse_qsl

import multipart

__all__ = ["FilePart", "FormError", "FormTooLarge", "UploadForm", "read_upload_form"]

_CHUNK = 256 * 1024
_SPOOL_IN_MEMORY = 1024 * 1024
#: A project description (the largest text field twine sends) fits easily.
MAX_FIELD_SIZE = 8 * 1024 * 1024


class FormError(ValueError):
    """The request body is not a readable upload form."""


class FormTooLarge(FormError):
    """The request body is larger than the configured upload limit."""


@dataclass
class FilePart:
    filename: str
    file: IO[bytes]
    size: int


@dataclass
class UploadForm:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, FilePart] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def close(self) -> None:
        for part in self.files.values():
            part.file.close()


def read_upload_form(
    environ: Mapping[str, Any], *, spool_dir: Path, max_size: int | None
) -> UploadForm:
    """Parse a ``multipart/form-data`` or urlencoded body from a WSGI environ."""
    content_type, options = multipart.parse_options_header(environ.get("CONTENT_TYPE", ""))
    length = _content_length(environ)
    if max_size is not None and length > max_size:
        raise FormTooLarge(f"Upload too large: the limit is {max_size} bytes")
    stream = environ["wsgi.input"]
    if content_type == "application/x-www-form-urlencoded":
        return _read_urlencoded(stream, length)
    if content_type != "multipart/form-data":
        raise FormError(f"Expected a multipart/form-data body, not {content_type or 'nothing'!r}")
    boundary = options.get("boundary")
    if not boundary:
        raise FormError("Malformed form body: multipart content type without boundary")
    return _read_multipart(stream, boundary, length, spool_dir, max_size)


def _read_multipart(
    stream: IO[bytes], boundary: str, length: int, spool_dir: Path, max_size: int | None
) -> UploadForm:
    form = UploadForm()
    received = 0

    def read(size: int) -> bytes:
        nonlocal received
        chunk = stream.read(size if length < 0 else min(size, length - received))
        received += len(chunk)
        if max_size is not None and received > max_size:
            raise FormTooLarge(f"Upload too large: the limit is {max_size} bytes")
        return chunk

    try:
        with multipart.PushMultipartParser(boundary, length) as parser:
            _collect(parser.parse_blocking(read, _CHUNK), form, spool_dir)
    except multipart.ParserError as exc:
        form.close()
        if length >= 0 and received < length:
            raise FormError(f"Malformed form body: it ended after {received} of {length} bytes") from None
        raise FormError(f"Malformed form body: {exc}") from None
    except BaseException:
        form.close()
        raise
    return form


def _collect(events: Any, form: UploadForm, spool_dir: Path) -> None:
    segment: multipart.MultipartSegment | None = None
    sink: IO[bytes] | None = None
    text = bytearray()
    for event in events:
        if isinstance(event, multipart.MultipartSegment):
            segment, text = event, bytearray()
            sink = (
                tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=spool_dir)
                if event.filename is not None
                else None
            )
        elif event is None and segment is not None:
            _finish(form, segment, sink, text)
            segment = sink = None
        elif segment is not None:
            if sink is not None:
                sink.write(event)
            else:
                text += event
                if len(text) > MAX_FIELD_SIZE:
                    raise FormError(f"Form field {segment.name!r} is larger than {MAX_FIELD_SIZE} bytes")


def _finish(form: UploadForm, segment: multipart.MultipartSegment, sink: IO[bytes] | None, text: bytearray) -> None:
    name = segment.name or ""
    if sink is None:
        form.fields.setdefault(name, []).append(text.decode(segment.charset or "utf-8", "replace"))
        return
    sink.seek(0)
    previous = form.files.pop(name, None)
    if previous is not None:
        previous.file.close()
    form.files[name] = FilePart(segment.filename or "", sink, segment.size)


def _read_urlencoded(stream: IO[bytes], length: int) -> UploadForm:
    if length > MAX_FIELD_SIZE:
        raise FormError(f"Form body larger than {MAX_FIELD_SIZE} bytes")
    body = stream.read(length if length >= 0 else MAX_FIELD_SIZE + 1)
    if length >= 0 and len(body) < length:
        raise FormError(f"Malformed form body: it ended after {len(body)} of {length} bytes")
    form = UploadForm()
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.fields.setdefault(name, []).append(value)
    return form


def _content_length(environ: Mapping[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        raise FormError("Invalid Content-Length header") from None
