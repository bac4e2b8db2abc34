"""One settings object for every process (worker, API, CLI), read from the environment once."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from limits import parse_many
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.retention import MIN_RETENTION_DAYS


class Settings(BaseSettings):
    """Runtime configuration.

    The three server addresses use the conventional variable names; everything else is
    prefixed with ``INTERACTION_SUMMARY_`` so it cannot collide with unrelated variables.
    """

    model_config = SettingsConfigDict(
        env_prefix="INTERACTION_SUMMARY_", extra="ignore", frozen=True
    )

    kafka_bootstrap_servers: str = Field(
        "localhost:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS")
    )
    database_url: str = Field(
        "postgresql://postgres@localhost:5432/postgres",
        validation_alias=AliasChoices("DATABASE_URL"),
    )
    redis_url: str = Field("redis://localhost:6379/0", validation_alias=AliasChoices("REDIS_URL"))

    topic: str = "interactions"
    dlq_topic: str = "interactions.dlq"
    topic_partitions: int = Field(8, ge=1)
    consumer_group: str = "interaction-summary"
    redis_prefix: str = Field("is", description="namespace of every Redis key this service owns")

    batch_max_events: int = Field(5000, ge=1)
    # Bytes of message values the worker buffers between the reader and the committer (and
    # most in one batch): with messages up to the broker's 1 MiB, a count alone would allow
    # gigabytes. One message larger than this still passes, alone.
    batch_max_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # Redis (streams/redis_sink.py, core/mirror.py): rows per resync chunk; the most batches
    # the outbox holds for a Redis that is away (past it they are dropped and Redis is resynced
    # from Postgres when it is back); how often a sample of current buckets is compared.
    redis_resync_chunk_rows: int = Field(5000, ge=1)
    redis_outbox_max_batches: int = Field(10_000, ge=1)
    redis_reconcile_seconds: float = Field(10.0, ge=0, description="0 disables reconciliation")
    redis_reconcile_groups: int = Field(100, ge=1)
    future_tolerance_seconds: int = Field(300, ge=0)
    # Most bytes one fetch brings per partition (at least the largest message); Faust's own
    # buffer is bounded by a count only (docs/performance.md, "Memory").
    consumer_max_fetch_bytes: int = Field(1024 * 1024, ge=1024)
    # Retention (core/retention.py, docs/operations.md "Retention"): days of raw history and
    # event-id fence, of daily buckets, of distinct-item tags; 0 keeps everything (default).
    retention_history_days: int = Field(0, ge=0)
    retention_bucket_days: int = Field(0, ge=0)
    retention_distinct_days: int = Field(0, ge=0)
    retention_check_seconds: float = Field(3600.0, gt=0)

    worker_metrics_port: int = Field(9108, ge=0, description="0 disables the worker's /metrics")
    worker_metrics_host: str = "127.0.0.1"
    worker_data_dir: Path = Path(".interaction-summary/worker")

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_key_cache_seconds: float = Field(2.0, ge=0)
    # How often the API re-reads which Redis state Postgres vouches for (core/mirror.py).
    api_redis_check_seconds: float = Field(0.5, ge=0)
    catalog_refresh_seconds: float = Field(1.0, ge=0)
    # Bounds on what one request may cost (docs/operations.md "Security").
    api_max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    api_rate_limit_per_key: str = "100/second;3000/minute"
    # A producer key is a machine posting events, not a dashboard: its own, larger budget.
    api_rate_limit_per_producer_key: str = "2000/second;60000/minute"
    api_rate_limit_per_address: str = "200/second;6000/minute"
    api_forwarded_allow_ips: str = ""
    api_statement_timeout_seconds: float = Field(5.0, gt=0)
    api_pool_acquire_timeout_seconds: float = Field(2.0, gt=0)
    api_docs: bool = True
    log_level: str = Field("INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")

    @field_validator(
        "api_rate_limit_per_key", "api_rate_limit_per_producer_key", "api_rate_limit_per_address"
    )
    @classmethod
    def _rate_limits_parse(cls, value: str) -> str:
        if value.strip():
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a rate limit: write e.g. '100/second;3000/minute',"
                    " or nothing for no limit"
                ) from None
        return value

    @field_validator("retention_history_days", "retention_bucket_days", "retention_distinct_days")
    @classmethod
    def _retention_keeps_the_current_month(cls, value: int) -> int:
        if 0 < value < MIN_RETENTION_DAYS:
            raise ValueError(
                f"{value} days would drop part of the current month: use 0 (keep everything)"
                f" or at least {MIN_RETENTION_DAYS}"
            )
        return value

    # HTTP ingestion (api/ingest.py). 1,000 events of the contract's largest form fit in
    # about 1 MiB; a body above the limit is refused (413) before it is read whole.
    ingest_max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    # How long a POST waits for the broker to acknowledge every event before it answers 503.
    ingest_publish_timeout_seconds: float = Field(5.0, gt=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


def to_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make another process (worker, API) use ``settings``."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
    }
    for name, value in settings.model_dump(
        exclude={"kafka_bootstrap_servers", "database_url", "redis_url"}
    ).items():
        env[f"INTERACTION_SUMMARY_{name.upper()}"] = str(value)
    return env
