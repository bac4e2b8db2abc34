"""Pure parts of the request bounds: rate budgets, key redaction in paths, the API's grants."""

from __future__ import annotations

import pytest

from api.access import loggable_path
from api.limits import RateLimits, parse_limits
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
    ],
)
def test_a_key_in_a_path_is_logged_as_its_prefix(path: str, logged: str) -> None:
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
