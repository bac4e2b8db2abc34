"""The ``interaction-summary`` command line: run the stack or one part of it, and operate it."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from core.config import get_settings

app = typer.Typer(
    name="interaction-summary",
    help="Kafka interactions -> exactly-once period counters in Postgres and Redis -> a summary API.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option(help="Faust log level")] = "info",
) -> None:
    """Run the stream worker (creates the topics first if they are missing)."""
    from cli.topics import ensure_topics, service_topics

    settings = get_settings()
    asyncio.run(
        ensure_topics(settings.kafka_bootstrap_servers, service_topics(settings), wait_seconds=120)
    )
    from streams.app import run_worker

    run_worker(loglevel)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="default: INTERACTION_SUMMARY_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: INTERACTION_SUMMARY_API_PORT")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the summary API (uvicorn)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "api.main:app",
        host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        log_level=log_level,
        access_log=False,
    )
