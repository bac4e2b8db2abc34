"""Issue 5: hostile messages on the topic. Every invalid one ends in the dead-letter topic with
its original bytes and a reason, every valid one is counted exactly once, the worker stays up.

Hypothesis draws batches of messages from hostile families (not JSON, invalid UTF-8, NUL
bytes, deep nesting, 1 MB values, wrong types, huge and negative numbers, timestamps from year
1 to 9999, ids of 10,000 characters) mixed with valid events that are odd but lawful (any
Unicode, year-1 timestamps, unknown fields, 1 MB of padding). Whether a message is valid is
decided here, from the contract, by how it was built: never by asking the service's parser.
Each batch goes through the real broker and worker; then each message must be resolved the
right way: dead-lettered (found by its source offset) or counted (found by its id).
"""

from __future__ import annotations

import asyncio
import json
import os
import string
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core.config import Settings
from tests.conftest import MakeSettings
from tests.integration.api_oracle import ApiClient, Recount, assert_api_matches_recount
from tests.integration.credentials import make_keys
from tests.integration.publishing import Publisher, Raw
from tests.integration.stores import wait_for_exact_stores
from tests.recount import distinct_events, expected_buckets, from_payload
from tests.support import ServiceProcess, wait_until

# Batches hypothesis draws (each of 8 to 30 messages); the explicit batch of the issue's list
# runs in addition. CI runs the default.
FUZZ_BATCHES = int(os.environ.get("RELIABILITY_FUZZ_BATCHES", "30"))

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Clock margins far wider than the worker's 5-minute future tolerance: the suite never runs
# for hours, so "past" stays past and "future" stays future.
PAST_LIMIT = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=10)
FUTURE_FROM = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=6)
MB = 1_000_000
REQUIRED = ("id", "timestamp", "customerId", "actionId", "type")
TEXT_FIELDS = ("id", "customerId", "actionId", "treatmentId", "channelId", "tenantId", "type")
KNOWN_FIELDS = frozenset((*REQUIRED, "treatmentId", "channelId", "tenantId"))
INVALID_UTF8 = (
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xc0\xaf",
    b"\x80",
)


@dataclass(frozen=True)
class Draft:
    """One message to publish: ``payload`` is the event the recount must count, or None when
    the message breaks the contract (then ``value`` holds its exact bytes)."""

    kind: str
    payload: dict[str, Any] | None = None
    value: bytes | None = None
    style: str = "compact"  # how a valid payload is written out
    key: bytes | None = b""  # b"": keyed by customerId, as producers do
    repeat: int | None = None  # a valid message published again: index among earlier valid ones


# --- strategies ----------------------------------------------------------------------------

# Any Unicode scalar value but NUL (Postgres text cannot hold it; the contract's NUL case is
# built on purpose below) and surrogates (not encodable as UTF-8).
unicode_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40
)
ids = st.one_of(
    unicode_text,
    st.text(string.ascii_letters + string.digits + "-_:{}*?[]'\";\\ ", min_size=1, max_size=40),
    st.sampled_from(["'; DROP TABLE interaction_history; --", "{x}:action", "a:b:c", "*", "\\"]),
)
event_types = st.one_of(
    st.sampled_from(["impression", "click", "dismiss", "accept", "convert"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),  # beyond 64 bits too: lawful JSON in a field we ignore
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8"), max_size=20),  # NUL allowed: nobody stores it
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def timestamps(draw: st.DrawFn) -> str | int:
    """A lawful timestamp: any instant from 0001-01-02 to now, as ISO with any offset or epoch ms."""
    instant = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=PAST_LIMIT)).replace(
        tzinfo=UTC
    )
    form = draw(st.sampled_from(["iso", "iso-z", "epoch"]))
    if form == "epoch":
        return (instant - EPOCH) // timedelta(milliseconds=1)
    if form == "iso-z":
        return instant.isoformat().replace("+00:00", "Z")
    offset = timezone(timedelta(minutes=draw(st.integers(-1439, 1439))))
    spec = draw(st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]))
    return instant.astimezone(offset).isoformat(timespec=spec)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event: odd but lawful values, optional fields present or not, unknown fields."""
    event: dict[str, Any] = {
        "id": draw(ids),
        "timestamp": draw(timestamps()),
        "customerId": draw(st.one_of(ids, st.text("C", min_size=128, max_size=128))),
        "actionId": draw(ids),
        "type": draw(event_types),
    }
    for name in ("treatmentId", "channelId"):
        if draw(st.booleans()):
            event[name] = draw(ids)
    tenant = draw(st.sampled_from([None, "default", "acme", "t-" + "x" * 62, "dé{f}:*"]))
    if tenant is not None:
        event["tenantId"] = tenant
    extra = draw(
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k not in KNOWN_FIELDS), json_values, max_size=3
        )
    )
    depth = draw(st.sampled_from([0, 0, 0, 50, 500]))  # nesting well inside any parser's limit
    if depth:
        extra["nested"] = _nested(depth)
    return {**event, **extra}


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# One strategy per hostile family; each draws a lawful event and breaks it in one way.


@st.composite
def not_json(draw: st.DrawFn) -> Draft:
    base = _dump(draw(events()))
    value = draw(
        st.sampled_from(
            [
                base[:-1],  # cut short
                base + b" trailing",
                base.replace(b"{", b"{NaN,", 1),
                b'{"id": "x", "timestamp": Infinity}',
                b"<" + draw(st.text(max_size=30)).encode(),
                b"",
                b"\x00" * draw(st.integers(1, 64)),
            ]
        )
    )
    return Draft("not-json", value=value)


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Draft:
    bad = draw(st.sampled_from(INVALID_UTF8))
    if draw(st.booleans()):
        return Draft("invalid-utf8", value=bad + draw(st.binary(max_size=40)))
    doc = _dump({**draw(events()), "id": "@@ID@@"})  # the bad bytes inside a string value
    return Draft("invalid-utf8", value=doc.replace(b"@@ID@@", b"ab" + bad + b"cd"))


@st.composite
def not_object(draw: st.DrawFn) -> Draft:
    value = draw(
        st.one_of(json_leaves, st.lists(json_leaves, max_size=3), events().map(lambda e: [e]))
    )
    return Draft("not-object", value=json.dumps(value).encode())


@st.composite
def deep(draw: st.DrawFn) -> Draft:
    depth = draw(st.sampled_from([1_100, 10_000, 100_000]))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    balanced = draw(st.booleans())
    return Draft("deep", value=opener * depth + (closer * depth if balanced else b""))


@st.composite
def missing(draw: st.DrawFn) -> Draft:
    name = draw(st.sampled_from(REQUIRED))
    doc = {k: v for k, v in draw(events()).items() if k != name}
    if draw(st.booleans()):
        doc[name] = None
    return Draft("missing", value=_dump(doc))


@st.composite
def wrong_type(draw: st.DrawFn) -> Draft:
    name = draw(st.sampled_from((*TEXT_FIELDS, "timestamp")))
    wrong = draw(
        st.one_of(
            st.booleans(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            st.integers(-(2**63), 2**63 - 1) if name != "timestamp" else st.just(1.5),
        )
    )
    return Draft("wrong-type", value=_dump({**draw(events()), name: wrong}))


@st.composite
def too_long(draw: st.DrawFn) -> Draft:
    name = draw(st.sampled_from(TEXT_FIELDS))
    limit = {"tenantId": 64, "type": 32}.get(name, 128)
    length = draw(st.sampled_from([0, limit + 1, 10_000, MB]))
    text = draw(st.sampled_from(["a", "é", "😀"])) * length
    return Draft("too-long", value=_dump({**draw(events()), name: text}))


@st.composite
def nul(draw: st.DrawFn) -> Draft:
    base = draw(events())
    name = draw(st.sampled_from((*TEXT_FIELDS, "timestamp")))
    current = "2024-01-01T00:00:00Z" if name == "timestamp" else str(base.get(name) or "x")
    at = draw(st.integers(0, len(current)))
    return Draft("nul", value=_dump({**base, name: current[:at] + "\x00" + current[at:]}))


@st.composite
def bad_type(draw: st.DrawFn) -> Draft:
    wrong = draw(
        st.one_of(
            st.sampled_from(["Click", "1click", "_x", "click!", "clíck", "a" * 33, " click"]),
            st.text(string.ascii_uppercase + "-. ", min_size=1, max_size=10),
        )
    )
    return Draft("bad-type", value=_dump({**draw(events()), "type": wrong}))


@st.composite
def bad_timestamp(draw: st.DrawFn) -> Draft:
    wrong = draw(
        st.sampled_from(
            ["yesterday", "2026-13-01T00:00:00Z", "2026-02-30T10:00:00Z", "10000-01-01T00:00:00Z",
             "0000-12-31T00:00:00Z", "2026-01-01T25:00:00Z", "2026-01-01T10:00:00", "", " ",
             "2026-01-01T10:00:00Z" + " " * 60, "0001-01-01T00:00:00+01:00", "1e3", "NaN"]
        )
    )  # fmt: skip
    return Draft("bad-timestamp", value=_dump({**draw(events()), "timestamp": wrong}))


@st.composite
def future(draw: st.DrawFn) -> Draft:
    """From 6 hours ahead to the last instant of year 9999, as ISO or epoch milliseconds."""
    moment = draw(st.datetimes(min_value=FUTURE_FROM, max_value=datetime.max)).replace(tzinfo=UTC)
    as_epoch = draw(st.booleans())
    wrong = (moment - EPOCH) // timedelta(milliseconds=1) if as_epoch else moment.isoformat()
    return Draft("future", value=_dump({**draw(events()), "timestamp": wrong}))


@st.composite
def epoch_out_of_range(draw: st.DrawFn) -> Draft:
    wrong = draw(
        st.one_of(
            st.integers(253_402_300_800_000, 2**63 - 1),  # year 10000 and later
            st.integers(-(2**63), -62_135_596_800_001),  # before year 1
            st.integers(2**64, 2**80),  # beyond 64 bits: JSON parsers make it a float
        )
    )
    return Draft("epoch-range", value=json.dumps({**draw(events()), "timestamp": wrong}).encode())


tombstones = st.just(Draft("tombstone", value=None))  # a record with a key and no value
invalid_messages = st.one_of(
    not_json(), invalid_utf8(), not_object(), deep(), missing(), wrong_type(), too_long(),
    nul(), bad_type(), bad_timestamp(), future(), epoch_out_of_range(), tombstones,
)  # fmt: skip


def _dump(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(doc, ensure_ascii=False).encode()


keys = st.one_of(st.just(b""), st.none(), st.binary(max_size=20))
valid_drafts = st.builds(
    Draft,
    kind=st.just("valid"),
    payload=events(),
    style=st.sampled_from(["compact", "compact", "ascii", "spaced", "padded-1mb"]),
    key=keys,
)
repeats = st.builds(Draft, kind=st.just("repeat"), repeat=st.integers(0, 1000))
batches = st.lists(
    # half valid, a tenth published again, the rest hostile (one_of would weigh by branches)
    st.integers(0, 9).flatmap(
        lambda i: valid_drafts if i < 5 else repeats if i == 5 else invalid_messages
    ),
    min_size=8,
    max_size=30,
)


def _issue_list() -> list[Draft]:
    """The issue's hostile list, each at least once, in one explicit batch."""
    lawful = {
        "id": "lawful", "timestamp": "2024-02-29T12:00:00+14:00", "customerId": "C",
        "actionId": "A", "type": "click",
    }  # fmt: skip
    return [
        Draft("not-json", value=b"definitely { not json"),
        Draft("invalid-utf8", value=b'{"id": "\xff\xfe", "type": "click"}'),
        Draft("nul", value=_dump({**lawful, "id": "a\x00b"})),
        Draft("deep", value=b"[" * 100_000 + b"]" * 100_000),
        Draft("too-long", value=_dump({**lawful, "id": "x" * MB})),
        Draft("valid", payload={**lawful, "id": "padded", "padding": "p" * MB}),
        Draft("wrong-type", value=_dump({**lawful, "customerId": 42})),
        Draft("epoch-range", value=_dump({**lawful, "timestamp": 2**63 - 1})),
        Draft("epoch-range", value=_dump({**lawful, "timestamp": -(2**63)})),
        Draft("valid", payload={**lawful, "id": "negative-epoch", "timestamp": -1}),
        Draft("valid", payload={**lawful, "id": "year-1", "timestamp": "0001-01-01T00:00:00Z"}),
        Draft("valid", payload={**lawful, "id": "year-1-ms", "timestamp": -62_135_596_800_000}),
        Draft("future", value=_dump({**lawful, "timestamp": "9999-12-31T23:59:59.999999Z"})),
        Draft("too-long", value=_dump({**lawful, "id": "i" * 10_000})),
        Draft("valid", payload={**lawful, "id": "i" * 128}),
        Draft("valid", payload={**lawful, "id": "x'; DROP TABLE interaction_bucket; --"}),
        Draft("repeat", repeat=0),
        Draft("tombstone", value=None),
    ]


# --- the worker and what it wrote ----------------------------------------------------------


@dataclass
class Ledger:
    """Everything published during the test, for the end-of-test recount and the figures."""

    valid_payloads: list[dict[str, Any]] = field(default_factory=list)
    invalid: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    bytes: int = 0


@dataclass
class Rig:
    settings: Settings
    worker: ServiceProcess
    publisher: Publisher
    dead_letters: dict[tuple[int, int], Any]
    pool: asyncpg.Pool
    ledger: Ledger


@pytest.fixture
async def rig(make_settings: MakeSettings, start_worker) -> AsyncIterator[Rig]:
    """A worker, one publisher, and a consumer collecting the DLQ by source position."""
    settings = await make_settings()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    worker = start_worker(settings)
    await worker.wait_for_log("Worker ready")
    letters: dict[tuple[int, int], Any] = {}
    consumer = AIOKafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * MB,
        fetch_max_bytes=16 * MB,
    )
    await consumer.start()

    async def collect() -> None:
        async for record in consumer:
            headers = dict(record.headers)
            source = (int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"]))
            letters[source] = record

    collecting = asyncio.create_task(collect())
    try:
        async with Publisher(settings) as publisher:
            yield Rig(settings, worker, publisher, letters, pool, Ledger())
    finally:
        collecting.cancel()
        await asyncio.gather(collecting, return_exceptions=True)
        await consumer.stop()
        await pool.close()


_SELECT_COUNTED = """
SELECT tenant_id, event_id, ts, customer_id, action_id, treatment_id, channel_id, type
FROM interaction_history
WHERE (tenant_id, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""


def _instant(ts: datetime) -> datetime:
    """A history timestamp as read back. asyncpg writes 0001-01-01T00:00:00Z (datetime.min) as
    Postgres '-infinity' and reads that back as a naive datetime.min: the same instant."""
    return ts.replace(tzinfo=UTC) if ts == datetime.min else ts


def _encode(payload: dict[str, Any], style: str) -> bytes:
    if style == "ascii":
        return json.dumps(payload, ensure_ascii=True).encode()
    if style == "spaced":
        return b"\n\t " + json.dumps(payload, indent=2, ensure_ascii=False).encode() + b" \r\n"
    if style == "padded-1mb":
        return _dump({**payload, "zz-padding": "p" * MB})
    return _dump(payload)


def _resolve(drafts: list[Draft], batch: int) -> list[tuple[Draft, Raw]]:
    """Give valid events ids unique to this batch, resolve repeats, encode every message."""
    out: list[tuple[Draft, Raw]] = []
    valid: list[tuple[Draft, Raw]] = []
    for i, draft in enumerate(drafts):
        if draft.repeat is not None:
            if valid:
                out.append(valid[draft.repeat % len(valid)])
            continue
        if draft.payload is None:
            # a tombstone (no value) needs a key: Kafka refuses a record with neither
            key = draft.key or (b"tombstone" if draft.value is None else None)
            out.append((draft, Raw(key, draft.value)))
            continue
        payload = {**draft.payload, "id": f"{batch}.{i}.{draft.payload['id']}"[:128]}
        customer = str(payload["customerId"]).encode()
        key = customer if draft.key == b"" else draft.key
        resolved = (
            Draft(draft.kind, payload, style=draft.style),
            Raw(key, _encode(payload, draft.style)),
        )
        valid.append(resolved)
        out.append(resolved)
    return out


async def _publish_and_check(rig: Rig, drafts: list[Draft]) -> None:
    """Publish one batch; every message must end dead-lettered or counted, as the contract says."""
    ledger = rig.ledger
    ledger.batches += 1
    messages = _resolve(drafts, ledger.batches)
    sent = await rig.publisher.send([raw for _, raw in messages])
    expected_ids = set()
    for draft, raw in messages:
        ledger.kinds[draft.kind] += 1
        ledger.bytes += len(raw.value or b"")
        if draft.payload is None:
            ledger.invalid += 1
        else:
            ledger.valid_payloads.append(draft.payload)
            event = from_payload(draft.payload)
            expected_ids.add((event.tenant, event.id))

    async def counted() -> dict[tuple[str, str], asyncpg.Record]:
        tenants, event_ids = zip(*expected_ids, strict=True) if expected_ids else ((), ())
        rows = await rig.pool.fetch(_SELECT_COUNTED, list(tenants), list(event_ids))
        return {(r["tenant_id"], r["event_id"]): r for r in rows}

    def unresolved(found: dict[tuple[str, str], Any]) -> list[str]:
        left = []
        for (draft, raw), meta in zip(messages, sent, strict=True):
            dead = (meta.partition, meta.offset) in rig.dead_letters
            if draft.payload is None and not dead:
                left.append(f"invalid {draft.kind} not dead-lettered: {(raw.value or b'')[:120]!r}")
            elif draft.payload is not None and dead:
                reason = dict(rig.dead_letters[(meta.partition, meta.offset)].headers)["dlq.reason"]
                left.append(f"valid event dead-lettered ({reason!r}): {draft.payload}")
        return left

    async def settled() -> bool:
        found = await counted()
        return len(found) == len(expected_ids) and not unresolved(found)

    async def explain() -> str:
        found = await counted()
        missing = [k for k in expected_ids if k not in found]
        return f"uncounted valid ids {missing[:5]}; {unresolved(found)[:5]}"

    try:
        await wait_until(settled, 60, 0.05)
    except AssertionError:
        raise AssertionError(await explain()) from None
    assert rig.worker.running and rig.worker.starts == 1, rig.worker.log_tail()

    found = await counted()
    for draft, _ in messages:
        if draft.payload is not None:
            event = from_payload(draft.payload)
            row = found[(event.tenant, event.id)]
            stored = (_instant(row["ts"]), row["customer_id"], row["action_id"], row["treatment_id"], row["channel_id"], row["type"])  # fmt: skip
            assert stored == (event.ts, event.customer, event.action, event.treatment, event.channel, event.type)  # fmt: skip
    for (draft, raw), meta in zip(messages, sent, strict=True):
        if draft.payload is None:
            letter = rig.dead_letters[(meta.partition, meta.offset)]
            headers = dict(letter.headers)
            assert letter.value == raw.value, "the dead letter keeps the original bytes"
            assert letter.key == raw.key
            assert headers["dlq.reason"].strip(), "every dead letter says why"
            assert headers["dlq.source.topic"].decode() == rig.settings.topic


@hypothesis_settings(
    max_examples=FUZZ_BATCHES,
    deadline=None,
    derandomize=True,  # the same batches on every run: CI must not be flaky
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking against a live worker
    suppress_health_check=list(HealthCheck),
)
@given(batch=batches)
@example(batch=_issue_list())
def _fuzz(rig: Rig, loop: asyncio.AbstractEventLoop, batch: list[Draft]) -> None:
    """One hypothesis example: runs on a thread, its I/O on the test's event loop."""
    asyncio.run_coroutine_threadsafe(_publish_and_check(rig, batch), loop).result()


async def test_every_hostile_message_is_dead_lettered_and_every_valid_one_counted(
    rig: Rig, start_api
) -> None:
    await asyncio.to_thread(_fuzz, rig, asyncio.get_running_loop())

    ledger = rig.ledger
    events = distinct_events(ledger.valid_payloads)
    await wait_for_exact_stores(rig.settings, expected_buckets(events), len(events))
    keys = await make_keys(rig.settings.database_url)
    api_process = await start_api(rig.settings)
    api = ApiClient(api_process.url, {t: keys[f"viewer:{t}"] for t in ("default", "acme")})
    await assert_api_matches_recount(api, Recount(events))
    assert len(rig.dead_letters) == ledger.invalid, "only invalid messages are dead-lettered"
    assert rig.worker.running and rig.worker.starts == 1
    print(
        f"\nRELIABILITY fuzz: batches={ledger.batches} messages={sum(ledger.kinds.values())} "
        f"valid={len(ledger.valid_payloads)} distinct={len(events)} invalid={ledger.invalid} "
        f"MB={ledger.bytes / MB:.1f} kinds={dict(sorted(ledger.kinds.items()))}"
    )
