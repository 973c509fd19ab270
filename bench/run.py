"""Benchmark pypiserver against released pypiserver and nginx, same corpus, same run.

    python bench/run.py --projects 1000 --projects 10000

For each N: generate the corpus; start ours (timed), granian serving the
static index through a minimal application (the ceiling of the HTTP server
ours runs on) and nginx side by side, and measure them in turn, figure by
figure: load with wrk (simple pages HTML and JSON, the project list,
downloads), resolve a 20-project graph with pip and uv, upload 50 files with
twine and time 10 files copied into the directory until listed (ours), read
their memory; then the same for released pypiserver alone.  Prints a
Markdown table per N and writes the raw figures as JSON (default
``bench/results/``, git-ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import corpus as corpus_mod
from bench import load, servers
from bench.corpus import Corpus

JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
SERVER_ORDER = ("ours", "granian", "nginx", "upstream")
Figures = dict[str, Any]
#: Where the copied-in measurement makes its new subdirectories.
COPY_SUBDIRECTORY = "bench-copied"
#: How long a copied file may take to be listed, and how often to look.
COPY_WAIT = 10.0
COPY_POLL = 0.01


# -- arguments ----------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--projects",
        type=int,
        action="append",
        metavar="N",
        help="corpus size; repeat for several (default 1000)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=5.0,
        help="seconds of load per measurement (default 5)",
    )
    parser.add_argument(
        "--skip-upstream",
        action="store_true",
        help="do not install and measure released pypiserver",
    )
    parser.add_argument(
        "--skip-nginx", action="store_true", help="do not measure nginx"
    )
    parser.add_argument(
        "--skip-granian",
        action="store_true",
        help="do not measure granian serving the static index (bench/static_app.py)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory"
    )
    parser.add_argument("--out", type=Path, default=None, help="results JSON file")
    parser.add_argument(
        "--upstream-cap",
        type=float,
        default=180.0,
        help="seconds allowed for each upstream start, resolution and upload",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        # Three resolutions' median moved pip's and uv's ratios by 0.15
        # between runs where ten alternating runs found ours and the static
        # application within 3 % of each other.
        default=5,
        help="pip/uv resolutions per server, and warm starts of ours; the median is reported",
    )
    parser.add_argument(
        "--flat-rounds",
        type=int,
        # Rounds of one load moved by up to a third in the thirty-fifth run.
        default=5,
        metavar="K",
        help="rounds of ours and the static application over the smallest and "
        "largest N side by side, for flatness (default 5; 0 skips it)",
    )
    parser.add_argument(
        "--ours-options",
        default="",
        metavar="ARGS",
        help='more command-line arguments for our server, e.g. "--threads 4"',
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="JSON",
        help="print the tables of an earlier results file and exit",
    )
    args = parser.parse_args(argv)
    args.projects = sorted(set(args.projects or [1000]))
    return args


# -- measurements common to every server --------------------------------------


def load_specs(corpus: Corpus, duration: float) -> dict[str, load.LoadSpec]:
    pages = tuple(f"/simple/{name}/" for name in corpus.projects)
    files = tuple(f"/packages/{name}" for name in corpus.sample_files)
    # Index pages are asked for as pip and uv ask: accepting gzip.
    gzip = {"Accept-Encoding": "gzip"}
    return {
        "project_html": load.LoadSpec(pages, gzip, duration=duration),
        # The same again: the first pass includes rendering every page once
        # in every worker process; this one shows the steady state.
        "project_html_again": load.LoadSpec(pages, gzip, duration=duration),
        "project_json": load.LoadSpec(
            pages, {**gzip, "Accept": JSON_ACCEPT}, duration=duration
        ),
        "project_json_again": load.LoadSpec(
            pages, {**gzip, "Accept": JSON_ACCEPT}, duration=duration
        ),
        # And as curl asks, without gzip.
        "project_html_plain": load.LoadSpec(pages, duration=duration),
        "index": load.LoadSpec(("/simple/",), gzip, duration=duration),
        "download": load.LoadSpec(files, duration=duration),
    }


def measure_loads(
    urls: dict[str, str], corpus: Corpus, duration: float, workdir: Path
) -> dict[str, Figures]:
    """Each load on each server of ``urls`` (name: base URL), one server
    right after the other, so the two sides of a ratio are measured seconds
    apart rather than minutes."""
    figures: dict[str, Figures] = {name: {} for name in urls}
    for scenario, spec in load_specs(corpus, duration).items():
        for name, url in urls.items():
            figure = figures[name][scenario] = attempt(
                lambda url=url, spec=spec: load.run_load(url, spec, workdir).as_dict()
            )
            log(f"    {name} {scenario}: {summary(figure)}")
    return figures


def attempt(measure: Callable[[], Any]) -> Any:
    """One failed measurement is reported in the table, not fatal to the run."""
    try:
        return measure()
    except subprocess.TimeoutExpired as error:
        # A capped run is a result too: "slower than the cap".
        return {
            "error": f"timed out after {error.timeout:.0f} s",
            "timeout": error.timeout,
        }
    except Exception as error:  # noqa: BLE001 - any failure is a figure to report
        return {"error": f"{type(error).__name__}: {error}"[:300]}


def summary(figure: Any) -> str:
    if isinstance(figure, dict) and "rps" in figure:
        p99 = "n/a" if figure["p99_ms"] is None else f"{figure['p99_ms']:.1f}"
        return (
            f"{figure['rps']:.0f} req/s, p99 {p99} ms, "
            f"errors {figure['errors']}, non-2xx {figure['non_2xx']}"
        )
    return json.dumps(figure)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus pip/uv configuration, so only the index under
    test is consulted (no find-links, no extra index from the machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        UV_NO_CONFIG="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        **extra,
    )
    return env


def timed(
    argv: list[str], timeout: float
) -> tuple[float, subprocess.CompletedProcess[str]]:
    began = time.perf_counter()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        check=False,
    )
    return time.perf_counter() - began, done


def resolve_once(argv: list[str], timeout: float, top: str) -> tuple[float, int]:
    seconds, done = timed(argv, timeout)
    if done.returncode != 0:
        raise RuntimeError((done.stderr or done.stdout)[-300:])
    # Both tools name each chosen project; counting the graph's distinct
    # names proves the whole graph was resolved, not just the top project.
    prefix = re.escape(top.split("-")[0] + "-")
    return seconds, len(set(re.findall(prefix + r"\d+", done.stdout + done.stderr)))


# Repeats stop once this much time is spent: one slow server must not
# multiply its cap by the repeat count.
_RESOLUTION_BUDGET = 30.0


def measure_resolution(
    argvs: dict[str, list[str]], repeats: int, timeout: float, top: str
) -> dict[str, Figures]:
    """Resolve with each server's ``argvs`` in turn, ``repeats`` rounds
    (the order reversed every other round), and report each one's median."""
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in argvs}
    failed: dict[str, Figures] = {}
    for round_ in range(repeats):
        names = list(argvs) if round_ % 2 == 0 else list(reversed(argvs))
        for name in names:
            if name in failed or sum(t for t, _ in runs[name]) >= _RESOLUTION_BUDGET:
                continue
            outcome = attempt(lambda argv=argvs[name]: resolve_once(argv, timeout, top))
            if isinstance(outcome, dict):
                failed[name] = outcome
            else:
                runs[name].append(outcome)
    return {name: failed.get(name) or _resolution_figures(runs[name]) for name in argvs}


def _resolution_figures(runs: list[tuple[float, int]]) -> Figures:
    times = [seconds for seconds, _ in runs]
    return {
        "seconds": statistics.median(times),
        "runs": times,
        "graph_projects": runs[-1][1],
    }


def pip_argv(url: str, top: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--no-cache-dir",
        "--index-url",
        f"{url}/simple/",
        top,
    ]


def uv_argv(url: str, requirements: Path) -> list[str]:
    uv = shutil.which("uv") or "uv"
    return [
        uv,
        "pip",
        "compile",
        "--no-cache",
        "--no-config",
        "--index-url",
        f"{url}/simple/",
        "--python-version",
        "3.11",
        str(requirements),
    ]


def measure_resolutions(
    urls: dict[str, str], corpus: Corpus, args: argparse.Namespace, timeout: float
) -> dict[str, Figures]:
    requirements = corpus.root / "requirements.in"
    requirements.write_text(corpus.top_project + "\n")
    top = corpus.top_project
    tools = {
        "pip": {name: pip_argv(url, top) for name, url in urls.items()},
        "uv": {name: uv_argv(url, requirements) for name, url in urls.items()},
    }
    figures: dict[str, Figures] = {name: {} for name in urls}
    for tool, argvs in tools.items():
        for name, figure in measure_resolution(argvs, args.repeats, timeout, top).items():
            figures[name][tool] = figure
            log(f"    {name} {tool}: {json.dumps(figure)}")
    return figures


def measure_uploads(url: str, corpus: Corpus, timeout: float) -> Figures:
    argv = [
        sys.executable,
        "-m",
        "twine",
        "upload",
        "--repository-url",
        f"{url}/",
        "-u",
        "bench",
        "-p",
        "bench",
        "--non-interactive",
        "--disable-progress-bar",
        *map(str, corpus.uploads),
    ]
    seconds, done = timed(argv, timeout)
    if done.returncode != 0:
        raise RuntimeError((done.stderr or done.stdout)[-300:])
    listed = page_status(url, "/simple/bench-upload-49/") == 200
    return {"seconds": seconds, "files": len(corpus.uploads), "last_listed": listed}


def measure_copies(url: str, corpus: Corpus, within: float = COPY_WAIT) -> Figures:
    """Seconds from a wheel copied into the served directory (as ``cp`` or
    ``scp`` would) until its project page lists it: every other one into the
    top level, the others each into a new two-level subdirectory."""
    samples: dict[str, list[float]] = {"top_level": [], "new_subdirectory": []}
    for k, wheel in enumerate(corpus.copies):
        where = "new_subdirectory" if k % 2 else "top_level"
        target = corpus.packages
        if where == "new_subdirectory":
            target = corpus.packages / COPY_SUBDIRECTORY / f"{k:02d}" / "dist"
        began = time.perf_counter()
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, target)
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        seconds = seconds_until_listed(url, f"/simple/{project}/", wheel.name, began, within)
        samples[where].append(seconds)
    return {
        where: {
            "median_seconds": statistics.median(values),
            "max_seconds": max(values),
            "samples": values,
        }
        for where, values in samples.items()
    }


def seconds_until_listed(
    url: str, path: str, filename: str, began: float, within: float
) -> float:
    for _ in range(int(within / COPY_POLL) + 1):
        status, body = page(url, path)
        if status == 200 and f">{filename}<".encode() in body:
            return time.perf_counter() - began
        if time.perf_counter() - began > within:
            break
        time.sleep(COPY_POLL)
    raise RuntimeError(f"{filename} not listed at {path} after {within:g} s")


def page_status(url: str, path: str) -> int:
    return page(url, path)[0]


def page(url: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def remove_new_files(corpus: Corpus) -> None:
    # Each server gets the same new projects; the next must not see them.
    for path in corpus.uploads + corpus.copies:
        (corpus.packages / path.name).unlink(missing_ok=True)
    shutil.rmtree(corpus.packages / COPY_SUBDIRECTORY, ignore_errors=True)


# -- one server ---------------------------------------------------------------


def serve_and_measure(
    specs: list[servers.ServerSpec],
    corpus: Corpus,
    args: argparse.Namespace,
    workdir: Path,
    *,
    uploads: bool,
    timeout: float,
) -> dict[str, Figures]:
    """Start every server of ``specs`` (the first must start, the others may
    fail and are reported so), measure them side by side, stop them.  Only
    the first is sent uploads, when ``uploads``."""
    # Other work on the machine skews every figure; record how busy it was.
    loadavg = os.getloadavg()[0]
    figures: dict[str, Figures] = {}
    started: dict[str, servers.RunningServer] = {}
    try:
        for spec in specs:
            try:
                server = servers.start(spec, workdir, timeout)
            except (servers.ServerFailed, OSError) as error:
                if not started:
                    raise
                figures[spec.name] = {"error": str(error)}
                continue
            started[spec.name] = server
            figures[spec.name] = {
                # The first start over this corpus, but for ours: see measure_ours.
                "cold_start_seconds": server.startup_seconds,
                "loadavg_1min": loadavg,
            }
            log(f"  {spec.name}: healthy in {server.startup_seconds:.2f} s")
        urls = {name: server.spec.url for name, server in started.items()}
        for measured in (
            measure_loads(urls, corpus, args.duration, workdir),
            measure_resolutions(urls, corpus, args, timeout),
        ):
            for name, values in measured.items():
                figures[name].update(values)
        if uploads:
            first = specs[0]
            figures[first.name]["upload"] = attempt(
                lambda: measure_uploads(first.url, corpus, timeout)
            )
            log(f"    {first.name} upload: {json.dumps(figures[first.name]['upload'])}")
            figures[first.name]["copy"] = attempt(
                lambda: measure_copies(first.url, corpus)
            )
            log(f"    {first.name} copy: {json.dumps(figures[first.name]['copy'])}")
        for name, server in started.items():
            figures[name]["memory"] = servers.tree_memory(server.process.pid)
            log(f"    {name} memory: {json.dumps(figures[name]['memory'])}")
    finally:
        for server in started.values():
            servers.stop(server)
        remove_new_files(corpus)
    return figures


def measure_ours(
    corpus: Corpus, args: argparse.Namespace, workdir: Path, beside: list[servers.ServerSpec]
) -> dict[str, Figures]:
    """Ours, and the servers ``beside`` it measured side by side with it."""
    # The first start hashes every file (cold digest cache); the later ones
    # read the cache the first one persisted, which is the everyday restart.
    shutil.rmtree(corpus.packages / ".pypiserver", ignore_errors=True)
    servers.compile_package("pypiserver")
    spec = servers.ours_spec(
        corpus.packages, servers.free_port(), shlex.split(args.ours_options)
    )
    cold = timed_start(spec, workdir, timeout=600)
    log(f"  ours: cold start {cold:.2f} s")
    os.sync()  # the digest cache it wrote, as a restart later would find it
    # A warm start takes about a second, which other work on the machine
    # moves by a quarter: the median of several is reported, the last being
    # the start of the server then measured.
    warm = [timed_start(spec, workdir) for _ in range(args.repeats - 1)]
    figures = serve_and_measure(
        [spec, *beside], corpus, args, workdir, uploads=True, timeout=300
    )
    ours = figures["ours"]
    warm.append(ours.pop("cold_start_seconds"))  # the cold start came first
    ours["cold_start_seconds"] = cold
    ours["warm_start_seconds"] = statistics.median(warm)
    ours["warm_start_samples"] = warm
    log(f"  ours: warm starts {', '.join(f'{s:.2f}' for s in warm)} s")
    # The static application's start and memory are those of reading the
    # whole index into memory, not figures of the server.
    for key in ("cold_start_seconds", "memory"):
        figures.get("granian", {}).pop(key, None)
    return figures


def timed_start(spec: servers.ServerSpec, workdir: Path, timeout: float = 300) -> float:
    """Seconds one start of ``spec`` takes to answer; it is stopped at once."""
    server = servers.start(spec, workdir, timeout=timeout)
    servers.stop(server)
    return server.startup_seconds


def nginx_spec(corpus: Corpus, workdir: Path) -> servers.ServerSpec:
    root = workdir / "nginx"
    root.mkdir(exist_ok=True)
    return servers.nginx_spec(root, corpus.static, corpus.packages, servers.free_port())


def static_app_spec(corpus: Corpus) -> servers.ServerSpec:
    return servers.static_app_spec(corpus.static, corpus.packages, servers.free_port())


def measure_upstream(
    corpus: Corpus, args: argparse.Namespace, workdir: Path, executable: Path
) -> Figures:
    # Alone, after the others: at N = 10,000 it takes minutes per step,
    # which side by side would spread the other two servers' measurements.
    spec = servers.upstream_spec(executable, corpus.packages, servers.free_port())
    return serve_and_measure(
        [spec], corpus, args, workdir, uploads=True, timeout=args.upstream_cap
    )["upstream"]


def generate_corpus(n: int, workdir: Path) -> Corpus:
    log(f"N = {n}: generating corpus")
    corpus = corpus_mod.generate(workdir / "corpus", n)
    log(f"  {corpus.size} projects, {corpus.size * 6} files in {corpus.seconds:.1f} s")
    # Written back to disk now, not by the kernel while the first server
    # measured starts (60,000 files are still being flushed half a minute on).
    os.sync()
    return corpus


def bench_size(
    corpus: Corpus,
    args: argparse.Namespace,
    workdir: Path,
    upstream: Path | None,
    tools: dict[str, bool],
) -> Figures:
    results: Figures = {"corpus_seconds": corpus.seconds, "files": corpus.size * 6}
    beside = [] if args.skip_granian else [static_app_spec(corpus)]
    if not args.skip_nginx and tools.get("nginx"):
        beside.append(nginx_spec(corpus, workdir))
    measured = attempt(lambda: measure_ours(corpus, args, workdir, beside))
    if "error" in measured:  # ours did not start: nothing was measured beside it
        results["ours"] = measured
    else:
        results.update(measured)
    if upstream is not None:
        results["upstream"] = attempt(
            lambda: measure_upstream(corpus, args, workdir, upstream)
        )
    return results


#: The loads measured for flatness, in the order of the tables per N: the
#: first of HTML and of JSON is every worker's first request for each page.
FLAT_LOADS = (
    "project_html",
    "project_html_again",
    "project_json",
    "project_json_again",
    "project_html_plain",
    "download",
)


def measure_flatness(
    corpora: dict[int, Corpus], args: argparse.Namespace, workdir: Path
) -> dict[str, dict[int, Figures]]:
    """req/s over each corpus of ours and (unless ``--skip-granian``) of the
    static application, all four servers running at once, in
    ``args.flat_rounds`` rounds, each from a new warm start of all (so each
    has first passes too).

    Measured minutes apart, as the tables per N are, the same server's
    throughput moves by more than the 15 % the target allows, and even
    whole loads put on one size right after the other differed by up to a
    third.  So each load of a round is cut into slices of about a second
    (``--duration`` of them), put on the two sizes in turn, the order
    reversed every other slice: the two slices of a pair are measured a
    second apart, and :func:`flatness_table` takes the median of the
    pairs' ratios.  The static application, whose work per request does not
    depend on N, shows what the rest of the machine (granian, the kernel,
    wrk and the processor's caches) makes of the larger index."""
    kinds = FLAT_SERVERS[:1] if args.skip_granian else FLAT_SERVERS
    slices = max(1, round(args.duration))
    samples: dict[str, dict[int, dict[str, list[float]]]] = {
        kind: {n: {} for n in corpora} for kind in kinds
    }
    for round_ in range(args.flat_rounds):
        running = _start_side_by_side(corpora, kinds, args)
        try:
            for scenario in FLAT_LOADS:
                for kind in kinds:
                    for slice_ in range(slices):
                        ascending = (round_ * slices + slice_) % 2 == 0
                        for n in sorted(corpora, reverse=not ascending):
                            rps = _flat_load(
                                running[kind, n],
                                corpora[n],
                                scenario,
                                args.duration / slices,
                                slice_ == 0,
                                workdir,
                            )
                            samples[kind][n].setdefault(scenario, []).append(rps)
                    measured = ", ".join(
                        f"N = {n} {statistics.median(samples[kind][n][scenario][-slices:]):.0f}"
                        for n in sorted(corpora)
                    )
                    log(f"    {kind} {scenario}, round {round_ + 1}: {measured} req/s")
        finally:
            for server in running.values():
                servers.stop(server)
    return {
        kind: {
            n: {s: {"rps": statistics.median(rps), "samples": rps} for s, rps in rounds.items()}
            for n, rounds in sizes.items()
        }
        for kind, sizes in samples.items()
    }


#: Measured side by side for flatness: ours, and the static application
#: under the same HTTP server.
FLAT_SERVERS = ("ours", "granian")


def _start_side_by_side(
    corpora: dict[int, Corpus], kinds: tuple[str, ...], args: argparse.Namespace
) -> dict[tuple[str, int], servers.RunningServer]:
    running: dict[tuple[str, int], servers.RunningServer] = {}
    try:
        for kind in kinds:
            for n, corpus in corpora.items():
                spec = (
                    servers.ours_spec(
                        corpus.packages, servers.free_port(), shlex.split(args.ours_options)
                    )
                    if kind == "ours"
                    else static_app_spec(corpus)
                )
                running[kind, n] = servers.start(spec, corpus.root, timeout=300)
    except BaseException:
        for server in running.values():
            servers.stop(server)
        raise
    return running


def _flat_load(
    server: servers.RunningServer,
    corpus: Corpus,
    scenario: str,
    seconds: float,
    warmup: bool,
    workdir: Path,
) -> float:
    spec = load_specs(corpus, seconds)[scenario]
    if not warmup:
        spec = dataclasses.replace(spec, warmup=0)
    figure = load.run_load(server.spec.url, spec, workdir)
    if figure.errors or figure.non_2xx:
        raise RuntimeError(
            f"N = {corpus.size} {scenario}: {figure.errors} socket errors, "
            f"{figure.non_2xx} non-2xx responses"
        )
    return figure.rps


# -- report -------------------------------------------------------------------

# (label, path into a server's figures, larger-is-better, target for ours)
ROWS: list[tuple[str, tuple[str, ...], bool, str]] = [
    ("/simple/<p>/ HTML req/s", ("project_html", "rps"), True, ">= 0.5x nginx"),
    ("/simple/<p>/ HTML p99 ms", ("project_html", "p99_ms"), False, "<= 10 ms"),
    ("/simple/<p>/ HTML again req/s", ("project_html_again", "rps"), True, ""),
    ("/simple/<p>/ HTML again p99 ms", ("project_html_again", "p99_ms"), False, "<= 10 ms"),
    ("/simple/<p>/ JSON req/s", ("project_json", "rps"), True, ""),
    ("/simple/<p>/ JSON p99 ms", ("project_json", "p99_ms"), False, "<= 10 ms"),
    ("/simple/<p>/ JSON again req/s", ("project_json_again", "rps"), True, ""),
    ("/simple/<p>/ JSON again p99 ms", ("project_json_again", "p99_ms"), False, "<= 10 ms"),
    ("/simple/<p>/ HTML, no gzip, req/s", ("project_html_plain", "rps"), True, ""),
    ("/simple/<p>/ HTML, no gzip, p99 ms", ("project_html_plain", "p99_ms"), False, ""),
    ("/simple/ req/s", ("index", "rps"), True, ""),
    ("/simple/ p99 ms", ("index", "p99_ms"), False, "<= 10 ms"),
    ("download req/s", ("download", "rps"), True, ""),
    ("download p99 ms", ("download", "p99_ms"), False, "<= 10 ms"),
    ("pip resolve s", ("pip", "seconds"), False, "<= 1.2x nginx"),
    ("uv compile s", ("uv", "seconds"), False, "<= 1.2x nginx"),
    ("50 uploads (twine) s", ("upload", "seconds"), False, "<= 2 s"),
    ("copied in, listed after s", ("copy", "top_level", "max_seconds"), False, "<= 1 s"),
    ("same, into a new dir s", ("copy", "new_subdirectory", "max_seconds"), False, "<= 1 s"),
    ("cold start s", ("cold_start_seconds",), False, ""),
    ("warm start s", ("warm_start_seconds",), False, "<= 1.5 s"),
    ("memory, whole tree MB", ("memory", "total_mb"), False, ""),
    ("memory, largest process MB", ("memory", "largest_mb"), False, "<= 150 MB"),
]


def shown(figures: Any, path: tuple[str, ...]) -> str:
    value = dig(figures, path)
    if value is None:
        timeout = dig(figures, (*path[:-1], "timeout"))
        return f"> {timeout:.0f}" if timeout is not None else "n/a"
    return cell(value)


def dig(figures: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(figures, dict) or key not in figures:
            return None
        figures = figures[key]
    return float(figures) if isinstance(figures, (int, float)) else None


def cell(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def table(n: int, results: Figures) -> str:
    head = [
        "figure",
        *SERVER_ORDER,
        "ours/nginx",
        "ours/granian",
        "granian/nginx",
        "ours/upstream",
        "target",
    ]
    title = (
        f"### N = {n} ({results['files']} files, corpus built in "
        f"{results['corpus_seconds']:.1f} s)"
    )
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, path, _, target in ROWS:
        ours, bare, nginx, upstream = (dig(results.get(name), path) for name in SERVER_ORDER)
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    *(shown(results.get(name), path) for name in SERVER_ORDER),
                    ratio(ours, nginx),
                    ratio(ours, bare),
                    ratio(bare, nginx),
                    ratio(ours, upstream),
                    target,
                ]
            )
            + " |"
        )
    return "\n".join(lines + errors_of(results))


def errors_of(results: Figures) -> list[str]:
    notes = []
    for name in SERVER_ORDER:
        figures = results.get(name)
        if isinstance(figures, dict) and "error" in figures:
            notes.append(f"- {name} failed: {figures['error']}")
            continue
        for key, value in (figures or {}).items():
            if isinstance(value, dict) and "error" in value:
                notes.append(f"- {name} {key}: {value['error']}")
            elif isinstance(value, dict) and (
                value.get("errors") or value.get("non_2xx")
            ):
                notes.append(
                    f"- {name} {key}: {value['errors']} socket errors, "
                    f"{value['non_2xx']} non-2xx responses"
                )
    return ["", *notes] if notes else []


def flatness_table(runs: dict[int, Figures], side_by_side: dict | None = None) -> str:
    """Figures at the largest N over the smallest: 1.00 is perfectly flat.
    ``side_by_side`` is what :func:`measure_flatness` measured, if it ran."""
    small, large = min(runs), max(runs)
    measured = side_by_side if side_by_side and "error" not in side_by_side else {}
    if measured and "ours" not in measured:
        measured = {"ours": measured}  # a results file from before the static column
    # Keys of N are strings in a results file read back.
    flat = {
        kind: {int(n): figures for n, figures in sizes.items()}
        for kind, sizes in measured.items()
    }
    head = [
        "figure",
        *(f"{name} N={large}/N={small}" for name in SERVER_ORDER),
        *(f"{SIDE_BY_SIDE_LABELS[kind]}, side by side" for kind in FLAT_SERVERS),
        "target",
    ]
    lines = [
        f"### Flat in N ({large} vs {small} projects)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for label, path, _, _ in (row for row in ROWS if row[1][-1] in ("rps", "p99_ms")):
        cells = [
            ratio(dig(runs[large].get(s), path), dig(runs[small].get(s), path))
            for s in SERVER_ORDER
        ]
        for kind in FLAT_SERVERS:
            sizes = flat.get(kind, {})
            cells.append(paired_ratio(sizes.get(large), sizes.get(small), path))
        # The project list grows with N by design; pages and files must not.
        target = "within 0.85-1.15" if path[1] == "rps" and path[0] != "index" else ""
        lines.append("| " + " | ".join([label, *cells, target]) + " |")
    return "\n".join(lines)


def paired_ratio(large: Figures | None, small: Figures | None, path: tuple[str, ...]) -> str:
    """The median of the ratios of the samples measured in pairs (see
    :func:`measure_flatness`): a pair's two sizes share whatever else the
    machine was doing at that second, which the median of each size's
    samples would not pair up.  Without samples, the ratio of the figures."""
    pairs = [
        b / a
        for a, b in zip(_samples(small, path), _samples(large, path))
        if a > 0
    ]
    if pairs:
        return cell(statistics.median(pairs))
    return ratio(dig(large, path), dig(small, path))


def _samples(figures: Figures | None, path: tuple[str, ...]) -> list[float]:
    measured = (figures or {}).get(path[0], {})
    return list(measured.get("samples", [])) if path[-1] == "rps" else []


#: The side-by-side columns' headings.
SIDE_BY_SIDE_LABELS = {"ours": "ours", "granian": "granian static"}


def machine() -> Figures:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_tool": "wrk" if load.have_wrk() else "python",
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_out() -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPO_ROOT / "bench" / "results" / f"bench-{stamp}.json"


def run(args: argparse.Namespace, workdir: Path) -> tuple[Figures, str]:
    tools = servers.ensure_tools(want_nginx=not args.skip_nginx)
    upstream = None
    if not args.skip_upstream:
        log("installing released pypiserver in its own venv")
        upstream = servers.install_upstream(workdir / "upstream-venv")
    report: Figures = {
        "machine": machine(),
        "args": vars(args) | {"out": str(args.out)},
        "runs": {},
    }
    # The smallest and largest corpora are kept for the flatness measurement.
    ends = {min(args.projects), max(args.projects)} if args.flat_rounds > 0 else set()
    corpora: dict[int, Corpus] = {}
    for n in args.projects:
        size_dir = workdir / f"n{n}"
        size_dir.mkdir()
        corpus = generate_corpus(n, size_dir)
        report["runs"][n] = bench_size(corpus, args, size_dir, upstream, tools)
        corpora[n] = corpus
    if len(ends) > 1:
        log(f"flatness: N = {' and N = '.join(map(str, sorted(ends)))} side by side")
        report["flatness"] = attempt(
            lambda: measure_flatness({n: corpora[n] for n in sorted(ends)}, args, workdir)
        )
    if not args.keep:
        for corpus in corpora.values():
            shutil.rmtree(corpus.root, ignore_errors=True)
    return report, tables_of(report)


def tables_of(report: Figures) -> str:
    runs = {int(n): figures for n, figures in report["runs"].items()}
    tables = [table(n, figures) for n, figures in runs.items()]
    if len(runs) > 1:
        tables.append(flatness_table(runs, report.get("flatness")))
        if "error" in report.get("flatness", {}):
            tables.append(f"- flatness side by side failed: {report['flatness']['error']}")
    return "\n\n".join(tables)


def reprint(path: Path) -> int:
    print(tables_of(json.loads(path.read_text())))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        return reprint(args.report)
    args.out = args.out or default_out()
    workdir = Path(tempfile.mkdtemp(prefix="pypiserver-bench-"))
    # nginx workers run as an unprivileged user and must reach the corpus.
    workdir.chmod(0o755)
    try:
        report, markdown = run(args, workdir)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(markdown)
    log(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
