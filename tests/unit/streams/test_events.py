"""The event contract (docs/contract.md section 1): what is accepted, what is rejected and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.events import DEFAULT_TENANT, KNOWN_TYPES, Interaction, Rejected, parse_event

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MISSING = object()
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID: dict[str, Any] = {
    "id": "evt-1",
    "timestamp": "2026-03-01T10:00:00Z",
    "customerId": "cust-1",
    "actionId": "act-1",
    "treatmentId": "treat-1",
    "channelId": "web",
    "type": "click",
    "tenantId": "acme",
}


def encode(doc: object) -> bytes:
    """JSON as a producer would send it; the stdlib keeps integers beyond 64 bits exact."""
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def event(**changes: object) -> dict[str, Any]:
    """The valid event with some fields replaced (``MISSING`` removes a field)."""
    doc = {**VALID, **changes}
    return {k: v for k, v in doc.items() if v is not MISSING}


def parse(doc: object, now: datetime = NOW, tolerance: timedelta = TOLERANCE) -> Interaction:
    return parse_event(encode(doc), now, tolerance)


def rejection(raw: bytes | None, now: datetime = NOW, tolerance: timedelta = TOLERANCE) -> str:
    with pytest.raises(Rejected) as info:
        parse_event(raw, now, tolerance)
    return str(info.value)


def nested_json(depth: int, leaf: object) -> bytes:
    """``depth`` alternating arrays and objects around ``leaf`` (built as text: the stdlib
    encoder would hit Python's recursion limit first)."""
    opening = b"".join(b"[" if i % 2 else b'{"k":' for i in range(depth))
    closing = b"".join(b"]" if i % 2 else b"}" for i in reversed(range(depth)))
    return opening + encode(leaf) + closing


def with_raw_field(field: str, raw_value: bytes) -> bytes:
    """The valid event with ``field`` set to already-encoded JSON."""
    return (
        encode(event(**{field: MISSING}))[:-1] + b', "' + field.encode() + b'": ' + raw_value + b"}"
    )


def ms(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(milliseconds=1)


# ---------------------------------------------------------------- accepted


def test_valid_event_parses_to_a_typed_interaction() -> None:
    assert parse(VALID) == Interaction(
        id="evt-1",
        tenant_id="acme",
        timestamp=datetime(2026, 3, 1, 10, tzinfo=UTC),
        customer_id="cust-1",
        action_id="act-1",
        treatment_id="treat-1",
        channel_id="web",
        type="click",
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"tenantId": MISSING},  # absent tenant
        {"tenantId": None},  # explicit null tenant
    ],
)
def test_missing_tenant_means_default(changes: dict[str, object]) -> None:
    assert parse(event(**changes)).tenant_id == DEFAULT_TENANT == "default"


@pytest.mark.parametrize("field", ["treatmentId", "channelId"])
@pytest.mark.parametrize("value", [MISSING, None])
def test_optional_dimension_may_be_absent_or_null(field: str, value: object) -> None:
    parsed = parse(event(**{field: value}))
    assert (parsed.treatment_id if field == "treatmentId" else parsed.channel_id) is None


@pytest.mark.parametrize(
    "type_",
    [
        *KNOWN_TYPES,
        "view",  # an unknown type matching the pattern is kept (counts in total only)
        "a",  # the shortest allowed type
        "a" + "b" * 31,  # the longest allowed type: 32 characters
        "video_50pct_2",  # digits and underscores after the first letter
    ],
)
def test_types_matching_the_pattern_are_kept(type_: str) -> None:
    assert parse(event(type=type_)).type == type_


@pytest.mark.parametrize(
    ("field", "max_len"),
    [
        *[(f, 128) for f in ("id", "customerId", "actionId", "treatmentId", "channelId")],
        ("tenantId", 64),
    ],
)
def test_ids_at_the_maximum_length_are_accepted(field: str, max_len: int) -> None:
    parse(event(**{field: "é" * max_len}))  # characters, not UTF-8 bytes, are counted


def test_non_bmp_characters_count_as_one_character() -> None:
    assert parse(event(id="\U0001f600" * 128)).id == "\U0001f600" * 128


def test_unknown_fields_are_ignored_even_when_huge_or_deeply_nested() -> None:
    assert parse(event(note="x" * 1_048_576)).id == "evt-1"
    assert parse_event(with_raw_field("extra", nested_json(1000, "leaf")), NOW, TOLERANCE)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        # ISO-8601 with 'Z'
        ("2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        # ISO-8601 with a positive offset: converted to UTC
        ("2026-03-01T10:00:00+02:00", datetime(2026, 3, 1, 8, tzinfo=UTC)),
        # a half-hour negative offset
        ("2026-03-01T05:00:00-05:30", datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
        # an offset that moves the event into the previous year
        ("2026-01-01T00:30:00+01:00", datetime(2025, 12, 31, 23, 30, tzinfo=UTC)),
        # microseconds are kept
        ("2026-03-01T10:00:00.123456Z", datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        # RFC 3339 allows a space instead of 'T'
        ("2026-03-01 10:00:00+00:00", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        # the first representable instant
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        # epoch milliseconds
        (1_772_359_200_000, datetime(2026, 3, 1, 10, tzinfo=UTC)),
        # the epoch itself
        (0, EPOCH),
        # before the epoch: negative milliseconds
        (-1, datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        # the first representable millisecond
        (-62_135_596_800_000, datetime(1, 1, 1, tzinfo=UTC)),
        # exactly at the future limit (now + 5 min) as ISO ...
        ("2026-03-01T12:05:00Z", NOW + TOLERANCE),
        # ... and as epoch milliseconds
        (ms(NOW + TOLERANCE), NOW + TOLERANCE),
        # the limit expressed in another offset
        ("2026-03-02T02:05:00+14:00", NOW + TOLERANCE),
    ],
)
def test_timestamp_formats_are_read_as_utc_instants(timestamp: object, expected: datetime) -> None:
    parsed = parse(event(timestamp=timestamp)).timestamp
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_zero_tolerance_accepts_now_and_rejects_the_next_microsecond() -> None:
    assert parse(event(timestamp=NOW.isoformat()), tolerance=timedelta(0)).timestamp == NOW
    later = (NOW + timedelta(microseconds=1)).isoformat()
    assert "future" in rejection(encode(event(timestamp=later)), tolerance=timedelta(0))


# ---------------------------------------------------------------- rejected: the message as a whole


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "null"),  # a tombstone / null value
        (b"", "not JSON"),  # empty bytes
        (b"{", "not JSON"),  # truncated JSON
        (b"{'id': 'x'}", "not JSON"),  # Python repr, not JSON
        (b"\xff\xfe{}", "not JSON"),  # invalid UTF-8
        (b'{"id": "\xed\xa0\x80"}', "not JSON"),  # a surrogate encoded as UTF-8 (CESU)
        (b'{"id": "\\ud800"}', "not JSON"),  # a lone surrogate escape
        (b"NaN", "not JSON"),  # not a JSON literal
        (b"1e400", "not JSON"),  # a number that overflows a double
        (b"[" * 2000 + b"]" * 2000, "not JSON"),  # nesting deeper than the parser allows
        (b"[]", "not a JSON object: got list"),  # an array
        (b'"click"', "not a JSON object: got str"),  # a string
        (b"42", "not a JSON object: got int"),  # a number
        (b"null", "not a JSON object: got NoneType"),  # JSON null
        (b"true", "not a JSON object: got bool"),  # a boolean
    ],
)
def test_messages_that_are_not_a_json_object_are_rejected(raw: bytes | None, expected: str) -> None:
    assert expected in rejection(raw)


# ---------------------------------------------------------------- rejected: one field

ID_FIELDS = ["id", "customerId", "actionId", "treatmentId", "channelId"]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        # required fields: missing, or null (which means the same)
        *[(f, MISSING, "is required") for f in ("id", "customerId", "actionId", "type")],
        *[(f, None, "is required") for f in ("id", "customerId", "actionId", "type")],
        ("timestamp", MISSING, "is required"),
        ("timestamp", None, "is required"),
        # wrong JSON types for string fields
        ("id", 1, "must be a string, got int"),
        ("customerId", True, "must be a string, got bool"),
        ("actionId", 1.5, "must be a string, got float"),
        ("treatmentId", ["t"], "must be a string, got list"),
        ("channelId", {"id": "web"}, "must be a string, got dict"),
        ("tenantId", 7, "must be a string, got int"),
        ("type", ["click"], "must be a string, got list"),
        # a deeply nested value where a string belongs
        ("id", [[[[[[[[[["x"]]]]]]]]]], "must be a string, got list"),
        # empty strings
        *[(f, "", "must be 1..128 characters, got 0") for f in ID_FIELDS],
        ("tenantId", "", "must be 1..64 characters, got 0"),
        ("type", "", "must be 1..32 characters, got 0"),
        # one character too long
        *[(f, "x" * 129, "must be 1..128 characters, got 129") for f in ID_FIELDS],
        ("tenantId", "x" * 65, "must be 1..64 characters, got 65"),
        ("type", "x" * 33, "must be 1..32 characters, got 33"),
        # far too long: 10,000 characters, and 1 MB
        *[(f, "x" * 10_000, "must be 1..128 characters, got 10000") for f in ID_FIELDS],
        ("id", "x" * 1_048_576, "must be 1..128 characters, got 1048576"),
        ("tenantId", "x" * 10_000, "must be 1..64 characters, got 10000"),
        # NUL characters (Postgres text cannot hold them)
        *[(f, "a\x00b", "contains a NUL character") for f in [*ID_FIELDS, "tenantId"]],
        # type outside [a-z][a-z0-9_]{0,31}
        ("type", "Click", "must match"),  # upper case
        ("type", "1click", "must match"),  # starts with a digit
        ("type", "_click", "must match"),  # starts with an underscore
        ("type", "click-through", "must match"),  # a hyphen
        ("type", "cl\u00edck", "must match"),  # a non-ASCII letter
        ("type", "click\n", "must match"),  # a trailing newline
        ("type", "click ", "must match"),  # a trailing space
        ("type", "a\x00", "contains a NUL character"),  # NUL
        # timestamps of the wrong JSON type
        ("timestamp", True, "got bool"),  # bool is an int in Python: rejected explicitly
        ("timestamp", False, "got bool"),
        ("timestamp", 1_772_359_200_000.0, "got float"),  # epoch ms must be an integer
        ("timestamp", 10**30, "got float"),  # beyond 64 bits the parser yields a float
        ("timestamp", {"ms": 0}, "got dict"),
        ("timestamp", [2026, 3, 1], "got list"),
        # ISO strings without an offset
        ("timestamp", "2026-03-01T10:00:00", "needs a UTC offset"),
        ("timestamp", "2026-03-01", "needs a UTC offset"),  # a date only
        # strings that are not ISO-8601
        ("timestamp", "", "is not an ISO-8601 timestamp"),
        ("timestamp", "yesterday", "is not an ISO-8601 timestamp"),
        ("timestamp", "1772359200000", "is not an ISO-8601 timestamp"),  # epoch as a string
        ("timestamp", "01/03/2026 10:00 +00:00", "is not an ISO-8601 timestamp"),
        ("timestamp", "2026-03-01T10:00:00z", "is not an ISO-8601 timestamp"),  # lower-case z
        ("timestamp", "2026-03-01T24:00:00Z", "is not an ISO-8601 timestamp"),  # hour 24
        ("timestamp", "2026-02-29T10:00:00Z", "is not an ISO-8601 timestamp"),  # not a leap year
        ("timestamp", "2026-03-01T10:00:00+24:00", "is not an ISO-8601 timestamp"),  # offset
        ("timestamp", "2026-03-01T10:00:00\x00Z", "is not an ISO-8601 timestamp"),  # NUL
        ("timestamp", "2026-03-01\x0010:00:00Z", "is not an ISO-8601 timestamp"),  # NUL as 'T'
        ("timestamp", "2026-03-01T10:00:00Z" + " " * 50, "is not an ISO-8601 timestamp"),
        ("timestamp", "x" * 10_000, "is not an ISO-8601 timestamp (10000 characters)"),
        # instants outside what a UTC datetime can hold
        ("timestamp", "0001-01-01T00:00:00+00:01", "out of range"),
        ("timestamp", "9999-12-31T23:59:59-00:01", "out of range"),
        ("timestamp", -62_135_596_800_001, "out of range"),  # the ms before year 1
        ("timestamp", 253_402_300_800_000, "out of range"),  # the first ms of year 10000
        ("timestamp", 2**63, "out of range"),
        ("timestamp", 2**64 - 1, "out of range"),  # the largest integer the parser keeps
        ("timestamp", -(2**63), "out of range"),
        # more than 5 minutes in the future
        ("timestamp", "2026-03-01T12:05:00.001Z", "in the future"),  # 1 ms past the limit
        ("timestamp", ms(NOW + TOLERANCE) + 1, "in the future"),  # the same in epoch ms
        ("timestamp", "2026-03-02T02:05:01+14:00", "in the future"),  # past it, in +14:00
        ("timestamp", 253_402_300_799_999, "in the future"),  # the last ms of year 9999
    ],
)
def test_field_violations_are_rejected_with_a_reason_naming_the_field(
    field: str, value: object, expected: str
) -> None:
    reason = rejection(encode(event(**{field: value})))
    assert f"'{field}'" in reason
    assert expected in reason
    # a reason is for a person to read: it never echoes a huge value back
    assert len(reason) < 200


def test_a_1mb_id_is_rejected_with_a_short_reason_naming_the_field() -> None:
    # How fast is a benchmark's question (bench/), not a unit test's: a timed assert here
    # fails on a loaded machine and passes a slow parser on a fast one.
    reason = rejection(encode(event(id="x" * 1_048_576)))
    assert "'id'" in reason
    assert len(reason) < 200


# ---------------------------------------------------------------- properties

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
# Values a producer might plausibly put in an event field, plus anything at all.
field_values = st.one_of(
    json_values,
    st.text(min_size=1, max_size=130),
    st.sampled_from(["click", "impression", "Click", "", "x" * 129, "a\x00"]),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),  # no offset
)
FIELDS = ["id", "timestamp", "customerId", "actionId", "treatmentId", "channelId", "type"]
event_like = st.fixed_dictionaries(
    {}, optional={name: field_values for name in [*FIELDS, "tenantId", "extra"]}
)


def accepted_or_rejected(raw: bytes | None, now: datetime = NOW) -> None:
    """The fuzz oracle: an Interaction, or Rejected with a short reason; nothing else."""
    try:
        parsed = parse_event(raw, now, TOLERANCE)
    except Rejected as exc:
        assert 0 < len(str(exc)) < 200
        return
    assert isinstance(parsed, Interaction)
    assert parsed.timestamp.utcoffset() == timedelta(0)
    assert parsed.timestamp <= now + TOLERANCE


@PROPERTY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_parsed_or_rejected(raw: bytes) -> None:
    accepted_or_rejected(raw)


@PROPERTY
@given(json_values | event_like)
def test_arbitrary_json_is_parsed_or_rejected(doc: object) -> None:
    accepted_or_rejected(encode(doc))


@PROPERTY
@given(event_like, st.datetimes(timezones=st.just(UTC)))
def test_event_like_objects_are_parsed_or_rejected_at_any_now(doc: object, now: datetime) -> None:
    if now > datetime.max.replace(tzinfo=UTC) - TOLERANCE:
        now -= TOLERANCE  # now + tolerance must itself be a representable instant
    accepted_or_rejected(encode(doc), now)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=3000), json_scalars)
def test_any_nesting_depth_is_parsed_or_rejected(depth: int, leaf: object) -> None:
    value = nested_json(depth, leaf)
    accepted_or_rejected(value)
    for field in ("extra", "id", "timestamp"):
        accepted_or_rejected(with_raw_field(field, value))


def test_nesting_within_the_parser_limit_is_fine_and_beyond_it_is_not_json() -> None:
    assert parse_event(with_raw_field("extra", nested_json(1000, 1)), NOW, TOLERANCE)
    assert "not JSON" in rejection(with_raw_field("extra", nested_json(3000, 1)))
    assert "'id'" in rejection(with_raw_field("id", nested_json(1000, 1)))


@pytest.mark.parametrize("field", ["timestamp", "type"])
def test_a_reason_quoting_control_and_astral_characters_stays_short(field: str) -> None:
    # found by the property below: the repr of such a value is up to ten times its length
    value = "0" * 18 + "\x1f" * 13 + "\U000108b0" * 1 + "\U00018cd6" * 7
    reason = rejection(json.dumps(event(**{field: value})).encode())
    assert f"'{field}'" in reason and len(reason) < 200, reason


@PROPERTY
@given(st.text(max_size=80), st.sampled_from(FIELDS))
def test_any_string_in_any_field_is_parsed_or_rejected(text: str, field: str) -> None:
    # surrogatepass lets hypothesis's lone surrogates through as invalid UTF-8
    raw = json.dumps(event(**{field: text}), ensure_ascii=False).encode("utf-8", "surrogatepass")
    accepted_or_rejected(raw)


# A valid event, generated field by field, with what it must parse to.
ids = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    min_size=1,
    max_size=128,
)
types = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
offsets = st.builds(
    timezone,
    st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timedelta(minutes=m)),
)
# Instants from 1900 up to the future limit, so any offset can still express them.
instants = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=(NOW + TOLERANCE).replace(tzinfo=None)
).map(lambda d: d.replace(tzinfo=UTC))


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[dict[str, Any], Interaction]:
    ts = draw(instants)
    form = draw(st.sampled_from(["offset", "z", "ms"]))
    if form == "ms":
        ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
        stamp: object = ms(ts)
    elif form == "z":
        stamp = ts.isoformat().replace("+00:00", "Z")
    else:
        stamp = ts.astimezone(draw(offsets)).isoformat()
    expected = Interaction(
        id=draw(ids),
        tenant_id=draw(st.none() | ids.filter(lambda s: len(s) <= 64)) or DEFAULT_TENANT,
        timestamp=ts,
        customer_id=draw(ids),
        action_id=draw(ids),
        treatment_id=draw(st.none() | ids),
        channel_id=draw(st.none() | ids),
        type=draw(st.sampled_from(KNOWN_TYPES) | types),
    )
    doc: dict[str, Any] = {
        "id": expected.id,
        "timestamp": stamp,
        "customerId": expected.customer_id,
        "actionId": expected.action_id,
        "type": expected.type,
    }
    optional = {
        "treatmentId": expected.treatment_id,
        "channelId": expected.channel_id,
        "tenantId": None if expected.tenant_id == DEFAULT_TENANT else expected.tenant_id,
    }
    for name, value in optional.items():
        # an absent optional field and an explicit null mean the same
        if value is not None or draw(st.booleans()):
            doc[name] = value
    return doc, expected


@PROPERTY
@given(valid_events())
def test_a_valid_event_parses_to_its_fields(case: tuple[dict[str, Any], Interaction]) -> None:
    doc, expected = case
    parsed = parse(doc)
    assert parsed == expected
    assert parsed.timestamp.utcoffset() == timedelta(0)


# ---------------------------------------------------------------- the short path

# Field values near every boundary the checks draw: absent, null, wrong type, empty, too long,
# NUL, a type off the pattern, a direction off the list, timestamps in and out of range.
_FIELD_VALUES = st.one_of(
    st.just(MISSING),
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.sampled_from(["", "a", "x" * 32, "x" * 33, "x" * 64, "x" * 65, "x" * 128, "x" * 129]),
    st.sampled_from(["a\x00b", "click", "Click", "1click", "inbound", "outbound", "sideways"]),
    st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01T12:06:00Z", "2026-03-01T10:00:00",
                     "9999-12-31T23:59:59-01:00", "2026-03-01 10:00:00+02:00", "not a time"]),
    st.text(max_size=140),
)  # fmt: skip
_FIELDS = ("id", "timestamp", "customerId", "actionId", "treatmentId", "channelId", "type",
           "tenantId", "direction")  # fmt: skip


@PROPERTY
@given(st.dictionaries(st.sampled_from(_FIELDS), _FIELD_VALUES, max_size=3))
def test_the_short_path_accepts_exactly_what_every_check_accepts(
    changes: dict[str, Any],
) -> None:
    """The short path (``_well_formed``) gives the same event as the full checks; it leaves to
    them only what they reject, or an epoch-milliseconds timestamp."""
    from streams.events import _checked, _well_formed

    doc = event(**changes)
    short = _well_formed(doc, NOW, TOLERANCE)
    try:
        full: Interaction | None = _checked(doc, NOW, TOLERANCE)
    except Rejected:
        full = None
    if isinstance(doc.get("timestamp"), str):
        assert short == full
    else:
        assert short is None


def test_a_valid_event_takes_the_short_path() -> None:
    from streams.events import _well_formed

    assert _well_formed(event(), NOW, TOLERANCE) == parse(event())
