"""Timestamps that enter from outside (run `started_at`, `since` / `until` filters), bounded.

Every one is parsed here, made aware (naive means UTC), refused when its offset is one
PostgreSQL cannot store (beyond ±15:59) or when it lies outside a sane range, and returned
in UTC — so no stored value can later overflow Python's `datetime` when it is read back.
"""

import re
from datetime import UTC, datetime, timedelta

from django.utils.dateparse import parse_datetime

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_OFFSET = timedelta(hours=15, minutes=59)  # PostgreSQL's limit on a time zone displacement
RANGE_TEXT = "between 1970-01-01 and 2100-01-01 (UTC)"
_UNENCODED_PLUS = re.compile(r" (\d\d:?\d\d)$")


class TimestampError(ValueError):
    """The value is not a usable date-time; the message says why, for a 400 naming the field."""


def parse_timestamp(raw: object, *, lenient_plus: bool = False) -> datetime:
    """An aware UTC datetime from ISO 8601 text, or TimestampError saying what is wrong.

    `lenient_plus` accepts a '+' that a query string decoded to a space ("...10:00 02:00").
    """
    if not isinstance(raw, str):
        raise TimestampError("must be an ISO 8601 date-time")
    text = raw.strip()
    if lenient_plus:
        text = _UNENCODED_PLUS.sub(r"+\1", text)
    try:
        parsed = parse_datetime(text)
    except ValueError:  # well-formed but impossible: month 13, offset +24:00
        parsed = None
    if parsed is None:
        raise TimestampError("must be an ISO 8601 date-time")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    offset = parsed.utcoffset() or timedelta(0)
    if abs(offset) > MAX_OFFSET:
        raise TimestampError("has a UTC offset beyond ±15:59")
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-12:00 is year 10000 in UTC
        raise TimestampError(f"must be {RANGE_TEXT}") from None
    if not EARLIEST <= utc < LATEST:
        raise TimestampError(f"must be {RANGE_TEXT}")
    return utc
