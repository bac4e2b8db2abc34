"""Parameters declared as models (api.params): one validation call per request, the same 422
as FastAPI's, and every field in the OpenAPI document."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from api.customer_routes import HistoryQuery, SummariesQuery
from api.deps import AuthHeaders
from api.main import create_app
from api.params import QueryModel, openapi_parameters
from api.routes import SummaryQuery
from core.config import Settings
from core.periods import Period

MODELS: dict[str, type[QueryModel]] = {
    "/api/v1/interaction-summaries": SummariesQuery,
    "/api/v1/interaction-history": HistoryQuery,
    "/api/v1/interaction-summary": SummaryQuery,
}


def _aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_values_are_read_by_alias_with_defaults_and_unknown_names_ignored() -> None:
    q = SummariesQuery.parse({"customerId": "C1", "periodType": "weekly", "utm": "x"})
    assert (q.customer, q.period_type, q.limit, q.days) == ("C1", Period.WEEKLY, 100, None)
    assert SummariesQuery.parse({"limit": "7"}).limit == 7


@pytest.mark.parametrize(
    ("values", "loc"),
    [
        ({"limit": "0"}, ("query", "limit")),
        ({"limit": "ten"}, ("query", "limit")),
        ({"days": "36501"}, ("query", "days")),
        ({"periodType": "hourly"}, ("query", "periodType")),
        ({"customerId": ""}, ("query", "customerId")),
        ({"customerId": "a\x00b"}, ("query", "customerId")),
        ({"offerId": "x" * 129}, ("query", "offerId")),
    ],
)
def test_an_invalid_value_is_the_422_fastapi_gives_located_by_its_alias(
    values: dict[str, str], loc: tuple[str, ...]
) -> None:
    with pytest.raises(RequestValidationError) as raised:
        SummariesQuery.parse(values)
    assert [e["loc"] for e in raised.value.errors()] == [loc]


def test_every_model_field_is_documented_on_its_routes() -> None:
    document = create_app(Settings()).openapi()
    operations = {
        (method, path): op for path, ops in document["paths"].items() for method, op in ops.items()
    }
    for path, model in MODELS.items():
        params = operations[("get", path)]["parameters"]
        assert {p["name"] for p in params if p["in"] == "query"} == _aliases(model), path
    protected = [k for k in operations if k[1].startswith("/api/")]
    assert protected
    for key in protected:
        headers = {p["name"] for p in operations[key].get("parameters", ()) if p["in"] == "header"}
        assert _aliases(AuthHeaders) <= headers, key


def test_enum_fields_are_documented_inline_with_their_default_and_description() -> None:
    [group_by] = [p for p in openapi_parameters(SummaryQuery, "query") if p["name"] == "groupBy"]
    assert group_by["schema"]["enum"] == ["action", "treatment", "channel", "customer"]
    assert group_by["schema"]["default"] == "action"
    assert group_by["description"] == "grouping dimension"
