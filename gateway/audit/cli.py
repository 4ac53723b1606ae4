"""What `alphintra audit verify` parses and prints (the click command is in gateway/cli.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.audit.chain import AuditVerification
from gateway.errors import InvalidInput


def parse_instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not an ISO 8601 instant", code="AUDIT_RANGE_INVALID") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def verification_lines(result: AuditVerification, chain: str) -> list[str]:
    if result.ok:
        return [f"audit chain {chain}: OK, {result.checked} records verified"]
    return [f"audit chain {chain}: BROKEN at record {result.first_bad_seq} "
            f"({result.checked} records verified before it)", f"  {result.problem}"]
