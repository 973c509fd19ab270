"""The benchmark's corpus generator makes valid, self-contained distributions.

Exercised here: the generator, the bytecode step, the static application
(N = 5, well under a second), the copied-in measurement against our real
server, and the flatness measurement against it and the static application.  nginx, released pypiserver and a whole run of
the benchmark are never started by tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pypiserver.distributions import normalize_name, parse_filename

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import corpus as bench_corpus
from bench import run as bench_run
from bench import servers as bench_servers

N = 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> bench_corpus.Corpus:
    return bench_corpus.generate(tmp_path_factory.mktemp("corpus"), N, workers=1)


def _core_metadata(path: Path) -> str:
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as archive:
            member = next(
                m for m in archive.namelist() if m.endswith(".dist-info/METADATA")
            )
            return archive.read(member).decode()
    with tarfile.open(path) as archive:
        member = next(m for m in archive.getnames() if m.endswith("/PKG-INFO"))
        return archive.extractfile(member).read().decode()


def _requires_dist(path: Path) -> list[Requirement]:
    headers = HeaderParser().parsestr(_core_metadata(path))
    return [Requirement(value) for value in headers.get_all("Requires-Dist", [])]


def test_every_project_has_a_wheel_and_an_sdist_per_version(corpus):
    dists = [parse_filename(p.name) for p in corpus.packages.iterdir()]
    kinds = {(d.project, d.version, d.kind) for d in dists}
    expected = {
        (normalize_name(name), version, kind)
        for name in corpus.projects
        for version in bench_corpus.VERSIONS
        for kind in ("wheel", "sdist")
    }
    assert len(dists) == N * len(bench_corpus.VERSIONS) * 2
    assert kinds == expected


def test_dependency_graph_is_closed(corpus):
    names = {normalize_name(n) for n in corpus.projects}
    edges = [
        normalize_name(req.name)
        for path in corpus.packages.iterdir()
        for req in _requires_dist(path)
    ]
    assert edges, "the corpus should declare dependencies"
    assert set(edges) <= names


def test_top_project_reaches_the_whole_graph(corpus):
    wheels = {
        parse_filename(p.name).project: p for p in corpus.packages.glob("*-2.0.0-*.whl")
    }
    seen, todo = set(), [normalize_name(corpus.top_project)]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [normalize_name(r.name) for r in _requires_dist(wheels[name])]
    assert len(seen) == bench_corpus.graph_size(N)


def test_static_pages_list_every_file_with_its_metadata_digest(corpus):
    page = json.loads(
        (corpus.static / "simple" / corpus.top_project / "index.json").read_text()
    )
    files = {f["filename"]: f for f in page["files"]}
    wheel = next(name for name in files if name.endswith(".whl"))
    metadata = corpus.static / "metadata" / f"{wheel}.metadata"
    assert (corpus.packages / wheel).exists()
    assert (
        files[wheel]["core-metadata"]["sha256"]
        == hashlib.sha256(metadata.read_bytes()).hexdigest()
    )


def test_uploaded_and_copied_files_are_new_projects(corpus):
    uploaded = {parse_filename(p.name).project for p in corpus.uploads}
    copied = {parse_filename(p.name).project for p in corpus.copies}
    assert len(uploaded) == bench_corpus.UPLOAD_COUNT
    assert len(copied) == bench_corpus.COPY_COUNT
    assert not (uploaded | copied) & {normalize_name(n) for n in corpus.projects}
    assert not uploaded & copied


def test_the_package_timed_is_compiled_as_an_installation_is(tmp_path, monkeypatch):
    # Written here, never imported: only the bytecode step can compile it.
    package = tmp_path / "bench_compiled_pkg"
    (package / "sub").mkdir(parents=True)
    modules = [package / "__init__.py", package / "sub" / "__init__.py", package / "sub" / "mod.py"]
    for module in modules:
        module.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()

    assert bench_servers.compile_package("bench_compiled_pkg") == package
    for module in modules:
        assert Path(importlib.util.cache_from_source(str(module))).is_file(), module
    assert bench_servers.compile_package("bench_no_such_package_here") is None



def _get(app, path: str, **headers: str) -> tuple[str, dict[str, str], bytes]:
    """Status, headers and body of one GET, exactly as the application sent
    them (webtest would undo the gzip)."""
    answer: list = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path}
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    body = b"".join(app(environ, lambda status, head: answer.extend([status, dict(head)])))
    return answer[0], answer[1], body


def test_the_static_app_serves_what_nginx_would(corpus):
    from bench.static_app import JSON_MEDIA, StaticIndex

    app = StaticIndex(corpus.static, corpus.packages)
    simple = corpus.static / "simple"
    top = corpus.top_project

    status, headers, body = _get(app, f"/simple/{top}/")
    assert status == "200 OK" and body == (simple / top / "index.html").read_bytes()
    assert headers["Content-Type"] == "text/html" and "Content-Encoding" not in headers
    assert headers["Content-Length"] == str(len(body))

    _, headers, body = _get(app, "/simple/", accept_encoding="gzip")
    assert headers["Content-Encoding"] == "gzip"
    assert body == (simple / "index.html.gz").read_bytes()

    _, headers, body = _get(app, f"/simple/{top}/", accept=f"{JSON_MEDIA}, text/html;q=0.1")
    assert headers["Content-Type"] == JSON_MEDIA
    assert json.loads(body)["name"] == top

    wheel = next(corpus.packages.glob("*.whl"))
    assert _get(app, f"/packages/{wheel.name}")[2] == wheel.read_bytes()
    metadata = _get(app, f"/packages/{wheel.name}.metadata")[2]
    assert metadata == (corpus.static / "metadata" / f"{wheel.name}.metadata").read_bytes()

    for missing in ("/simple/no-such-project/", "/packages/no-such.whl", "/simple/../simple/"):
        assert _get(app, missing)[0] == "404 Not Found"


def test_copied_files_are_timed_until_our_server_lists_them(tmp_path):
    corpus = bench_corpus.generate(tmp_path / "corpus", 2, workers=1)
    spec = bench_servers.ours_spec(corpus.packages, bench_servers.free_port())
    server = bench_servers.start(spec, tmp_path, timeout=60)
    try:
        figures = bench_run.measure_copies(spec.url, corpus)
        copied = sorted(p.relative_to(corpus.packages).parts[0] for p in corpus.packages.rglob("bench_copy*"))
    finally:
        bench_run.remove_new_files(corpus)
        bench_servers.stop(server)
    half = bench_corpus.COPY_COUNT // 2
    assert copied == [bench_run.COPY_SUBDIRECTORY] * half + [p.name for p in corpus.copies[::2]]
    for where in ("top_level", "new_subdirectory"):
        samples = figures[where]["samples"]
        assert len(samples) == half, figures
        assert all(0 < s < bench_run.COPY_WAIT for s in samples), figures
        assert figures[where]["max_seconds"] == max(samples)
    assert not any(corpus.packages.rglob("bench_copy*"))
    assert not (corpus.packages / bench_run.COPY_SUBDIRECTORY).exists()


def test_a_copied_file_never_listed_is_an_error(tmp_path):
    corpus = bench_corpus.generate(tmp_path / "corpus", 1, workers=1)
    static = bench_servers.static_app_spec(corpus.static, corpus.packages, bench_servers.free_port())
    server = bench_servers.start(static, tmp_path, timeout=60)
    try:  # the static index never learns of new files
        with pytest.raises(RuntimeError, match="not listed at /simple/bench-copy-00/ after 0.2 s"):
            bench_run.measure_copies(static.url, corpus, within=0.2)
    finally:
        bench_run.remove_new_files(corpus)
        bench_servers.stop(server)


def _flat_row(table: str, label: str) -> list[str]:
    (line,) = [row for row in table.splitlines() if row.startswith(f"| {label} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_flatness_table_shows_the_side_by_side_ratios_from_a_results_file():
    runs = {n: {"ours": {"download": {"rps": rps, "p99_ms": 1.0}}} for n, rps in ((10, 100.0), (20, 50.0))}
    # As read back from JSON: sizes are strings.
    # Samples in the order measured, pair by pair.  Ours: ratios 0.9, 0.8
    # and 1.0, median 0.90, where the medians' ratio would be 80/90.
    ours = {"10": {"download": {"rps": 90.0, "samples": [80.0, 100.0, 90.0]}},
            "20": {"download": {"rps": 80.0, "samples": [72.0, 80.0, 90.0]}}}
    granian = {"10": {"download": {"rps": 100.0}}, "20": {"download": {"rps": 85.0}}}

    table = bench_run.flatness_table(runs, {"ours": ours, "granian": granian})

    assert table.splitlines()[2].endswith("| ours, side by side | granian static, side by side | target |")
    row = _flat_row(table, "download req/s")
    assert row[1] == "0.50" and row[-3:] == ["0.90", "0.85", "within 0.85-1.15"]
    failed = bench_run.flatness_table(runs, {"error": "RuntimeError: no"})
    assert _flat_row(failed, "download req/s")[-3:-1] == ["n/a", "n/a"]
    # A results file from before the static application was measured beside ours.
    older = bench_run.flatness_table(runs, ours)
    assert _flat_row(older, "download req/s")[-3:-1] == ["0.90", "n/a"]


def test_flatness_slices_each_load_into_pairs_in_alternating_order(monkeypatch):
    corpora = {10: "small", 20: "large"}
    measured = []

    def fake_load(server, corpus, scenario, seconds, warmup, workdir):
        measured.append((server, corpus, scenario, seconds, warmup))
        return 100.0 if corpus == "small" else 90.0

    monkeypatch.setattr(bench_run, "_start_side_by_side", lambda corpora, kinds, args: {(k, n): k for k in kinds for n in corpora})
    monkeypatch.setattr(bench_run, "_flat_load", fake_load)
    stopped = []
    monkeypatch.setattr(bench_servers, "stop", stopped.append)
    args = bench_run.parse_args(["--duration", "3", "--flat-rounds", "2", "--skip-granian"])

    figures = bench_run.measure_flatness(corpora, args, None)

    download = [(corpus, warmup) for _, corpus, scenario, seconds, warmup in measured if scenario == "download"]
    # Three slices of a second per round and size, the order reversed every
    # other slice, and on across rounds; a warm-up before each round's first.
    assert download == [
        ("small", True), ("large", True), ("large", False), ("small", False), ("small", False), ("large", False),
        ("large", True), ("small", True), ("small", False), ("large", False), ("large", False), ("small", False),
    ]
    assert {seconds for *_, seconds, _ in measured} == {1.0}
    assert stopped == ["ours", "ours"] * 2  # both servers, after each round
    assert len(measured) == 12 * len(bench_run.FLAT_LOADS)
    assert figures["ours"][20]["download"]["samples"] == [90.0] * 6
    table = bench_run.flatness_table({10: {}, 20: {}}, figures)
    assert _flat_row(table, "download req/s")[-3:-1] == ["0.90", "n/a"]


def test_flatness_measures_ours_and_the_static_application_over_both_corpora_and_stops_them(tmp_path, monkeypatch):
    corpora = {n: bench_corpus.generate(tmp_path / f"n{n}", n, workers=1) for n in (1, 3)}
    args = bench_run.parse_args(["--duration", "0.2", "--flat-rounds", "1"])
    started = []
    monkeypatch.setattr(bench_servers, "start", lambda *a, start=bench_servers.start, **k: started.append(start(*a, **k)) or started[-1])
    specs = bench_run.load_specs  # without the second of warm-up before each load
    monkeypatch.setattr(bench_run, "load_specs", lambda *a: {k: dataclasses.replace(v, warmup=0) for k, v in specs(*a).items()})

    figures = bench_run.measure_flatness(corpora, args, tmp_path)

    assert set(figures) == {"ours", "granian"}
    for sizes in figures.values():
        assert set(sizes) == {1, 3}
        for n in (1, 3):
            assert set(sizes[n]) == set(bench_run.FLAT_LOADS)
            assert all(f["rps"] > 0 and len(f["samples"]) == 1 for f in sizes[n].values())
    assert sorted(s.spec.name for s in started) == ["granian", "granian", "ours", "ours"]
    assert len({s.spec.port for s in started}) == 4  # all at once
    assert all(s.process.poll() is not None for s in started)

    started.clear()
    args = bench_run.parse_args(["--duration", "0.2", "--flat-rounds", "1", "--skip-granian"])
    assert set(bench_run.measure_flatness(corpora, args, tmp_path)) == {"ours"}
    assert [s.spec.name for s in started] == ["ours", "ours"]
