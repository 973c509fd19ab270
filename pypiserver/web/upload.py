"""``POST /``: the legacy upload API that twine, uv, poetry, hatch and
setuptools speak (also at ``/legacy/``, PyPI's path), and pip's XML-RPC
search, which posts to the same URL."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, BinaryIO

import bottle

from .. import xmlrpc
from ..distributions import (
    SIGNATURE_SUFFIX,
    Distribution,
    InvalidDistributionFilename,
    normalize_name,
    parse_filename,
)
from ..index import iter_search_entries, normalize_version
from ..storage import FileExists, UnsafePath
from .forms import FormError, FormTooLarge, UploadForm, read_upload_form
from .responses import plain_error
from .transfers import read_body

if TYPE_CHECKING:
    from ..index import IndexedFile
    from .app import Context

__all__ = ["install", "UPLOAD_PATHS"]

log = logging.getLogger(__name__)

#: Every path a client may be told to upload to; none answers with a
#: redirect, because clients re-send a redirected POST as a GET.
UPLOAD_PATHS = ("/", "/legacy", "/legacy/", "/upload", "/upload/", "/RPC2", "/pypi", "/pypi/")
_IGNORED_ACTIONS = ("doc_upload", "submit", "verify", "register")


def _is_xmlrpc(request: bottle.BaseRequest) -> bool:
    return request.content_type.split(";")[0].strip().lower() in ("text/xml", "application/xml")


def _action_of(request: bottle.BaseRequest) -> str:
    """Searching needs the right to list; everything else the right to update."""
    return "list" if _is_xmlrpc(request) else "update"


def install(app: bottle.Bottle, ctx: "Context") -> None:
    def post_root() -> str | bytes | bottle.HTTPResponse:
        request = bottle.request
        if _is_xmlrpc(request):
            return _search(ctx)
        try:
            form = read_body(
                ctx.transfers,
                lambda: read_upload_form(
                    request.environ,
                    spool_dir=ctx.config.upload_root,
                    max_size=ctx.config.max_upload_size,
                ),
            )
        except FormTooLarge as exc:
            return plain_error(413, str(exc))
        except FormError as exc:
            return plain_error(400, str(exc))
        try:
            return _dispatch(ctx, form)
        finally:
            form.close()

    for path in UPLOAD_PATHS:
        app.route(path, "POST", post_root, action=_action_of)


def _dispatch(ctx: "Context", form: UploadForm) -> str | bottle.HTTPResponse:
    action = form.get(":action")
    if action == "file_upload":
        return _file_upload(ctx, form)
    if action == "remove_pkg":
        return _remove_release(ctx, form)
    if action in _IGNORED_ACTIONS:
        return "OK\n"
    if not action:
        return plain_error(400, "Missing ':action' field: expected file_upload or remove_pkg")
    return plain_error(400, f"Unsupported ':action' {action!r}: expected file_upload or remove_pkg")


def _file_upload(ctx: "Context", form: UploadForm) -> str | bottle.HTTPResponse:
    content = form.files.get("content")
    if content is None:
        return plain_error(400, "Missing 'content' file part in the upload form")
    filename = content.filename
    problem = _filename_problem(filename)
    if problem:
        return plain_error(400, problem)
    try:
        dist = parse_filename(filename)
    except InvalidDistributionFilename as exc:
        return plain_error(400, f"Invalid distribution file: {exc}")
    mismatch = _metadata_mismatch(dist, form)
    if mismatch:
        return plain_error(400, mismatch)
    signature = form.files.get("gpg_signature")
    if signature is not None and signature.filename != filename + SIGNATURE_SUFFIX:
        return plain_error(400, f"The signature must be named {filename}{SIGNATURE_SUFFIX}")

    digest = _sha256(content.file)
    claimed = form.get("sha256_digest").strip().lower()
    if claimed and claimed != digest:
        return plain_error(400, f"The sha256_digest does not match the content of {filename}")

    existing = _existing(ctx, dist.project, filename)
    if existing is not None and existing.facts.digests.get("sha256") == digest:
        return "OK: identical file already present\n"
    if existing is not None and not ctx.config.overwrite:
        return _conflict(filename)
    relpath = existing.relpath if existing is not None else filename
    try:
        ctx.catalogue.store(relpath, content.file, overwrite=ctx.config.overwrite)
        if signature is not None:
            ctx.catalogue.store(relpath + SIGNATURE_SUFFIX, signature.file, overwrite=True)
    except FileExists:
        return _conflict(filename)
    except UnsafePath as exc:
        return plain_error(400, str(exc))
    except OSError as exc:
        log.error("could not store %s: %s", filename, exc)
        return plain_error(500, f"Could not store {filename}: {exc.strerror or exc}")
    log.info("stored %s", relpath)
    return "OK\n"


def _conflict(filename: str) -> bottle.HTTPResponse:
    # twine, poetry, pdm and uv recognise 409 and the words "File already
    # exists"; putting them in the reason phrase too shows them in every
    # client's error line.
    response = plain_error(409, f"File already exists: {filename}")
    response.status = "409 File already exists"
    return response


def _remove_release(ctx: "Context", form: UploadForm) -> str | bottle.HTTPResponse:
    name, version = form.get("name").strip(), form.get("version").strip()
    if not name or not version:
        return plain_error(400, "remove_pkg needs 'name' and 'version' fields")
    project = ctx.catalogue.project(name)
    files = project.release(version) if project else ()
    if not files:
        return plain_error(404, f"No release {version} of {name} in this index")
    for file in files:
        ctx.catalogue.remove(file.relpath)
        if file.signed:
            ctx.catalogue.remove(file.relpath + SIGNATURE_SUFFIX)
    log.info("removed %s %s (%d files)", name, version, len(files))
    return "OK\n"


def _search(ctx: "Context") -> bytes | bottle.HTTPResponse:
    request = bottle.request
    if request.content_length > xmlrpc.MAX_BODY_BYTES:
        return plain_error(413, f"XML-RPC request too large: the limit is {xmlrpc.MAX_BODY_BYTES} bytes")
    body = read_body(ctx.transfers, lambda: request.body.read(xmlrpc.MAX_BODY_BYTES + 1))
    bottle.response.content_type = "text/xml"
    try:
        # Unsafe or malformed XML (entity bombs, external entities) is a bad
        # request; a well-formed call that fails is answered as a fault.
        xmlrpc.parse_call(body)
    except xmlrpc.XmlRpcError as exc:
        bottle.response.status = 400
        return xmlrpc.render_fault(exc.fault_code, str(exc))
    entries = (xmlrpc.SearchEntry(*entry) for entry in iter_search_entries(ctx.catalogue))
    return xmlrpc.respond(body, entries)


#: File systems take names of up to 255 bytes, and a signature uploaded
#: with the file is stored under its name plus ".asc".
_LONGEST_FILENAME = 255 - len(SIGNATURE_SUFFIX)


def _filename_problem(filename: str | None) -> str | None:
    if not filename:
        return "The 'content' part has no filename"
    if "/" in filename or "\\" in filename or ".." in filename or "\x00" in filename:
        return f"Invalid filename {filename!r}: path separators and '..' are not allowed"
    if filename.startswith("."):
        return f"Invalid filename {filename!r}: it must not start with a dot"
    if len(filename.encode("utf-8")) > _LONGEST_FILENAME:
        return f"Invalid filename: longer than {_LONGEST_FILENAME} bytes"
    return None


def _metadata_mismatch(dist: Distribution, form: UploadForm) -> str | None:
    name, version = form.get("name"), form.get("version")
    if name and normalize_name(name) != dist.project:
        return f"The file {dist.filename} is not of project {name!r}"
    if version and normalize_version(version) != normalize_version(dist.version):
        return f"The file {dist.filename} is not of version {version!r}"
    return None


def _existing(ctx: "Context", project: str, filename: str) -> "IndexedFile | None":
    found = ctx.catalogue.project(project)
    return next((f for f in found.files if f.filename == filename), None) if found else None


def _sha256(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()
