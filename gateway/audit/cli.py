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


def verification_lines(result: AuditVerification, label: str) -> list[str]:
    """The verdict on `label`'s trail (a tenant's slug, or "platform"), then one line per lane."""
    if result.ok:
        lines = [f"audit trail {label}: OK, {result.checked} records verified in "
                 f"{_lanes(result.chains)}, {result.checkpoints_checked} checkpoints, "
                 f"{result.cross_checked} order and execution rows cross-checked"]
    elif result.first_bad_seq is not None and result.checkpoint is None and not result.mismatches:
        lines = [f"audit trail {label}: BROKEN at record {result.first_bad_seq} of chain "
                 f"{result.chain} ({result.checked} records verified in {_lanes(result.chains)})",
                 f"  {result.problem}"]
    else:
        lines = [f"audit trail {label}: FAILED {result.code}"]
        if result.first_bad_seq is not None:
            lines.append(f"  BROKEN at record {result.first_bad_seq} of chain {result.chain}: "
                         f"{result.problem}")
        if result.checkpoint is not None:
            where = f" (chain {result.checkpoint.chain})" if result.checkpoint.chain else ""
            lines.append(f"  {result.checkpoint.code}{where}: {result.checkpoint.problem}")
        lines += [f"  {m.code}: {m.problem}" for m in result.mismatches]
        if result.mismatch_count > len(result.mismatches):
            lines.append(f"  … {result.mismatch_count - len(result.mismatches)} more mismatches")
    for lane in result.lanes:
        state = "OK" if lane.ok else f"BROKEN at record {lane.first_bad_seq}"
        lines.append(f"  lane {lane.chain}: {state}, {lane.checked} records verified")
    return lines


def _lanes(count: int) -> str:
    return "1 lane" if count == 1 else f"{count} lanes"


def export_lines(document: dict[str, Any]) -> list[str]:
    """One line per chain (lane) of an export document: its checkpoints and the last seq."""
    by_chain: dict[str, list[int]] = {}
    for checkpoint in document["checkpoints"]:
        by_chain.setdefault(checkpoint["chain"], []).append(checkpoint["seq"])
    return [f"  chain {chain}: {len(seqs)} checkpoints, the last at record {max(seqs)}"
            for chain, seqs in sorted(by_chain.items())]


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
