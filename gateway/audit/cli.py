"""What `alphintra audit verify` and `audit export-checkpoints` parse and print (the click
commands are in gateway/cli.py)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
        return [f"audit chain {chain}: OK, {result.checked} records verified, "
                f"{result.checkpoints_checked} checkpoints, {result.cross_checked} order and "
                f"execution rows cross-checked"]
    if result.first_bad_seq is not None and result.checkpoint is None and not result.mismatches:
        return [f"audit chain {chain}: BROKEN at record {result.first_bad_seq} "
                f"({result.checked} records verified before it)", f"  {result.problem}"]
    lines = [f"audit chain {chain}: FAILED {result.code}"]
    if result.first_bad_seq is not None:
        lines.append(f"  BROKEN at record {result.first_bad_seq}: {result.problem}")
    if result.checkpoint is not None:
        lines.append(f"  {result.checkpoint.code}: {result.checkpoint.problem}")
    lines += [f"  {m.code}: {m.problem}" for m in result.mismatches]
    if result.mismatch_count > len(result.mismatches):
        lines.append(f"  … {result.mismatch_count - len(result.mismatches)} more mismatches")
    return lines


def write_export(document: dict[str, Any], out: str) -> int:
    """Write the export document to `out` ("-": stdout); the number of checkpoints."""
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if out == "-":
        print(text, end="")
    else:
        path = Path(out)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return len(document["checkpoints"])
