"""Answers to a worker's own questions: venue facts (a connector or source asks
`context.venues`) and egress. Nothing else is answered; a worker cannot reach the database,
the bus or another tenant through this."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.marketplace.sandbox.egress import EgressProxy
from gateway.marketplace.sandbox.supervisor import ManagedPlugin
from plugins.sdk import VenueDirectory

_VENUE_OPS = {
    "venues": lambda d, a: list(d.venues()),
    "venue": lambda d, a: d.venue(str(a["mic"])),
    "is_open": lambda d, a: bool(d.is_open(str(a["mic"]), a["at"])),
    "sessions": lambda d, a: list(d.sessions(str(a["mic"]), a["start"], a["end"])),
    "lot_size": lambda d, a: d.lot_size(str(a["mic"]), a["price"]),
    "tick_size": lambda d, a: d.tick_size(str(a["mic"]), a["price"]),
}


def answerer(venues: VenueDirectory | None, egress: EgressProxy
             ) -> Callable[[ManagedPlugin, str, dict[str, Any]], Any]:
    def answer(managed: ManagedPlugin, method: str, args: dict[str, Any]) -> Any:
        if method == "venues":
            directory = managed.spec.venues or venues
            op = _VENUE_OPS.get(str(args.get("op")))
            if directory is None or op is None:
                raise LookupError("no venue directory for this question")
            return op(directory, args)
        if method == "egress":
            return egress.request(managed.spec.capabilities, args)
        raise LookupError(f"a worker cannot ask {method!r}")

    return answer
