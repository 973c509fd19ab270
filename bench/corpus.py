"""The benchmark corpus: N projects x 3 versions, one wheel and one sdist each.

Every distribution is valid (built by ``tests/dists.py``) and declares real
dependencies on other projects of the corpus, so installers can resolve it.
The first 20 projects (``graph-00`` .. ``graph-19``) form a small dependency
tree rooted at ``graph-00``, which the pip and uv resolution runs install.

Beside the distributions, the generator pre-renders what a static web server
needs to be a PEP 503/691/658 index: ``simple/index.{html,json}``,
``simple/<project>/index.{html,json}`` and one ``<wheel>.metadata`` per wheel.
nginx serves these; they are the "ideal" our server is compared against.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import multiprocessing
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GRAPH_SIZE",
    "VERSIONS",
    "Corpus",
    "generate",
    "graph_size",
    "project_name",
    "requirements",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
GRAPH_SIZE = 20
UPLOAD_COUNT = 50
#: Wheels copied into the served directory while a server runs, half into a
#: directory that exists, half into one made at that moment.
COPY_COUNT = 10
REQUIRES_PYTHON = ">=3.8"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
# Projects per task handed to a worker: large enough that pickling is noise.
_CHUNK = 250


@dataclass(frozen=True, slots=True)
class Corpus:
    """Where a generated corpus lives and what it holds."""

    root: Path
    #: The flat directory of distributions every server is pointed at.
    packages: Path
    #: Pre-rendered static index for nginx (``simple/`` and ``metadata/``).
    static: Path
    #: Fresh wheels for the upload measurement; not in ``packages``.
    uploads: tuple[Path, ...]
    #: Fresh wheels for the copied-in measurement; not in ``packages``.
    copies: tuple[Path, ...]
    projects: tuple[str, ...]
    #: One filename per project, for the download measurement.
    sample_files: tuple[str, ...]
    top_project: str
    seconds: float

    @property
    def size(self) -> int:
        return len(self.projects)


def graph_size(n: int) -> int:
    return min(GRAPH_SIZE, n)


def project_name(index: int, n: int) -> str:
    if index < graph_size(n):
        return f"graph-{index:02d}"
    return f"pkg-{index:05d}"


def requirements(index: int, n: int) -> tuple[str, ...]:
    """The Requires-Dist of project ``index``; every name is in the corpus.

    The graph is a binary tree so resolution visits all 20 projects; every
    third edge caps the version below 2 so the resolver must pick an older
    release, not always the newest.  The rest of the corpus forms a second
    tree so every file carries a realistic dependency without touching the
    graph.
    """
    size = graph_size(n)
    if index < size:
        children = [c for c in (2 * index + 1, 2 * index + 2) if c < size]
        return tuple(_edge(c, n) for c in children)
    if index == size:
        return ()
    parent = size + (index - size - 1) // 2
    return (f"{project_name(parent, n)}>=1.0",)


def _edge(child: int, n: int) -> str:
    name = project_name(child, n)
    if child % 3 == 0:
        return f"{name}>=1.0,<2"
    return f'{name}>=1.0; python_version >= "3.8"'


def _dists_module():
    # tests/ is not a package installed with pypiserver; the builders are
    # shared with the end-to-end tests, so load them from the work tree.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests import dists

    return dists


@dataclass(frozen=True, slots=True)
class _FileFacts:
    filename: str
    version: str
    sha256: str
    size: int
    metadata_sha256: str | None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheel_metadata(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        member = next(
            n for n in archive.namelist() if n.endswith(".dist-info/METADATA")
        )
        return archive.read(member)


def _build_file(path: Path, version: str, metadata_dir: Path) -> _FileFacts:
    meta_sha = None
    if path.suffix == ".whl":
        # PEP 658: the metadata file sits at the file URL + ".metadata".
        metadata = _wheel_metadata(path)
        (metadata_dir / f"{path.name}.metadata").write_bytes(metadata)
        meta_sha = hashlib.sha256(metadata).hexdigest()
    return _FileFacts(path.name, version, _sha256(path), path.stat().st_size, meta_sha)


def _build_project(index: int, n: int, packages: Path, static: Path) -> str:
    dists = _dists_module()
    name = project_name(index, n)
    reqs = requirements(index, n)
    facts = []
    for version in VERSIONS:
        kwargs = {
            "requires_dist": reqs,
            "requires_python": REQUIRES_PYTHON,
            "summary": f"Benchmark project {index}",
        }
        for builder in (dists.make_wheel, dists.make_sdist):
            path = builder(packages, name, version, **kwargs)
            facts.append(_build_file(path, version, static / "metadata"))
    _write_project_pages(static / "simple" / name, name, facts)
    return facts[0].filename


def _build_chunk(args: tuple[int, int, int, str, str]) -> list[str]:
    start, stop, n, packages, static = args
    return [
        _build_project(i, n, Path(packages), Path(static)) for i in range(start, stop)
    ]


def _file_link(fact: _FileFacts) -> str:
    url = f"../../packages/{fact.filename}#sha256={fact.sha256}"
    attrs = [
        f'href="{html.escape(url)}"',
        f'data-requires-python="{html.escape(REQUIRES_PYTHON)}"',
    ]
    if fact.metadata_sha256:
        value = f"sha256={fact.metadata_sha256}"
        attrs += [f'data-dist-info-metadata="{value}"', f'data-core-metadata="{value}"']
    return f"    <a {' '.join(attrs)}>{html.escape(fact.filename)}</a><br/>"


def _project_html(name: str, facts: list[_FileFacts]) -> str:
    links = "\n".join(_file_link(f) for f in facts)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>Links for {name}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {name}</h1>\n{links}\n  </body>\n</html>\n"
    )


def _file_json(fact: _FileFacts) -> dict[str, object]:
    entry: dict[str, object] = {
        "filename": fact.filename,
        "url": f"../../packages/{fact.filename}",
        "hashes": {"sha256": fact.sha256},
        "requires-python": REQUIRES_PYTHON,
        "size": fact.size,
        "yanked": False,
    }
    if fact.metadata_sha256:
        entry["core-metadata"] = {"sha256": fact.metadata_sha256}
        entry["dist-info-metadata"] = {"sha256": fact.metadata_sha256}
    return entry


def _project_json(name: str, facts: list[_FileFacts]) -> str:
    document = {
        "meta": {"api-version": "1.1"},
        "name": name,
        "versions": list(dict.fromkeys(f.version for f in facts)),
        "files": [_file_json(f) for f in facts],
    }
    return json.dumps(document, separators=(",", ":"))


def _write_page(path: Path, text: str) -> None:
    """The page, and beside it the gzipped copy nginx sends to clients that
    accept gzip (as pip and uv do)."""
    data = text.encode()
    path.write_bytes(data)
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, mtime=0))


def _write_project_pages(directory: Path, name: str, facts: list[_FileFacts]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _write_page(directory / "index.html", _project_html(name, facts))
    _write_page(directory / "index.json", _project_json(name, facts))


def _write_root_pages(simple: Path, names: tuple[str, ...]) -> None:
    links = "\n".join(f'    <a href="{n}/">{n}</a><br/>' for n in names)
    _write_page(
        simple / "index.html",
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        f"{links}\n  </body>\n</html>\n",
    )
    document = {
        "meta": {"api-version": "1.1"},
        "projects": [{"name": n} for n in names],
    }
    _write_page(simple / "index.json", json.dumps(document, separators=(",", ":")))


def _build_all(n: int, packages: Path, static: Path, workers: int) -> list[str]:
    tasks = [
        (s, min(s + _CHUNK, n), n, str(packages), str(static))
        for s in range(0, n, _CHUNK)
    ]
    if workers <= 1 or len(tasks) == 1:
        return [f for t in tasks for f in _build_chunk(t)]
    # fork keeps start-up cheap; the workers only write files and return names.
    context = multiprocessing.get_context("fork")
    with context.Pool(workers) as pool:
        return [f for chunk in pool.map(_build_chunk, tasks) for f in chunk]


def _build_new_projects(directory: Path, prefix: str, count: int) -> tuple[Path, ...]:
    """``count`` wheels of projects the corpus does not hold."""
    dists = _dists_module()
    directory.mkdir(parents=True, exist_ok=True)
    return tuple(
        dists.make_wheel(
            directory,
            f"{prefix}-{k:02d}",
            "1.0.0",
            requires_python=REQUIRES_PYTHON,
            summary="new to the index, from the bench",
        )
        for k in range(count)
    )


def generate(root: Path, n: int, *, workers: int | None = None) -> Corpus:
    """Write a corpus of ``n`` projects under ``root`` and describe it."""
    if n < 1:
        raise ValueError("a corpus needs at least one project")
    started = time.perf_counter()
    packages, static = root / "packages", root / "static"
    for directory in (packages, static / "simple", static / "metadata"):
        directory.mkdir(parents=True, exist_ok=True)
    names = tuple(project_name(i, n) for i in range(n))
    sample = _build_all(n, packages, static, workers or min(2, os.cpu_count() or 1))
    _write_root_pages(static / "simple", names)
    return Corpus(
        root,
        packages,
        static,
        _build_new_projects(root / "uploads", "bench-upload", UPLOAD_COUNT),
        _build_new_projects(root / "copies", "bench-copy", COPY_COUNT),
        names,
        tuple(sample),
        names[0],
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="Generate a benchmark corpus.")
    parser.add_argument("n", type=int)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    target = args.dir or Path(tempfile.mkdtemp(prefix="pypiserver-corpus-"))
    corpus = generate(target, args.n)
    print(f"{corpus.size} projects in {corpus.packages} ({corpus.seconds:.1f} s)")
