"""The event contract: raw Kafka bytes in, a typed ``Interaction`` or a readable rejection out.

Pure: the caller passes ``now`` (used for the "not in the future" rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

import orjson

from core.schema import SYSTEM_TYPES, TYPE_KEY, TYPE_KEY_PATTERN

# The types with a counter of their own (every other valid type is counted per type too).
KNOWN_TYPES: tuple[str, ...] = SYSTEM_TYPES
DEFAULT_TENANT = "default"
# Who started the contact: the customer (inbound) or the business (outbound).
DIRECTIONS: tuple[str, ...] = ("inbound", "outbound")

_ID_MAX = 128
_TENANT_MAX = 64
# The fields parse_event reads; anything else in a message is ignored.
EVENT_FIELDS: tuple[str, ...] = (
    "id", "timestamp", "customerId", "actionId", "treatmentId", "channelId", "type", "tenantId",
    "direction",
)  # fmt: skip
_REQUIRED_IDS = (("id", "id"), ("customerId", "customer_id"), ("actionId", "action_id"))
_OPTIONAL_IDS = (("treatmentId", "treatment_id"), ("channelId", "channel_id"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Interaction:
    """One accepted interaction event."""

    id: str
    tenant_id: str
    timestamp: datetime
    customer_id: str
    action_id: str
    treatment_id: str | None
    channel_id: str | None
    type: str
    direction: str | None = None


class Rejected(ValueError):
    """A message that breaks the event contract; ``str()`` is the reason shown in the DLQ."""


def parse_event(raw: bytes | None, now: datetime, future_tolerance: timedelta) -> Interaction:
    """Validate one message value; raise ``Rejected`` with a reason a person can act on."""
    if raw is None:
        raise Rejected("empty message: the value is null")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Rejected(f"not a JSON object: got {type(doc).__name__}")
    event = _well_formed(doc, now, future_tolerance)
    return event if event is not None else _checked(doc, now, future_tolerance)


def _checked(doc: dict[str, Any], now: datetime, future_tolerance: timedelta) -> Interaction:
    """The event of a JSON object, every check in turn: the first that fails says why."""
    fields: dict[str, Any] = {}
    for name, attr in _REQUIRED_IDS:
        fields[attr] = _text(doc, name, _ID_MAX, required=True)
    for name, attr in _OPTIONAL_IDS:
        fields[attr] = _text(doc, name, _ID_MAX, required=False)
    fields["tenant_id"] = _text(doc, "tenantId", _TENANT_MAX, required=False) or DEFAULT_TENANT
    fields["type"] = _event_type(doc)
    fields["direction"] = _direction(doc)
    fields["timestamp"] = _timestamp(doc, now, future_tolerance)
    return Interaction(**fields)


def _plain(value: object, max_len: int) -> TypeGuard[str]:
    """A string field that every check of ``_text`` accepts."""
    return type(value) is str and 0 < len(value) <= max_len and "\x00" not in value


def _optional(value: object, max_len: int) -> TypeGuard[str | None]:
    return value is None or _plain(value, max_len)


def _well_formed(
    doc: dict[str, Any], now: datetime, future_tolerance: timedelta
) -> Interaction | None:
    """The event of a document that passes every check, by the shortest path; None when any
    check needs a closer look (the full path then accepts it or says why not). Nearly every
    event takes this path (bench/README.md: what it saved)."""
    get = doc.get
    event_id, customer, action, kind = get("id"), get("customerId"), get("actionId"), get("type")
    treatment, channel, tenant = get("treatmentId"), get("channelId"), get("tenantId")
    direction, stamp = get("direction"), get("timestamp")
    if not (_plain(event_id, _ID_MAX) and _plain(customer, _ID_MAX) and _plain(action, _ID_MAX)):
        return None
    if not (_optional(treatment, _ID_MAX) and _optional(channel, _ID_MAX)):
        return None
    if not (_optional(tenant, _TENANT_MAX) and _plain(kind, 32) and TYPE_KEY.fullmatch(kind)):
        return None
    if not (direction is None or direction in DIRECTIONS) or type(stamp) is not str:
        return None
    try:
        ts = _timestamp(doc, now, future_tolerance)
    except Rejected:
        return None
    return Interaction(
        event_id, tenant or DEFAULT_TENANT, ts, customer, action, treatment, channel, kind,
        direction,
    )  # fmt: skip


def _text(doc: dict[str, Any], name: str, max_len: int, *, required: bool) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise Rejected(f"field '{name}' is required")
        return None
    if not isinstance(value, str):
        raise Rejected(f"field '{name}' must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= max_len:
        raise Rejected(f"field '{name}' must be 1..{max_len} characters, got {len(value)}")
    if "\x00" in value:
        # Postgres text cannot hold NUL; rejecting here keeps one bad event from blocking a batch.
        raise Rejected(f"field '{name}' contains a NUL character")
    return value


def _quoted(value: str, limit: int = 80) -> str:
    """``value`` as the reason quotes it: its repr, cut at ``limit`` characters (a repr of
    control or astral characters is up to ten times longer than the value)."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _event_type(doc: dict[str, Any]) -> str:
    value = _text(doc, "type", 32, required=True)
    assert value is not None
    if not TYPE_KEY.fullmatch(value):
        raise Rejected(f"field 'type' must match {TYPE_KEY_PATTERN}, got {_quoted(value)}")
    return value


def _direction(doc: dict[str, Any]) -> str | None:
    value = doc.get("direction")
    if value is None or value in DIRECTIONS:
        return value
    raise Rejected(f"field 'direction' must be 'inbound' or 'outbound', got {value!r:.80}")


def _timestamp(doc: dict[str, Any], now: datetime, future_tolerance: timedelta) -> datetime:
    value = doc.get("timestamp")
    if value is None:
        raise Rejected("field 'timestamp' is required")
    if isinstance(value, bool):
        raise Rejected(
            "field 'timestamp' must be an ISO-8601 string or epoch milliseconds, got bool"
        )
    if isinstance(value, int):
        ts = _from_epoch_ms(value)
    elif isinstance(value, str):
        ts = _from_iso(value)
    else:
        raise Rejected(
            "field 'timestamp' must be an ISO-8601 string or epoch milliseconds, "
            f"got {type(value).__name__}"
        )
    if ts > now + future_tolerance:
        raise Rejected(
            f"field 'timestamp' {ts.isoformat()} is more than "
            f"{int(future_tolerance.total_seconds())}s in the future"
        )
    return ts


def _from_epoch_ms(value: int) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=value)
    except OverflowError:
        raise Rejected(f"field 'timestamp' epoch milliseconds {value} is out of range") from None


def _from_iso(value: str) -> datetime:
    if len(value) > 64:
        raise Rejected(f"field 'timestamp' is not an ISO-8601 timestamp ({len(value)} characters)")
    if not value.isascii() or not value.isprintable():
        # fromisoformat takes any character as the date/time separator and tolerates one
        # before the offset: "2026-03-01\x0010:00:00\x00Z" would otherwise be accepted.
        raise Rejected(f"field 'timestamp' is not an ISO-8601 timestamp: {_quoted(value)}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(f"field 'timestamp' is not an ISO-8601 timestamp: {value!r}") from None
    if ts.tzinfo is None:
        raise Rejected(f"field 'timestamp' needs a UTC offset (e.g. 'Z' or '+02:00'): {value!r}")
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise Rejected(f"field 'timestamp' is out of range in UTC: {value!r}") from None
