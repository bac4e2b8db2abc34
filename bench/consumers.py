"""The two ceilings of the ingest benchmark, each run as its own process by ``bench.ingest``.

``python -m bench.consumers aiokafka|faust-noop --events N --result FILE`` reads N messages
of the topic named by ``INTERACTION_SUMMARY_TOPIC`` and writes to FILE, as JSON: events,
seconds from the first message to the last, seconds to the first message (group join
included), CPU seconds used in between and the process's peak RSS. (A file, not stdout:
Faust's worker takes stdout over for its logging.) ``--watch broker=PID`` (repeatable)
also measures the CPU other processes (the broker) used over the same window, sampled here
at the first batch and the last so that the window is exactly the consumer's.

- ``aiokafka``: a plain consumer group member that only counts (what Python can read).
- ``faust-noop``: the worker's own Faust app (``create_app``) and batch settings, with an
  agent that only counts (what Faust can deliver; the worker's figure is judged against it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import kafka
from bench.report import peak_rss_mb, stack_cpu_seconds

_STARTED = time.perf_counter()


@dataclass(frozen=True, slots=True)
class Measured:
    """One consumer's run, as printed on its last stdout line."""

    events: int
    seconds: float
    startup_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    # CPU seconds of the watched processes (name: seconds) over the same window.
    watched_cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class _Watched:
    """CPU of other processes (by name: their pids) between ``start()`` and ``stop()``."""

    def __init__(self, groups: Mapping[str, list[int]]) -> None:
        self._groups = groups
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = stack_cpu_seconds(self._groups)

    def stop(self) -> dict[str, float]:
        end = stack_cpu_seconds(self._groups)
        return {name: round(end[name] - self._start.get(name, end[name]), 3) for name in end}


# The do-nothing agent takes batches as the first worker did (take_events, 1 s window).
NOOP_BATCH_SECONDS = 1.0


def _report(measured: Measured, result: Path) -> None:
    """Write the result whole (the parent polls for the file, then stops this process)."""
    partial = result.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(measured)))
    partial.replace(result)


async def _aiokafka(
    bootstrap: str, topic: str, events: int, group: str, result: Path, watched: _Watched
) -> None:
    called, cpu = time.perf_counter(), time.process_time()
    drained = await kafka.drain(bootstrap, topic, events, group, on_first=watched.start)
    others = watched.stop()
    # CPU of the whole drain: the group join costs next to nothing.
    _report(
        Measured(
            drained.events,
            drained.seconds,
            called - _STARTED + drained.startup_seconds,
            time.process_time() - cpu,
            peak_rss_mb(),
            others,
        ),
        result,
    )


def _faust_noop(events: int, result: Path, watched: _Watched) -> None:
    """Run the worker's Faust app with a do-nothing agent until ``events`` were taken."""
    from faust import Worker

    from core.config import get_settings
    from streams.app import create_app

    settings = get_settings()
    app = create_app(settings)
    topic = app.topic(
        settings.topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    # Counted like every consumer here: the events after the first batch, over the time from
    # the first batch to the last.
    seen = {"events": 0, "first": 0.0, "cpu": 0.0, "in_first": 0}

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def do_nothing(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_max_events, within=NOOP_BATCH_SECONDS):
            seen["events"] += len(batch)
            if not seen["first"]:
                seen["first"], seen["cpu"] = time.perf_counter(), time.process_time()
                seen["in_first"] = seen["events"]
                watched.start()
            if seen["events"] >= events and seen["first"] > 0:
                now = time.perf_counter()
                others = watched.stop()
                _report(
                    Measured(
                        int(seen["events"] - seen["in_first"]),
                        now - seen["first"],
                        seen["first"] - _STARTED,
                        time.process_time() - seen["cpu"],
                        peak_rss_mb(),
                        others,
                    ),
                    result,
                )
                seen["first"] = -1.0  # report once
                os.kill(os.getpid(), signal.SIGTERM)

    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def use_uvloop() -> None:
    """Make asyncio (and so Faust's worker) run on uvloop in this process."""
    import mode.loop

    mode.loop.use("uvloop")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.consumers", description=__doc__)
    parser.add_argument("kind", choices=("aiokafka", "faust-noop"))
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME=PID[,PID...]",
        help="also measure these processes' CPU (with their descendants) over the window",
    )
    args = parser.parse_args(argv)
    watched = _Watched(
        {name: [int(p) for p in pids.split(",") if p] for name, _, pids in
         (w.partition("=") for w in args.watch)}
    )  # fmt: skip
    if args.uvloop:
        use_uvloop()
    if args.kind == "aiokafka":
        asyncio.run(
            _aiokafka(
                os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                os.environ["INTERACTION_SUMMARY_TOPIC"],
                args.events,
                os.environ["INTERACTION_SUMMARY_CONSUMER_GROUP"],
                args.result,
                watched,
            )
        )
    else:
        _faust_noop(args.events, args.result, watched)
    sys.exit(0)


if __name__ == "__main__":
    main()
