"""The one timestamp convention of the platform tables: naive UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

from firebox.platform.errors import InvalidArgumentError


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def parse_time(value: str | None) -> datetime | None:
    """RFC 3339 / ISO 8601 (naive means UTC) or Unix seconds -> naive UTC datetime."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        return _parse_rfc3339(value)
    try:
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError) as error:  # NaN, infinity, or beyond year 9999
        raise InvalidArgumentError(f"invalid time {value!r}: out of range") from error


def _parse_rfc3339(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as error:
        raise InvalidArgumentError(f"invalid time {value!r}: use RFC 3339 or Unix seconds") from error
    try:
        return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    except OverflowError as error:  # an offset that moves it past year 9999 (or before year 1)
        raise InvalidArgumentError(f"invalid time {value!r}: out of range") from error


def format_time(value: datetime, timespec: str = "seconds") -> str:
    """RFC 3339 with a `Z`."""
    return value.isoformat(timespec=timespec) + "Z"
