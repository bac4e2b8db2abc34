"""The two ceilings of the ingest benchmark, each run as its own process by ``bench.ingest``.

``python -m bench.consumers aiokafka|faust-noop --events N --result FILE`` reads N messages
of the topic named by ``INTERACTION_SUMMARY_TOPIC`` and writes to FILE, as JSON: events,
seconds from the first message to the last, seconds to the first message (group join
included), CPU seconds used in between and the process's peak RSS. (A file, not stdout:
Faust's worker takes stdout over for its logging.)

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import kafka
from bench.report import peak_rss_mb

_STARTED = time.perf_counter()


@dataclass(frozen=True, slots=True)
class Measured:
    """One consumer's run, as printed on its last stdout line."""

    events: int
    seconds: float
    startup_seconds: float
    cpu_seconds: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _report(measured: Measured, result: Path) -> None:
    result.write_text(json.dumps(asdict(measured)))


async def _aiokafka(bootstrap: str, topic: str, events: int, group: str, result: Path) -> None:
    called, cpu = time.perf_counter(), time.process_time()
    drained = await kafka.drain(bootstrap, topic, events, group)
    # CPU of the whole drain: the group join costs next to nothing.
    _report(
        Measured(
            drained.events,
            drained.seconds,
            called - _STARTED + drained.startup_seconds,
            time.process_time() - cpu,
            peak_rss_mb(),
        ),
        result,
    )


def _faust_noop(events: int, result: Path) -> None:
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
        async for batch in stream.take_events(
            settings.batch_max_events, within=settings.batch_max_seconds
        ):
            seen["events"] += len(batch)
            if not seen["first"]:
                seen["first"], seen["cpu"] = time.perf_counter(), time.process_time()
                seen["in_first"] = seen["events"]
            if seen["events"] >= events and seen["first"] > 0:
                now = time.perf_counter()
                _report(
                    Measured(
                        int(seen["events"] - seen["in_first"]),
                        now - seen["first"],
                        seen["first"] - _STARTED,
                        time.process_time() - seen["cpu"],
                        peak_rss_mb(),
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
    args = parser.parse_args(argv)
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
            )
        )
    else:
        _faust_noop(args.events, args.result)
    sys.exit(0)


if __name__ == "__main__":
    main()
