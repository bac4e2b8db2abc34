"""The environment a child service runs with: the parent's, minus every service setting."""

from __future__ import annotations

import pytest

from core.config import Settings
from embedded.processes import clean_env, service_env


def test_a_service_setting_of_the_parent_never_reaches_a_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://parent@elsewhere/db")
    monkeypatch.setenv("INTERACTION_SUMMARY_TOPIC", "parents-topic")
    monkeypatch.setenv("UNRELATED_VARIABLE", "kept")
    env = clean_env(COLUMNS="200")
    assert "DATABASE_URL" not in env and "INTERACTION_SUMMARY_TOPIC" not in env
    assert env["UNRELATED_VARIABLE"] == "kept"
    assert env["COLUMNS"] == "200" and env["PYTHONUNBUFFERED"] == "1"


def test_a_child_gets_exactly_the_settings_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERACTION_SUMMARY_TOPIC", "parents-topic")
    settings = Settings(topic="childs-topic", database_url="postgresql://child@here/db")
    env = service_env(settings)
    assert env["INTERACTION_SUMMARY_TOPIC"] == "childs-topic"
    assert env["DATABASE_URL"] == "postgresql://child@here/db"
