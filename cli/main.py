"""The ``interaction-summary`` command line: run the stack or one part of it, and operate it.

Every command reads its settings from the environment (``core.config``); docker-compose and
the tests run the worker and the API with these same commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from core.config import Settings, get_settings

T = TypeVar("T")

app = typer.Typer(
    name="interaction-summary",
    help="Kafka interactions -> exactly-once period counters in Postgres and Redis -> a summary API.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create and revoke API keys.", no_args_is_help=True)
catalog_app = typer.Typer(
    help="Manage the catalog (actions, treatments, channels).", no_args_is_help=True
)
outcome_types_app = typer.Typer(
    help="Manage the tenant's custom outcome types.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(catalog_app, name="catalog")
app.add_typer(outcome_types_app, name="outcome-types")

console = Console()
errors = Console(stderr=True)


@app.command()
def up(
    state_dir: Annotated[
        Path, typer.Option(help="where Postgres data, logs and stack.json live")
    ] = Path(".interaction-summary"),
    demo: Annotated[
        bool, typer.Option(help="load a sample catalog and produce synthetic events")
    ] = False,
    demo_rate: Annotated[
        float, typer.Option(help="events per second of the demo producer")
    ] = 200.0,
    api_port: Annotated[int, typer.Option(help="preferred API port (a free one if taken)")] = 8000,
    demo_history: Annotated[
        int, typer.Option(help="events of the last 30 days the demo publishes before going live")
    ] = 30_000,
) -> None:
    """Run the whole stack in the foreground: broker, Postgres, Redis, worker, API.

    Parts whose address is set (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, REDIS_URL) are used,
    not started. Ctrl-C stops everything.
    """
    from cli.stack import StackOptions, run_up
    from core.logs import configure_logging

    configure_logging("WARNING")  # interactive: the live table tells the rest; parts log to files
    options = StackOptions(state_dir.resolve(), demo, demo_rate, api_port, demo_history)
    raise typer.Exit(run_up(options, console))


@app.command()
def migrate(
    api_role: Annotated[
        str | None,
        typer.Option(help="also grant this existing role what the API needs, and nothing more"),
    ] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for Postgres to answer")] = 0.0,
) -> None:
    """Apply pending schema migrations (refused if an applied migration file was edited)."""
    from core.db import SchemaError
    from core.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        applied, granted = asyncio.run(_migrate(settings, api_role, wait))
    except SchemaError as exc:
        errors.print(f"[red]migration refused:[/] {exc}")
        raise typer.Exit(1) from None
    except ValueError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    except (OSError, asyncpg.PostgresError) as exc:
        where = settings.database_url.split("@")[-1]
        errors.print(f"cannot migrate Postgres at DATABASE_URL ({where}): {exc}")
        raise typer.Exit(1) from None
    errors.print(
        f"{len(applied)} migration(s) applied{': ' + ', '.join(applied) if applied else ''}"
    )
    for statement in granted:
        errors.print(statement)


async def _migrate(
    settings: Settings, api_role: str | None, wait: float
) -> tuple[list[str], list[str]]:
    """Migrate (waiting up to ``wait`` s for Postgres to accept connections), then grant."""
    import time

    from core.db import migrate as apply_migrations
    from core.roles import grant_api_role

    deadline = time.monotonic() + wait
    while True:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=10)
            break
        except (OSError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
    try:
        applied = await apply_migrations(conn)
        granted = await grant_api_role(conn, api_role) if api_role else []
    finally:
        await conn.close()
    return applied, granted


@app.command()
def worker(
    loglevel: Annotated[
        str | None, typer.Option(help="default: INTERACTION_SUMMARY_LOG_LEVEL")
    ] = None,
) -> None:
    """Run the stream worker: migrations first, then the topics if missing, then consume."""
    from core.db import SchemaError
    from core.logs import configure_logging
    from streams.topics import ensure_topics, service_topics

    settings = get_settings()
    configure_logging(loglevel or settings.log_level)
    try:
        asyncio.run(_migrate(settings, None, wait=120))
    except SchemaError as exc:  # an edited migration does not heal by retrying
        errors.print(f"[red]worker not started, migration refused:[/] {exc}")
        raise typer.Exit(1) from None
    except Exception as exc:
        from streams.exits import EXIT_CONFIG
        from streams.pipeline import postgres_error_kind

        if postgres_error_kind(exc) == "transient":  # still unreachable after the wait
            raise
        # A wrong password or an unknown database does not heal: say so and stop (plain
        # text on stderr, one line, as the worker itself says it).
        print(
            f"postgres refused the worker ({type(exc).__name__}: {exc});"
            " check DATABASE_URL and the migrations",
            file=sys.stderr,
        )
        raise typer.Exit(EXIT_CONFIG) from None
    asyncio.run(
        ensure_topics(settings.kafka_bootstrap_servers, service_topics(settings), wait_seconds=120)
    )
    from streams.app import run_worker

    run_worker((loglevel or settings.log_level).lower())


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="default: INTERACTION_SUMMARY_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: INTERACTION_SUMMARY_API_PORT")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="default: INTERACTION_SUMMARY_LOG_LEVEL")
    ] = None,
) -> None:
    """Run the summary API (uvicorn). It never migrates: run `migrate` (or the worker) first."""
    import uvicorn

    from core.logs import configure_logging

    settings = get_settings()
    level = (log_level or settings.log_level).upper()
    configure_logging(level)
    trusted = settings.api_forwarded_allow_ips.strip()
    uvicorn.run(
        "api.main:app",
        host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        log_level=level.lower(),
        log_config=None,  # ours (JSON), configured above
        access_log=False,  # api.access writes the access log, without query strings
        # X-Forwarded-For is believed only from these proxies; by default from none, so the
        # client address (rate limits, access log) is the TCP peer.
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        server_header=False,
    )


@app.command()
def produce(
    file: Annotated[
        str | None,
        typer.Argument(help="JSON-lines file, '-' for stdin; omitted: synthetic events"),
    ] = None,
    rate: Annotated[float, typer.Option(help="events per second; 0: as fast as possible")] = 0.0,
    count: Annotated[
        int | None, typer.Option(help="stop after this many (default: all lines / forever)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="synthetic: event seed (default random)")] = None,
    catalog_seed: Annotated[int, typer.Option(help="synthetic: catalog the events use")] = 0,
    backfill_days: Annotated[
        float, typer.Option(help="synthetic: spread timestamps over this many past days")
    ] = 0.0,
    topic: Annotated[str | None, typer.Option(help="default: INTERACTION_SUMMARY_TOPIC")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Publish interaction events, keyed by customerId, with a progress bar."""
    from core.logs import configure_logging

    settings = get_settings()
    configure_logging("WARNING")  # interactive: the progress bar tells the rest
    if file is None and count is None and rate == 0:
        raise typer.BadParameter("synthetic events need --count or --rate (else they never end)")
    with contextlib.ExitStack() as opened:
        messages, total = _event_source(opened, file, count, seed, catalog_seed, backfill_days)
        target = topic or settings.topic
        acknowledged = _publish_with_progress(settings, target, messages, rate, count, total, quiet)
    if not quiet:
        errors.print(f"{acknowledged:,} events acknowledged by {settings.kafka_bootstrap_servers}")


def _event_source(
    opened: contextlib.ExitStack,
    file: str | None,
    count: int | None,
    seed: int | None,
    catalog_seed: int,
    backfill_days: float,
) -> tuple[Iterator[tuple[bytes | None, bytes]], int | None]:
    """The messages to publish and how many there will be (None: unknown or endless)."""
    from cli import produce as producing
    from cli.stack import random_seed

    if file is None:
        event_seed = seed if seed is not None else random_seed()
        return producing.synthetic_messages(
            event_seed, catalog_seed, backfill_days, producing.utc_now
        ), count
    if file == "-":
        return producing.lines_of(sys.stdin.buffer), count
    path = Path(file)
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {file}", param_hint="FILE")
    with path.open("rb") as lines:
        in_file = sum(1 for line in lines if line.strip())
    stream = opened.enter_context(path.open("rb"))
    return producing.lines_of(stream), min(in_file, count) if count is not None else in_file


def _publish_with_progress(
    settings: Settings,
    topic: str,
    messages: Iterator[tuple[bytes | None, bytes]],
    rate: float,
    count: int | None,
    total: int | None,
    quiet: bool,
) -> int:
    from cli import produce as producing

    columns = (
        SpinnerColumn(),
        TextColumn("producing to [bold]{task.fields[topic]}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acked {task.fields[acked]:,}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=errors, disable=quiet) as progress:
        task = progress.add_task("produce", total=total, topic=topic, acked=0)

        def show(stats: producing.ProduceStats) -> None:
            progress.update(task, completed=stats.sent, acked=stats.acknowledged)

        chunks = producing.paced(messages, rate, count)
        try:
            stats = asyncio.run(
                producing.publish(settings.kafka_bootstrap_servers, topic, chunks, show)
            )
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    return stats.acknowledged


@keys_app.command("create")
def keys_create(
    role: Annotated[
        str, typer.Option(help="producer (ingest only), viewer, editor or admin")
    ] = "viewer",
    tenant: Annotated[str, typer.Option(help="the tenant the key sees")] = "default",
    label: Annotated[str | None, typer.Option(help="a note stored with the key")] = None,
) -> None:
    """Create an API key and print it (the only time it is shown)."""
    from api.auth import Role, create_key

    try:
        parsed = Role.parse(role)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--role") from None
    from api.auth import key_prefix
    from core.logs import audit

    key = _with_pool(lambda pool: create_key(pool, parsed, tenant, label))
    audit("key.create", _cli_actor(), tenant=tenant, key_prefix=key_prefix(key), role=parsed.label)
    print(key)
    errors.print(f"{parsed.label} key for tenant {tenant!r} created; it is not stored in clear.")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="the key, or its prefix as shown in logs")],
) -> None:
    """Revoke a key (within the API's key cache time it stops working everywhere)."""
    from api.auth import key_prefix, revoke_key
    from core.logs import audit

    revoked = _with_pool(lambda pool: revoke_key(pool, key))
    audit("key.revoke", _cli_actor(), key_prefix=key_prefix(key), revoked=revoked)
    if not revoked:
        errors.print(f"no active key matches {key!r}")
        raise typer.Exit(1)
    errors.print(f"{revoked} key(s) revoked")


@catalog_app.command("load")
def catalog_load(
    file: Annotated[Path, typer.Argument(help="JSON with actions, treatments, channels")],
    tenant: Annotated[str, typer.Option(help="the tenant the catalog belongs to")] = "default",
) -> None:
    """Upsert a catalog file into Postgres (the API picks it up within a second)."""
    from pydantic import ValidationError

    from api.catalog import CatalogDocument, load_catalog

    try:
        document = CatalogDocument.model_validate_json(file.read_bytes())
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}") from None
    except ValidationError as exc:
        errors.print(f"{file} is not a valid catalog:\n{exc}")
        raise typer.Exit(1) from None
    from core.logs import audit

    _with_pool(lambda pool: load_catalog(pool, document, tenant))
    audit(
        "catalog.load",
        _cli_actor(),
        tenant=tenant,
        actions=len(document.actions),
        treatments=len(document.treatments),
        channels=len(document.channels),
    )
    console.print(
        f"loaded {len(document.actions)} actions, {len(document.treatments)} treatments,"
        f" {len(document.channels)} channels for tenant {tenant!r}"
    )


@outcome_types_app.command("load")
def outcome_types_load(
    file: Annotated[Path, typer.Argument(help='JSON: {"outcomeTypes": [{key, name, ...}]}')],
    tenant: Annotated[str, typer.Option(help="the tenant the types belong to")] = "default",
) -> None:
    """Create or replace custom outcome types (answers apply them within a second)."""
    from pydantic import ValidationError

    from api.outcome_types import OutcomeTypesDocument, SystemTypeError, TooManyTypes, load_types

    try:
        document = OutcomeTypesDocument.model_validate_json(file.read_bytes())
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}") from None
    except ValidationError as exc:
        errors.print(f"{file} is not a valid outcome-types file:\n{exc}")
        raise typer.Exit(1) from None
    from core.logs import audit

    try:
        loaded = _with_pool(lambda pool: load_types(pool, document, tenant))
    except (SystemTypeError, TooManyTypes) as exc:
        errors.print(f"{file}: {exc}")
        raise typer.Exit(1) from None
    audit("outcome_types.load", _cli_actor(), tenant=tenant, types=loaded)
    console.print(f"loaded {loaded} outcome types for tenant {tenant!r}")


@app.command()
def rebuild() -> None:
    """Recount every bucket from the raw history, then resync Redis from Postgres."""
    from redis.asyncio import Redis

    from streams.rebuild import HistoryIncomplete
    from streams.rebuild import rebuild as rebuild_all
    from streams.redis_sink import RedisSink

    settings = get_settings()

    async def run(pool: asyncpg.Pool) -> int:
        redis = Redis.from_url(settings.redis_url)
        try:
            return await rebuild_all(pool, RedisSink(redis, settings.redis_prefix))
        except HistoryIncomplete as exc:
            errors.print(str(exc))
            raise typer.Exit(1) from None
        finally:
            await redis.aclose()

    with console.status("Rebuilding buckets from history..."):
        rows = _with_pool(run, settings)
    console.print(f"rebuilt {rows:,} bucket rows; Redis resynced")


@app.command()
def retention() -> None:
    """Create the next months' history partitions and apply the retention settings now (the
    worker does it every INTERACTION_SUMMARY_RETENTION_CHECK_SECONDS)."""
    from datetime import UTC, datetime

    from streams.retention import RetentionRun, run_retention

    settings = get_settings()

    async def run(pool: asyncpg.Pool) -> RetentionRun | None:
        async with pool.acquire() as conn:
            return await run_retention(
                conn,
                datetime.now(UTC),
                settings.retention_history_days,
                settings.retention_bucket_days,
                settings.retention_distinct_days,
            )

    done = _with_pool(run, settings)
    if done is None:
        console.print("a worker is applying retention right now; nothing done")
        return
    h = done.horizons
    console.print(
        f"kept: history from {h.history_from or 'the start'}, daily buckets from"
        f" {h.buckets_from or 'the start'}, distinct tags from {h.distinct_from or 'the start'}"
    )
    console.print(
        f"partitions created {', '.join(done.partitions_created) or '-'};"
        f" dropped {', '.join(done.partitions_dropped) or '-'};"
        f" {done.history_rows_deleted:,} history rows, {done.fence_rows_deleted:,} fence rows"
        f" and {done.buckets_deleted:,} daily buckets"
        f" deleted; {done.pairs_pruned:,} distinct pairs lost old tags"
    )


def _cli_actor() -> dict[str, str]:
    """Who made a change from the command line, for the audit log."""
    import getpass

    return {"via": "cli", "os_user": getpass.getuser()}


def _with_pool(use: Callable[[asyncpg.Pool], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run ``use`` with a pool on the configured database (its schema must be current)."""
    from core.db import SchemaError, create_pool
    from core.logs import configure_logging

    settings = settings or get_settings()
    configure_logging(settings.log_level)
    dsn = settings.database_url

    async def run() -> T:
        try:
            pool = await create_pool(
                dsn, min_size=1, max_size=2, connect_timeout=10, run_migrations=False
            )
        except SchemaError as exc:
            errors.print(str(exc))
            raise typer.Exit(1) from None
        except (OSError, asyncpg.PostgresError) as exc:
            errors.print(f"cannot reach Postgres at DATABASE_URL ({dsn.split('@')[-1]}): {exc}")
            raise typer.Exit(1) from None
        try:
            return await use(pool)
        finally:
            await pool.close()

    return asyncio.run(run())
