"""Pure parts of the request bounds: rate budgets, key redaction in paths, the API's grants."""

from __future__ import annotations

import threading
import time

import pytest

from api.access import loggable_path
from api.limits import RateLimits, SweptInline, parse_limits
from api.main import create_app
from api.models import ERROR_RESPONSES
from core.config import Settings
from core.roles import api_grants


def test_a_key_budget_refuses_past_its_limit_with_a_retry_time_and_keys_are_separate() -> None:
    limits = RateLimits("3/minute", "")
    assert [limits.check_key("isk_aaaaaa") for _ in range(3)] == [None, None, None]
    wait = limits.check_key("isk_aaaaaa")
    assert wait is not None and 1 <= wait <= 60
    assert limits.check_key("isk_bbbbbb") is None
    assert limits.check_address("10.0.0.1") is None  # empty: no address limit


def test_a_producer_key_spends_its_own_budget_not_the_dashboard_one() -> None:
    limits = RateLimits("2/minute", "", per_producer_key="4/minute")
    assert [limits.check_key("isk_ppppp", producer=True) for _ in range(4)] == [None] * 4
    assert limits.check_key("isk_ppppp", producer=True) is not None
    assert [limits.check_key("isk_vvvvv") for _ in range(2)] == [None, None]
    assert limits.check_key("isk_vvvvv") is not None


def test_counting_starts_no_thread_and_expired_keys_are_swept_inline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = RateLimits("1000/second", "1000/second")
    started: list[threading.Thread] = []
    monkeypatch.setattr(threading.Timer, "start", lambda self: started.append(self))
    monkeypatch.setattr(SweptInline, "SWEEP_SECONDS", 0.0)  # sweep on every count
    for _round in range(3):  # the library's own timer is restarted 10 ms after the last one
        for _ in range(10):
            assert limits.check_address("10.0.0.1") is None
            assert limits.check_key("isk_aaaaaa") is None
        time.sleep(0.015)  # pacing the counts past the library's timer, not synchronizing
    assert started == []
    storage = limits._limiter.storage
    assert isinstance(storage, SweptInline) and storage.storage
    for key in storage.expirations:
        storage.expirations[key] = 0.0  # every window over
    limits.check_address("10.0.0.2")  # a count sweeps: only the new address's keys are left
    assert storage.storage and all("10.0.0.2" in key for key in storage.storage)


@pytest.mark.parametrize("text", ["100 per banana", "fast", "1/"])
def test_a_malformed_limit_names_the_setting(text: str) -> None:
    with pytest.raises(ValueError, match="INTERACTION_SUMMARY_API_RATE_LIMIT_PER_KEY"):
        parse_limits(text, "INTERACTION_SUMMARY_API_RATE_LIMIT_PER_KEY")


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/api/v1/keys/isk_AbCdEf0123456789xyz", "/api/v1/keys/isk_AbCdEf…"),
        ("/api/v1/keys/isk_AbCdEf", "/api/v1/keys/isk_AbCdEf"),  # a prefix is already safe
        ("/api/v1/interaction-summary", "/api/v1/interaction-summary"),
        ("/api/v1/customers/C-007", "/api/v1/customers/…"),  # an erased customer: not named
        ("/api/v1/customers/a%2Fb/c", "/api/v1/customers/…/c"),
    ],
)
def test_a_key_or_customer_in_a_path_is_not_logged_in_full(path: str, logged: str) -> None:
    assert loggable_path(path) == logged


def test_the_api_role_gets_no_write_on_counters_or_history_and_no_ddl() -> None:
    grants = " ".join(api_grants("api_role"))
    assert "interaction_bucket" in grants and "interaction_history" in grants
    for statement in api_grants("api_role"):
        if "interaction_bucket" in statement or "interaction_history" in statement:
            assert statement.startswith("GRANT SELECT ON ")
    assert "ALL" not in grants and "CREATE" not in grants and "TRUNCATE" not in grants
    with pytest.raises(ValueError):
        api_grants("x; DROP TABLE api_key")


def test_every_api_operation_documents_the_answers_given_before_it_runs() -> None:
    # The rate budgets and the body limit answer in front of every route under /api/ (found by
    # schemathesis: POST /api/v1/interactions answered a 429 its document did not list).
    document = create_app(Settings()).openapi()
    undocumented = [
        f"{method.upper()} {path}: {code}"
        for path, operations in document["paths"].items()
        if path.startswith("/api/")
        for method, operation in operations.items()
        for code in ERROR_RESPONSES
        if str(code) not in operation["responses"]
    ]
    assert not undocumented
    assert len(document["paths"]) > 10
