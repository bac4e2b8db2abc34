"""HTTP ingestion, the pure part: request bodies in, messages to publish and rejections out.

Each item is validated by the worker's own parser (``streams.events.parse_event``) on exactly
the bytes that are then published, so the API and the worker cannot disagree on what a valid
event is. Only the contract's fields are published (``EVENT_FIELDS``): anything else in an
item is ignored, as the worker would ignore it.

``respond`` items (KaireonAI's shape) are first mapped onto the contract: the idempotency key
becomes the event id, ``outcome`` the type, ``offerId`` / ``creativeId`` the action and
treatment, the server time the timestamp when none is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from api.errors import ApiError
from streams.events import EVENT_FIELDS, Interaction, Rejected, parse_event

MAX_EVENTS = 1000


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An accepted item: its index in the request and the Kafka key and value to publish."""

    index: int
    key: bytes
    value: bytes
    event: Interaction


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    error: str


@dataclass
class Intake:
    accepted: list[Outgoing] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def messages(self) -> list[tuple[bytes, bytes]]:
        return [(item.key, item.value) for item in self.accepted]


def decode_body(raw: bytes) -> Any:
    if not raw.strip():
        raise ApiError(400, "INVALID_JSON", "the request body is empty; send JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_JSON", f"the request body is not JSON: {exc}") from None


def batch_items(doc: Any, what: str) -> list[Any]:
    """The items of an array body: 1 to ``MAX_EVENTS`` of them, else 422."""
    if not isinstance(doc, list):
        raise ApiError(422, "INVALID_BODY", f"{what} must be an array, got {_kind(doc)}")
    if not 1 <= len(doc) <= MAX_EVENTS:
        raise ApiError(
            422, "INVALID_BODY", f"{what} must hold 1 to {MAX_EVENTS:,} items, got {len(doc):,}"
        )
    return doc


def event_items(doc: Any) -> list[Any]:
    """``POST /interactions`` takes one event object or an array of them."""
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list):
        return batch_items(doc, "the body")
    raise ApiError(
        422, "INVALID_BODY", f"the body must be an event object or an array, got {_kind(doc)}"
    )


def sort_events(
    items: Sequence[Any], tenant_id: str, now: datetime, future_tolerance: timedelta
) -> Intake:
    """Validate each item as the worker will; the tenant comes from the key.

    A ``tenantId`` that names another tenant refuses the whole request (403): it is a
    credentials problem, not a bad event.
    """
    intake = Intake()
    for index, item in enumerate(items):
        if isinstance(item, dict):
            given = item.get("tenantId")
            if isinstance(given, str) and given != tenant_id:
                raise ApiError(
                    403,
                    "TENANT_MISMATCH",
                    f"item {index}: tenantId {given!r:.80} is not the API key's tenant",
                )
            item = {name: item[name] for name in EVENT_FIELDS if name in item}
            item.setdefault("tenantId", tenant_id)
        value = orjson.dumps(item)
        try:
            event = parse_event(value, now, future_tolerance)
        except Rejected as exc:
            intake.rejected.append(Rejection(index, str(exc)))
            continue
        intake.accepted.append(Outgoing(index, event.customer_id.encode(), value, event))
    return intake


# --- respond (KaireonAI's shape) ----------------------------------------------------------


class ItemError(Exception):
    """A respond item that cannot be mapped onto the event contract."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# The contract's names as respond callers know them, for error messages.
_RESPOND_NAMES = {
    "'id'": "'idempotencyKey'",
    "'type'": "'outcome'",
    "'actionId'": "'offerId'",
    "'treatmentId'": "'creativeId'",
}
# Outcomes of the impression category are contacts the business made; the rest are the
# customer's answers. (Until the outcome-type registry exists, impression is the only one.)
_IMPRESSION_CATEGORY = frozenset({"impression"})


def respond_document(
    item: Any,
    tenant_id: str,
    now: datetime,
    treatments: Mapping[str, Any],
    idempotency_header: str | None = None,
) -> dict[str, Any]:
    """One respond item as a contract event (still to be validated by ``parse_event``).

    ``treatments`` (the tenant's catalog) resolves the offer and channel of a creative when
    they are not given.
    """
    if not isinstance(item, dict):
        raise ItemError(422, "INVALID_BODY", f"an outcome must be a JSON object, got {_kind(item)}")
    key = item.get("idempotencyKey", idempotency_header)
    if key is None:
        raise ItemError(
            400,
            "IDEMPOTENCY_KEY_REQUIRED",
            "idempotencyKey is required (in the body or the Idempotency-Key header): "
            "it is the event id that keeps a retry from counting twice",
        )
    outcome = item.get("outcome", item.get("interactionType"))
    creative = item.get("creativeId", item.get("treatmentId"))
    offer = item.get("offerId")
    channel = item.get("channelId")
    known = treatments.get(creative) if isinstance(creative, str) else None
    if offer is None and known is not None:
        offer = known["action_id"]
    if channel is None and known is not None:
        channel = known["channel_id"]
    if offer is None:
        if item.get("recommendationId") is not None or item.get("rank") is not None:
            raise ItemError(
                422,
                "RECOMMENDATION_NOT_SUPPORTED",
                "recommendationId and rank cannot be resolved here (there is no recommendation "
                "store); send offerId, and creativeId and channelId if there are any",
            )
        raise ItemError(
            422, "INVALID_OUTCOME", "offerId is required (or a creativeId the catalog knows)"
        )
    direction = item.get("direction")
    if direction is None and isinstance(outcome, str):
        direction = "outbound" if outcome in _IMPRESSION_CATEGORY else "inbound"
    doc = {
        "id": key,
        "timestamp": item.get("timestamp", now.isoformat()),
        "customerId": item.get("customerId"),
        "actionId": offer,
        "treatmentId": creative,
        "channelId": channel,
        "type": outcome,
        "direction": direction,
        "tenantId": tenant_id,
    }
    return {name: value for name, value in doc.items() if value is not None}


def sort_outcomes(
    items: Sequence[Any],
    tenant_id: str,
    now: datetime,
    future_tolerance: timedelta,
    treatments: Mapping[str, Any],
    idempotency_header: str | None = None,
) -> tuple[Intake, dict[int, ItemError]]:
    """Map and validate respond items; errors keep their status for the single-item route."""
    intake = Intake()
    errors: dict[int, ItemError] = {}
    for index, item in enumerate(items):
        try:
            doc = respond_document(item, tenant_id, now, treatments, idempotency_header)
        except ItemError as exc:
            errors[index] = exc
            intake.rejected.append(Rejection(index, exc.message))
            continue
        value = orjson.dumps(doc)
        try:
            event = parse_event(value, now, future_tolerance)
        except Rejected as exc:
            error = ItemError(422, "INVALID_OUTCOME", respond_reason(str(exc)))
            errors[index] = error
            intake.rejected.append(Rejection(index, error.message))
            continue
        intake.accepted.append(Outgoing(index, event.customer_id.encode(), value, event))
    return intake, errors


def respond_reason(reason: str) -> str:
    """A contract rejection in respond's field names ("field 'actionId'" -> "'offerId'")."""
    if reason.startswith("field '"):
        name, _, rest = reason[len("field ") :].partition(" ")
        return f"field {_RESPOND_NAMES.get(name, name)} {rest}"
    return reason


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
