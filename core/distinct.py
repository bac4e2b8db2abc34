"""Distinct items per group and bucket (a customer's actions, a channel's treatments) as tags.

``distinct_seen`` holds one row per (group, item) pair with the daily, weekly and monthly
buckets the pair was seen in, each as one integer: the bucket's first day counted from
0001-01-01, times four, plus the period's code. The row itself is the all-time bucket. One
row per pair and event, where a row per pair and bucket cost four.
"""

from __future__ import annotations

from datetime import date, timedelta

from core.periods import PERIOD_START_SQL, Period

TAG_EPOCH = date(1, 1, 1)
TAG_CODES: dict[Period, int] = {Period.DAILY: 0, Period.WEEKLY: 1, Period.MONTHLY: 2}
_PERIODS_BY_CODE = {code: period for period, code in TAG_CODES.items()}
_WIDTH = 4


def tag(period: Period, start: date) -> int:
    """The tag of the ``period`` bucket that starts on ``start`` (not for all-time)."""
    return (start - TAG_EPOCH).days * _WIDTH + TAG_CODES[period]


def bucket_of(value: int) -> tuple[Period, date]:
    """Inverse of ``tag``."""
    return _PERIODS_BY_CODE[value % _WIDTH], TAG_EPOCH + timedelta(days=value // _WIDTH)


def tag_sql(period: Period, day: str) -> str:
    """SQL for the tag of the ``period`` bucket holding the date expression ``day``."""
    start = PERIOD_START_SQL[period].format(day=day)
    return f"(({start}) - DATE '{TAG_EPOCH.isoformat()}') * {_WIDTH} + {TAG_CODES[period]}"


def period_of_tag_sql(value: str) -> str:
    """SQL: the period name of a tag expression."""
    names = ", ".join(f"'{_PERIODS_BY_CODE[c].value}'" for c in sorted(_PERIODS_BY_CODE))
    return f"(ARRAY[{names}])[{value} % {_WIDTH} + 1]"


def start_of_tag_sql(value: str) -> str:
    """SQL: the bucket start (a date) of a tag expression."""
    return f"(DATE '{TAG_EPOCH.isoformat()}' + {value} / {_WIDTH})"
