"""Request parameters declared as pydantic models: validated in one call, documented from the
same model.

FastAPI validates each declared query or header parameter on its own, through a generic
per-field path (py-spy, bench/customer_reads.py: ~7 µs a parameter, ~60 µs for the nine of
interaction-summaries, and ~65 µs more for the three auth headers behind three nested
dependencies). A ``QueryModel`` is read from the whole query string by one pydantic call
instead (a dependency, ``Depends(Model.from_request)``), and ``document_parameters`` writes
its fields into the OpenAPI document as the parameters FastAPI would have written: the
document stays generated from the models, never by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Self

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, ValidationError


class QueryModel(BaseModel):
    """A route's query parameters; unknown ones are ignored, as FastAPI does."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    # Where FastAPI would have found them (``query`` or ``header``): the errors' ``loc``.
    location: ClassVar[str] = "query"

    @classmethod
    async def from_request(cls, request: Request) -> Self:
        # async: FastAPI runs a plain def dependency in a worker thread, a hop per request.
        return cls.parse(dict(request.query_params))  # a repeated name: the last value

    @classmethod
    def parse(cls, values: dict[str, str]) -> Self:
        """The model, or the 422 FastAPI gives for the same values (``api.errors``)."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": (cls.location, *e["loc"])} for e in exc.errors()]
            ) from None


def openapi_parameters(model: type[BaseModel], location: str) -> list[dict[str, Any]]:
    """The OpenAPI parameter objects of ``model``'s fields (by alias), as FastAPI writes them
    for declared parameters, with the models' ``$defs`` (enums) inlined."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": location,
            "required": name in required,
            "schema": _inline(field, defs),
            **({"description": field["description"]} if "description" in field else {}),
        }
        for name, field in schema["properties"].items()
    ]


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        here = {k: _inline(v, defs) for k, v in node.items() if k != "$ref"}
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return {**_inline(defs[ref.removeprefix("#/$defs/")], defs), **here}
        return here if ref is None else {**here, "$ref": ref}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


# Dependencies that read parameters themselves, and the models documenting them: a
# QueryModel's ``from_request`` is found by itself; others register here (api.deps).
DOCUMENTED_BY: dict[Callable[..., Any], tuple[type[BaseModel], str]] = {}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _documented(call: Callable[..., Any]) -> tuple[type[BaseModel], str] | None:
    owner = getattr(call, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, QueryModel):
        return owner, owner.location
    return DOCUMENTED_BY.get(call)


def document_parameters(app: FastAPI) -> None:
    """Add the parameters of every model-declared dependency to its routes' OpenAPI entries
    (before the document is first generated)."""
    for context in iter_route_contexts(app.routes):  # included routers' routes too
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        models: dict[type[BaseModel], str] = {}
        for call in _calls(route.dependant):
            found = _documented(call)
            if found is not None:
                models.setdefault(*found)
        if models:
            extra = route.openapi_extra = dict(route.openapi_extra or {})
            extra["parameters"] = [
                *extra.get("parameters", ()),
                *(p for model, where in models.items() for p in openapi_parameters(model, where)),
            ]
