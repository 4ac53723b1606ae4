"""Tokens a chain's pools trade: symbols, decimals, and resolution of what a client names."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway.defi.errors import TokenUnknown


@dataclass(frozen=True)
class TokenInfo:
    address: str  # checksummed
    symbol: str
    decimals: int
    name: str = ""

    def to_units(self, amount: Decimal) -> int:
        return int(amount.scaleb(self.decimals))

    def from_units(self, raw: int) -> Decimal:
        return Decimal(raw).scaleb(-self.decimals)


class TokenDirectory:
    """One chain's tokens, by symbol (case-insensitive) and by address."""

    def __init__(self, tokens: list[TokenInfo]) -> None:
        self._by_address = {t.address.lower(): t for t in tokens}
        self._by_symbol: dict[str, TokenInfo] = {}
        for token in tokens:
            self._by_symbol.setdefault(token.symbol.upper(), token)

    def all(self) -> list[TokenInfo]:
        return sorted(self._by_address.values(), key=lambda t: t.symbol)

    def resolve(self, key: str) -> TokenInfo:
        text = key.strip()
        found = (self._by_address.get(text.lower()) if text.startswith("0x")
                 else self._by_symbol.get(text.upper()))
        if found is None:
            raise TokenUnknown(f"unknown token {text!r} on this chain", details={"token": text})
        return found

    def by_address(self, address: str) -> TokenInfo | None:
        return self._by_address.get(address.lower())
