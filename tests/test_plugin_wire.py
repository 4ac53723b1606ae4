"""The worker wire's values: what the SDK's contract carries comes back as it left, and what
does not decode is a WireError, never an object of the sender's choosing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import msgpack
import pytest

from plugins import sdk, wire


def test_an_order_fingerprint_map_keeps_its_tuple_keys() -> None:
    # CheckContext.recent_fingerprints: tuple keys (with a Decimal and a nested tuple) to times
    at = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    value = {("ACC", "BUY", Decimal("0.01"), ("BTC-USD", "ALPX")): at}
    back = wire.unpackb(wire.packb(value))
    assert back == value and isinstance(next(iter(back)), tuple)


def test_integers_past_64_bits_and_fractions_cross_exactly() -> None:
    value = [10**23, -(2**70), 2**64 - 1, Fraction(3, 1000), Fraction(10**30, 7), True]
    assert wire.unpackb(wire.packb(value)) == value
    assert wire.unpackb(wire.packb(True)) is True


def test_a_pool_crosses_with_its_fee_as_a_fraction() -> None:
    pool = sdk.DefiPool("cpmm", "0x" + "ab" * 20, ("0x" + "01" * 20, "0x" + "02" * 20),
                        Fraction(3, 1000), "epoch:1", 95_000, 10**20)
    back = wire.unpackb(wire.packb(pool))
    assert back == pool and isinstance(back.tokens, tuple) and isinstance(back.fee, Fraction)


@pytest.mark.parametrize("ext", [
    msgpack.ExtType(6, msgpack.packb([1, 0])),  # a zero denominator
    msgpack.ExtType(6, msgpack.packb(["1", 2])),  # not integers
    msgpack.ExtType(7, b"12x"),  # not an integer
    msgpack.ExtType(99, b""),  # unknown
])
def test_what_does_not_decode_is_a_wire_error(ext: msgpack.ExtType) -> None:
    with pytest.raises(wire.WireError):
        wire.unpackb(msgpack.packb({"v": ext}))


def test_an_object_outside_the_allow_list_does_not_cross() -> None:
    class Sneaky:
        pass

    with pytest.raises(TypeError):
        wire.packb({"v": Sneaky()})
