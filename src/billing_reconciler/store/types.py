"""Column types shared by the tables: UTC timestamps and canonical JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Surrogate keys: BIGINT on PostgreSQL; on SQLite only `INTEGER PRIMARY KEY` is a rowid alias
#: that autoincrements, so the variant matters.
SurrogateKey: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")

#: JSONB on PostgreSQL (comparable, indexable), JSON text elsewhere.
JSONColumn: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


def canonical_json(value: Any) -> str:
    """Serialize with sorted keys and no insignificant whitespace, so equal values store equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def as_utc(value: datetime) -> datetime:
    """Return `value` in UTC; a naive datetime is refused because its zone is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} given; pass a timezone-aware one")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores `timestamptz`. SQLite has no time zones: values are stored as UTC text
    without offset and read back as aware UTC, so rows written by other tools (naive text) are
    interpreted as UTC too.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
