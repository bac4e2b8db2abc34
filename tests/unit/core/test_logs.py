"""The JSON log line: fields every record has, position fields, extras, request ids."""

from __future__ import annotations

import logging

import orjson
import pytest

from core.logs import REQUEST_ID, JsonFormatter


def _line(message: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord(
        "streams.pipeline", logging.WARNING, __file__, 1, message, args, None
    )
    for name, value in extra.items():
        setattr(record, name, value)
    line: dict[str, object] = orjson.loads(JsonFormatter().format(record))
    return line


def test_every_line_has_time_level_logger_and_message() -> None:
    line = _line("batch committed events=%d", 3)
    assert line["level"] == "WARNING" and line["logger"] == "streams.pipeline"
    assert line["message"] == "batch committed events=3"
    assert str(line["ts"]).endswith("+00:00")


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("event rejected partition=7 offset=5 reason=x", {"partition": 7, "offset": 5}),
        ("duplicate event_id=abc-1 partition=0", {"event_id": "abc-1", "partition": 0}),
        ("event_id=12 kept as text", {"event_id": "12"}),  # ids are strings, even digits
        ("no positions here offset", {}),
    ],
)
def test_positions_in_the_message_become_fields(message: str, fields: dict[str, object]) -> None:
    line = _line(message)
    assert {k: line[k] for k in ("event_id", "partition", "offset") if k in line} == fields


def test_extras_and_the_request_id_are_fields_and_odd_values_become_text() -> None:
    token = REQUEST_ID.set("req-1")
    try:
        line = _line("key.create", actor={"role": "admin"}, when=object)
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "req-1"
    assert line["actor"] == {"role": "admin"}
    assert isinstance(line["when"], str)
