"""Small, valid distributions built in memory, without a network or a build backend.

The end-to-end tests install these with pip and uv, and the benchmark writes
tens of thousands of them, so every archive is deterministic (fixed timestamps,
sorted members) and cheap to make (a handful of tiny members, no subprocess).

A wheel follows the binary distribution format: ``{name}-{version}.dist-info``
with ``METADATA``, ``WHEEL`` and a ``RECORD`` of urlsafe-base64 sha256 digests.
An sdist follows the source distribution format: one ``{name}-{version}/`` top
directory holding ``PKG-INFO`` and ``pyproject.toml``.  Both use the escaped
name (normalised, runs of ``-_.`` as one ``_``) in filenames and directories.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from packaging.version import Version

__all__ = [
    "escape_name",
    "make_sdist",
    "make_wheel",
    "metadata_text",
    "sdist_filename",
    "wheel_filename",
]

# Zip cannot store dates before 1980; one fixed stamp keeps archives byte-identical.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_TAR_MTIME = 315532800  # 1980-01-01, the same instant as the zip stamp
_GENERATOR = "pypiserver-tests (dists.py)"


def escape_name(name: str) -> str:
    """The filename form of a project name: normalised, with ``_`` for separators."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _version(version: str) -> str:
    # Filenames carry the normalised version, or installers reject the wheel.
    return str(Version(version))


def wheel_filename(
    name: str, version: str, *, python_tag: str = "py3", build_tag: str | None = None
) -> str:
    build = f"-{build_tag}" if build_tag else ""
    return f"{escape_name(name)}-{_version(version)}{build}-{python_tag}-none-any.whl"


def sdist_filename(name: str, version: str, *, suffix: str = ".tar.gz") -> str:
    return f"{escape_name(name)}-{_version(version)}{suffix}"


def metadata_text(
    name: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    summary: str = "",
) -> str:
    """Core metadata (``METADATA`` / ``PKG-INFO``) in the email-header format."""
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {_version(version)}",
        f"Summary: {summary}",
    ]
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {req}" for req in requires_dist]
    return "\n".join(lines) + "\n"


def _module_text(version: str) -> str:
    return f'__version__ = "{_version(version)}"\n'


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"{path},sha256={digest.decode('ascii')},{len(data)}"


def _wheel_text(python_tag: str, build_tag: str | None) -> str:
    lines = [
        "Wheel-Version: 1.0",
        f"Generator: {_GENERATOR}",
        "Root-Is-Purelib: true",
        f"Tag: {python_tag}-none-any",
    ]
    if build_tag:
        lines.append(f"Build: {build_tag}")
    return "\n".join(lines) + "\n"


def _write_zip(target: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(target, "w") as archive:
        for path, data in members.items():
            info = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    summary: str = "",
    python_tag: str = "py3",
    build_tag: str | None = None,
    data: bytes = b"",
) -> Path:
    """Write a pure-Python wheel of ``name`` ``version`` into ``directory``;
    ``data``, if any, is installed as the package's ``data.bin``."""
    module = escape_name(name)
    dist_info = f"{module}-{_version(version)}.dist-info"
    metadata = metadata_text(
        name,
        version,
        requires_dist=requires_dist,
        requires_python=requires_python,
        summary=summary,
    )
    members = {
        f"{module}/__init__.py": _module_text(version).encode(),
        f"{dist_info}/METADATA": metadata.encode(),
        f"{dist_info}/WHEEL": _wheel_text(python_tag, build_tag).encode(),
    }
    if data:
        members[f"{module}/data.bin"] = data
    record = [_record_line(path, data) for path, data in members.items()]
    # RECORD cannot hold its own digest; the specification leaves both fields empty.
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    target = Path(directory) / wheel_filename(
        name, version, python_tag=python_tag, build_tag=build_tag
    )
    _write_zip(target, members)
    return target


def make_sparse_wheel(directory: Path, name: str, version: str, size: int) -> Path:
    """A ``size``-byte wheel of ``name`` ``version`` in ``directory``: a hole
    (read as zeros, taking no disk), then a small wheel.  Still a valid
    archive: a zip file may be preceded by anything."""
    target = make_wheel(directory, name, version)
    tail = target.read_bytes()
    with target.open("wb") as out:
        out.truncate(size - len(tail))
        out.seek(size - len(tail))
        out.write(tail)
    return target


def _pyproject_text(
    name: str,
    version: str,
    requires_dist: Iterable[str],
    requires_python: str | None,
    summary: str,
) -> str:
    deps = ", ".join(f'"{req}"' for req in requires_dist)
    lines = [
        "[build-system]",
        'requires = ["setuptools>=64"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f'name = "{name}"',
        f'version = "{_version(version)}"',
        f'description = "{summary}"',
        f"dependencies = [{deps}]",
    ]
    if requires_python is not None:
        lines.append(f'requires-python = "{requires_python}"')
    return "\n".join(lines) + "\n"


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = _TAR_MTIME
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _compress_sdist(suffix: str, members: dict[str, bytes]) -> bytes:
    if suffix == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, data in members.items():
                archive.writestr(zipfile.ZipInfo(path, date_time=_ZIP_DATE), data)
        return buffer.getvalue()
    if suffix in (".tar.gz", ".tgz"):
        # mtime=0 keeps the gzip header, and so the digest, reproducible.
        return gzip.compress(_tar_bytes(members), mtime=0)
    if suffix == ".tar":
        return _tar_bytes(members)
    raise ValueError(f"unsupported sdist suffix {suffix!r}")


def make_sdist(
    directory: Path,
    name: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    summary: str = "",
    suffix: str = ".tar.gz",
) -> Path:
    """Write a setuptools-buildable sdist of ``name`` ``version`` into ``directory``.

    ``suffix`` is one of ``.tar.gz`` (the standard), ``.tgz``, ``.tar``, ``.zip``.
    """
    requires_dist = tuple(requires_dist)
    module = escape_name(name)
    top = f"{module}-{_version(version)}"
    members = {
        f"{top}/PKG-INFO": metadata_text(
            name,
            version,
            requires_dist=requires_dist,
            requires_python=requires_python,
            summary=summary,
        ).encode(),
        f"{top}/pyproject.toml": _pyproject_text(
            name, version, requires_dist, requires_python, summary
        ).encode(),
        f"{top}/{module}/__init__.py": _module_text(version).encode(),
    }
    target = Path(directory) / sdist_filename(name, version, suffix=suffix)
    target.write_bytes(_compress_sdist(suffix, members))
    return target
