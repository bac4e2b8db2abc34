"""HTTP ingestion's pure part: what is published, what is rejected and why, respond mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api import intake
from api.errors import ApiError
from streams.events import Rejected, parse_event

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)
VALID = {
    "id": "ev-1",
    "timestamp": "2026-03-10T11:00:00Z",
    "customerId": "C-1",
    "actionId": "act-1",
    "type": "click",
}


def sort(items: list[Any], tenant: str = "default") -> intake.Intake:
    return intake.sort_events(items, tenant, NOW, TOLERANCE)


def test_published_bytes_are_the_bytes_the_worker_parser_accepted() -> None:
    result = sort([{**VALID, "extra": {"big": "x" * 1000}}])
    (item,) = result.accepted
    assert item.key == b"C-1"
    assert orjson.loads(item.value) == {**VALID, "tenantId": "default"}  # extras dropped
    assert parse_event(item.value, NOW, TOLERANCE) == item.event


def test_tenant_comes_from_the_key_and_a_matching_tenant_id_is_kept() -> None:
    (item,) = sort([VALID], tenant="acme").accepted
    assert item.event.tenant_id == "acme"
    (same,) = sort([{**VALID, "tenantId": "acme"}], tenant="acme").accepted
    assert same.event.tenant_id == "acme"


def test_another_tenant_in_the_body_refuses_the_whole_request() -> None:
    with pytest.raises(ApiError) as refused:
        sort([VALID, {**VALID, "id": "ev-2", "tenantId": "other"}], tenant="acme")
    assert (refused.value.status, refused.value.code) == (403, "TENANT_MISMATCH")
    assert "item 1" in refused.value.message


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({**VALID, "type": "Click!"}, "field 'type' must match"),
        ({k: v for k, v in VALID.items() if k != "id"}, "field 'id' is required"),
        ({**VALID, "direction": "sideways"}, "field 'direction' must be 'inbound' or 'outbound'"),
        ({**VALID, "timestamp": "2026-03-10T13:00:00Z"}, "in the future"),
        ({**VALID, "tenantId": 5}, "field 'tenantId' must be a string"),
        ("not an object", "not a JSON object"),
        (None, "not a JSON object"),
    ],
)
def test_rejected_items_carry_their_index_and_the_worker_reason(item: Any, reason: str) -> None:
    result = sort([VALID, item, {**VALID, "id": "ev-3"}])
    assert [a.index for a in result.accepted] == [0, 2]
    (rejected,) = result.rejected
    assert rejected.index == 1 and reason in rejected.error


def test_direction_is_part_of_the_event() -> None:
    (item,) = sort([{**VALID, "direction": "outbound"}]).accepted
    assert item.event.direction == "outbound"
    assert sort([VALID]).accepted[0].event.direction is None


@pytest.mark.parametrize(
    ("doc", "status"),
    [([], 422), ([VALID] * 1001, 422), ("text", 422), (5, 422)],
)
def test_bodies_that_are_not_events_or_batches_of_1_to_1000(doc: Any, status: int) -> None:
    with pytest.raises(ApiError) as refused:
        intake.event_items(doc)
    assert refused.value.status == status


def test_a_single_object_and_a_batch_of_1000_are_taken() -> None:
    assert intake.event_items(VALID) == [VALID]
    assert len(intake.event_items([VALID] * 1000)) == 1000


@pytest.mark.parametrize("raw", [b"", b"  ", b"{not json", b'{"a": 1'])
def test_a_body_that_is_not_json_is_a_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        intake.decode_body(raw)
    assert (refused.value.status, refused.value.code) == (400, "INVALID_JSON")


_text = st.text(min_size=0, max_size=140)
# JSON from orjson.loads: integers beyond 64 bits arrive as floats.
_value = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    _text,
    st.lists(_text, max_size=2),
)


@given(
    st.dictionaries(
        st.sampled_from([*VALID, "treatmentId", "channelId", "direction", "tenantId", "x"]),
        _value,
    )
)
def test_every_item_is_accepted_or_rejected_exactly_as_the_worker_would(doc: dict) -> None:
    """Naive oracle: the worker's parser on the item's contract fields, tenant filled in."""
    if isinstance(doc.get("tenantId"), str) and doc["tenantId"] != "default":
        doc = {**doc, "tenantId": "default"}
    expected: object
    contract = {k: v for k, v in doc.items() if k != "x"}
    contract.setdefault("tenantId", "default")
    try:
        expected = parse_event(orjson.dumps(contract), NOW, TOLERANCE)
    except Rejected as exc:
        expected = str(exc)
    result = sort([doc])
    got = result.accepted[0].event if result.accepted else result.rejected[0].error
    assert got == expected


# --- respond ------------------------------------------------------------------------------

OUTCOME = {"customerId": "C-1", "offerId": "act-1", "outcome": "click", "idempotencyKey": "k-1"}
TREATMENTS = {"tr-1": {"action_id": "act-9", "channel_id": "email"}}


def respond(items: list[Any], header: str | None = None) -> tuple[list[intake.Outgoing], dict]:
    result, errors = intake.sort_outcomes(items, "acme", NOW, TOLERANCE, TREATMENTS, header)
    assert sorted([*(a.index for a in result.accepted), *errors]) == list(range(len(items)))
    return result.accepted, errors


def test_an_outcome_maps_onto_the_contract() -> None:
    (item,), errors = respond([{**OUTCOME, "creativeId": "tr-2", "channelId": "web"}])
    assert not errors
    e = item.event
    assert (e.id, e.tenant_id, e.customer_id, e.action_id, e.treatment_id, e.channel_id) == (
        "k-1", "acme", "C-1", "act-1", "tr-2", "web"
    )  # fmt: skip
    assert (e.type, e.timestamp, e.direction) == ("click", NOW, "inbound")


def test_direction_defaults_by_category_and_an_explicit_one_wins() -> None:
    (imp,), _ = respond([{**OUTCOME, "outcome": "impression"}])
    assert imp.event.direction == "outbound"
    (click,), _ = respond([{**OUTCOME, "direction": "outbound"}])
    assert click.event.direction == "outbound"


def test_the_idempotency_key_may_come_from_the_header_and_is_required() -> None:
    no_key = {k: v for k, v in OUTCOME.items() if k != "idempotencyKey"}
    (item,), _ = respond([no_key], header="h-1")
    assert item.event.id == "h-1"
    _, errors = respond([no_key])
    assert (errors[0].status, errors[0].code) == (400, "IDEMPOTENCY_KEY_REQUIRED")


def test_a_known_creative_resolves_offer_and_channel() -> None:
    no_offer = {k: v for k, v in OUTCOME.items() if k != "offerId"}
    (item,), _ = respond([{**no_offer, "creativeId": "tr-1"}])
    assert (item.event.action_id, item.event.channel_id) == ("act-9", "email")


def test_a_recommendation_alone_is_a_422_that_says_why() -> None:
    no_offer = {k: v for k, v in OUTCOME.items() if k != "offerId"}
    _, errors = respond([{**no_offer, "recommendationId": "rec-1", "rank": 1}])
    assert (errors[0].status, errors[0].code) == (422, "RECOMMENDATION_NOT_SUPPORTED")
    _, errors = respond([no_offer])
    assert errors[0].code == "INVALID_OUTCOME" and "offerId is required" in errors[0].message


def test_contract_rejections_speak_respond_names() -> None:
    _, errors = respond([{**OUTCOME, "offerId": "a" * 129}, {**OUTCOME, "outcome": "Bad"}])
    assert errors[0].message.startswith("field 'offerId' must be 1..128 characters")
    assert errors[1].message.startswith("field 'outcome' must match")
