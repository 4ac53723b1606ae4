"""CPU time of the processes a benchmark starts (Linux /proc): the figure that holds when other
work shares the machine's cores. Shared by graphql_throughput.py and order_intake.py."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process and all its threads so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """`pid` and every process under it (uvicorn --workers forks its workers under its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, ()))
    return found


def tree_cpu_seconds(pids: list[int]) -> float | None:
    values = [cpu_seconds(pid) for pid in pids]
    return None if not values or values[0] is None else sum(v for v in values if v is not None)
