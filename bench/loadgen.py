"""HTTP load: ``wrk`` when it is installed, else a small closed-loop asyncio client.

Both run in their own process (the API must not share its interpreter with the load) and
report the same JSON: requests, duration, latency percentiles and errors.

- ``wrk`` (Debian: ``apt-get install wrk``) is the load tool of record: C, epoll, one thread
  keeps 100 connections busy for a fraction of a core, which matters on a 2-core machine where
  the load generator competes with the API for CPU. A Lua script cycles the URLs, adds the
  auth header, optionally pauses between requests (a dashboard's poll interval, with jitter), and
  prints the summary as JSON.
- The fallback (``python -m bench.loadgen``) opens the same number of keep-alive
  connections with raw asyncio streams (no HTTP library: cheaper per request) and measures
  each request from write to the end of the body. It costs several times wrk's CPU, so its
  numbers are lower bounds; results say which tool made them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_MARK = "LOADGEN_JSON "

_WRK_SCRIPT = """
local paths = {%(paths)s}
local i = 0
wrk.headers["Authorization"] = "%(auth)s"
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
%(delay)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests": %%d, "duration_s": %%.6f, "p50_ms": %%.3f, "p90_ms": %%.3f, '
    .. '"p99_ms": %%.3f, "max_ms": %%.3f, "mean_ms": %%.3f, "errors": %%d, "non_2xx": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    latency.mean / 1e3, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


# Pauses drawn uniformly from [0.5, 1.5] x the mean: clients that paused exactly alike would
# stay in lockstep and arrive as bursts of 100, which real dashboards do not.
_WRK_DELAY = """
math.randomseed(os.time())
delay = function() return math.random(%(low)d, %(high)d) end
"""


@dataclass(frozen=True, slots=True)
class Load:
    """What one load run measured."""

    tool: str
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: int
    non_2xx: int

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__slots__}, "requests_per_s": self.rate}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


async def run(
    base_url: str,
    paths: list[str],
    auth: str,
    *,
    connections: int,
    seconds: float,
    delay_ms: float = 0.0,
    tool: str = "auto",
) -> Load:
    """Keep ``connections`` clients requesting ``paths`` in turn for ``seconds``."""
    if tool == "auto":
        tool = "wrk" if wrk_available() else "python"
    if tool == "wrk":
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(
                _WRK_SCRIPT
                % {
                    "paths": ", ".join(json.dumps(p) for p in paths),
                    "auth": auth,
                    "delay": _WRK_DELAY % {"low": delay_ms / 2, "high": delay_ms * 1.5}
                    if delay_ms
                    else "",
                    "mark": _MARK,
                }
            )
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s"]
        argv += ["-s", script.name, base_url]
    else:
        argv = [sys.executable, "-m", "bench.loadgen", base_url, *paths, "--auth", auth]
        argv += ["--connections", str(connections), "--seconds", str(seconds)]
        argv += ["--delay-ms", str(delay_ms)]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if tool == "wrk":
        _remove(script.name)
    for line in out.decode().splitlines():
        if line.startswith(_MARK):
            return Load(tool, **json.loads(line[len(_MARK) :]))
    raise RuntimeError(f"{tool} printed no result (exit {process.returncode}): {err.decode()}")


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)


# --- the fallback client --------------------------------------------------------------------


async def _client(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    deadline: float,
    delay: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    if delay:
        # Paced clients start spread over one pause: started together, the 100 first requests
        # queue behind each other and that one burst was the whole p99 of a paced run.
        await asyncio.sleep(random.uniform(0, delay))
    try:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            if not status_line.startswith(b"HTTP/1.1 2"):
                errors[1] += 1
            if delay:
                await asyncio.sleep(random.uniform(delay / 2, delay * 1.5))  # see _WRK_DELAY
    except (OSError, asyncio.IncompleteReadError):
        errors[0] += 1
    finally:
        writer.close()


async def _fallback(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {args.auth}\r\n\r\n".encode()
        for path in args.paths
    ]
    latencies: list[float] = []
    errors = [0, 0]
    began = time.perf_counter()
    deadline = began + args.seconds
    await asyncio.gather(
        *(
            _client(host, port, requests, n, deadline, args.delay_ms / 1000, latencies, errors)
            for n in range(args.connections)
        )
    )
    duration = time.perf_counter() - began
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q / 100 * len(ordered) + 0.999) - 1))]

    return {
        "requests": len(latencies),
        "duration_s": duration,
        "p50_ms": pct(50) * 1000,
        "p90_ms": pct(90) * 1000,
        "p99_ms": pct(99) * 1000,
        "max_ms": ordered[-1] * 1000,
        "mean_ms": sum(ordered) / len(ordered) * 1000,
        "errors": errors[0],
        "non_2xx": errors[1],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("base_url")
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--auth", required=True, help="the Authorization header's value")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(_MARK + json.dumps(asyncio.run(_fallback(args))), flush=True)


if __name__ == "__main__":
    main()
