"""api.recent.Recent: the small LRU map behind the parsed-page and built-body memos."""

from __future__ import annotations

from api.recent import Recent


def test_keeps_the_most_recently_used_entries_up_to_its_size() -> None:
    recent: Recent[str] = Recent(2)
    recent.put("a", "A")
    recent.put("b", "B")
    assert recent.get("a") == "A"  # "a" is now the most recently used
    recent.put("c", "C")
    assert recent.get("b") is None
    assert (recent.get("a"), recent.get("c")) == ("A", "C")


def test_put_replaces_the_value_of_a_known_key() -> None:
    recent: Recent[int] = Recent(1)
    recent.put("a", 1)
    recent.put("a", 2)
    assert recent.get("a") == 2
