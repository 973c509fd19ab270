"""HTTP load: wrk when it is installed, else a bounded pure-Python client.

Both rotate over many paths (every project page, not one hot page), so what
is measured is the cost of serving the catalogue, not of one cached response.
Both report the same :class:`LoadResult`: requests per second and latency
percentiles in milliseconds, plus error counts so a fast stream of 404s is
never mistaken for a fast server.
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["LoadResult", "LoadSpec", "have_wrk", "run_load"]

_WRK_MARK = "BENCHJSON "
# wrk's Lua: each thread starts at its own offset of one shuffled path list;
# done() prints the summary as JSON so no human-readable output is parsed.
_WRK_SCRIPT = """\
local paths = {%(paths)s}
local created = 0
function setup(thread)
  thread:set("counter", created * 7919)
  created = created + 1
end
request = function()
  counter = counter + 1
  return wrk.format(nil, paths[(counter %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,' ..
    '"errors":%%d,"non_2xx":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One measurement: which paths, with which headers, for how long."""

    paths: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)
    duration: float = 5.0
    threads: int = 2
    connections: int = 32
    #: Unmeasured load first, so one-off work (first render, page cache)
    #: does not count against the steady state being compared.
    warmup: float = 1.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    non_2xx: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_load(base_url: str, spec: LoadSpec, workdir: Path) -> LoadResult:
    """Measure ``spec`` against ``base_url`` (``http://127.0.0.1:PORT``)."""
    paths = _shuffled(spec.paths)
    run = _run_wrk if have_wrk() else _run_python
    if spec.warmup > 0:
        run(base_url, paths, spec, spec.warmup, workdir)
    return run(base_url, paths, spec, spec.duration, workdir)


def _shuffled(paths: tuple[str, ...]) -> tuple[str, ...]:
    # A fixed seed keeps runs comparable; shuffling defeats sequential locality.
    order = list(paths)
    random.Random(503).shuffle(order)
    return tuple(order)


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_script(paths: tuple[str, ...], workdir: Path) -> Path:
    script = workdir / "rotate.lua"
    body = _WRK_SCRIPT % {"paths": ",".join(map(_lua_string, paths)), "mark": _WRK_MARK}
    script.write_text(body)
    return script


def _run_wrk(
    base_url: str, paths: tuple[str, ...], spec: LoadSpec, seconds: float, workdir: Path
) -> LoadResult:
    script = _write_script(paths, workdir)
    argv = [
        "wrk",
        f"-t{spec.threads}",
        f"-c{spec.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
    ]
    for name, value in spec.headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(base_url + paths[0])
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    return _parse_wrk(done.stdout, done.stderr)


def _parse_wrk(stdout: str, stderr: str) -> LoadResult:
    line = next((l for l in stdout.splitlines() if l.startswith(_WRK_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{stdout}\n{stderr}")
    data = json.loads(line[len(_WRK_MARK) :])
    seconds = data["duration_us"] / 1e6
    # With no completed request wrk reports 0 latency; that is "unknown".
    answered = data["requests"] > 0
    return LoadResult(
        "wrk",
        data["requests"],
        seconds,
        data["requests"] / seconds,
        data["p50_us"] / 1000 if answered else None,
        data["p99_us"] / 1000 if answered else None,
        data["errors"],
        data["non_2xx"],
    )


class _Tally:
    """Latencies and failures gathered by the fallback client's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors = 0
        self.non_2xx = 0

    def add(self, latencies: list[float], errors: int, non_2xx: int) -> None:
        with self.lock:
            self.latencies += latencies
            self.errors += errors
            self.non_2xx += non_2xx


# The fallback is bounded twice: by time, and by a request count per
# connection, so a pathologically fast or broken target cannot run away.
_MAX_REQUESTS_PER_CONNECTION = 200_000


def _client_loop(
    host: str,
    port: int,
    paths: tuple[str, ...],
    offset: int,
    headers: dict[str, str],
    deadline: float,
    tally: _Tally,
) -> None:
    latencies: list[float] = []
    errors = non_2xx = 0
    conn = http.client.HTTPConnection(host, port, timeout=5)
    for i in range(_MAX_REQUESTS_PER_CONNECTION):
        if time.perf_counter() >= deadline:
            break
        started = time.perf_counter()
        try:
            conn.request("GET", paths[(offset + i) % len(paths)], headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=5)
            continue
        latencies.append(time.perf_counter() - started)
        non_2xx += not 200 <= response.status < 300
    conn.close()
    tally.add(latencies, errors, non_2xx)


def _percentile(sorted_seconds: list[float], fraction: float) -> float | None:
    """The ``fraction`` percentile in milliseconds; None when nothing answered."""
    if not sorted_seconds:
        return None
    index = min(len(sorted_seconds) - 1, int(fraction * len(sorted_seconds)))
    return sorted_seconds[index] * 1000


def _run_python(
    base_url: str, paths: tuple[str, ...], spec: LoadSpec, seconds: float, workdir: Path
) -> LoadResult:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    tally = _Tally()
    started = time.perf_counter()
    deadline = started + seconds
    workers = [
        threading.Thread(
            target=_client_loop,
            daemon=True,
            args=(host, int(port), paths, k * 7919, spec.headers, deadline, tally),
        )
        for k in range(spec.connections)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + 10)
    elapsed = time.perf_counter() - started
    latencies = sorted(tally.latencies)
    return LoadResult(
        "python",
        len(latencies),
        elapsed,
        len(latencies) / elapsed,
        _percentile(latencies, 0.5),
        _percentile(latencies, 0.99),
        tally.errors,
        tally.non_2xx,
    )
