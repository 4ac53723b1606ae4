"""A tenant uploads its own market data files through GraphQL: read whole before they are
stored, served to that tenant only in the core graph (before any other source), audited, and
refused naming row and column when they break the layout, with nothing stored."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.support import error_codes, onboard, user_key

PUT = """mutation($i: MarketDataFileInput!) { putMarketDataFile(input: $i) {
  name sha256 size instruments bars createdBy } }"""
LIST = "{ marketDataFiles { name instruments bars } }"
DELETE = 'mutation($n: String!) { deleteMarketDataFile(name: $n) }'
BARS = ('{ bars(instrument: "OWNCO.XNAS", start: "2024-03-01T00:00:00Z", end: "2024-03-09T00:00:00Z", '
        'interval: "1d") { start close } }')
INSTRUMENT = '{ instrument(key: "OWNCO.XNAS") { key plugin currency } }'
GOOD = ("symbol,mic,start,interval,open,high,low,close,volume\n"
        "OWNCO,XNAS,2024-03-04,1d,5,5.5,4.5,5.25,300\n"
        "OWNCO,XNAS,2024-03-05,1d,5.25,6,5,5.75,400\n"
        "AAPL,XNAS,2024-03-04,1d,10,11,9,10.5,1000\n")


def _file(name: str, text: str | bytes) -> dict[str, Any]:
    raw = text.encode() if isinstance(text, str) else text
    return {"i": {"name": name, "contentBase64": base64.b64encode(raw).decode()}}


@pytest.fixture()
def desks(runtime: Any) -> dict[str, Any]:
    return {"a": onboard(runtime), "b": onboard(runtime)}


def _audit_kinds(gql: Any, key: str) -> list[str]:
    edges = gql.data("{ auditRecords(first: 50) { edges { node { kind subject } } } }",
                     key=key)["auditRecords"]["edges"]
    return [e["node"]["kind"] for e in edges if e["node"]["kind"].startswith("marketdata.")]


def test_an_uploaded_file_serves_its_tenant_only_and_wins(gql, desks) -> None:
    a, b = desks["a"], desks["b"]
    stored = gql.data(PUT, _file("own.csv", GOOD), key=a.key)["putMarketDataFile"]
    assert stored["name"] == "own.csv" and stored["instruments"] == 2 and stored["bars"] == 3
    assert stored["size"] == len(GOOD) and len(stored["sha256"]) == 64
    assert gql.data(LIST, key=a.key)["marketDataFiles"] == [{"name": "own.csv", "instruments": 2, "bars": 3}]
    assert gql.data(INSTRUMENT, key=a.key)["instrument"] == {"key": "OWNCO.XNAS", "plugin": "file-source",
                                                             "currency": "USD"}
    assert [b_["close"] for b_ in gql.data(BARS, key=a.key)["bars"]] == ["5.25", "5.75"]
    aapl = gql.data('{ instrument(key: "AAPL.XNAS") { plugin } }', key=a.key)["instrument"]
    assert aapl["plugin"] == "file-source"  # the tenant's own data wins over the twin
    assert _audit_kinds(gql, a.key) == ["marketdata.file_stored"]

    # Tenant B: none of it.
    assert gql.data(LIST, key=b.key)["marketDataFiles"] == []
    assert error_codes(gql(INSTRUMENT, key=b.key)) == ["INSTRUMENT_UNKNOWN"]
    assert gql.data('{ instrument(key: "AAPL.XNAS") { plugin } }', key=b.key)["instrument"]["plugin"] \
        == "market-twin"

    assert error_codes(gql(DELETE, {"n": "own.csv"}, key=b.key)) == ["MARKETDATA_FILE_NOT_FOUND"]
    assert gql.data(LIST, key=a.key)["marketDataFiles"][0]["name"] == "own.csv"  # still A's

    # Deleted: gone at once for this process.
    assert gql.data(DELETE, {"n": "own.csv"}, key=a.key)["deleteMarketDataFile"] is True
    assert error_codes(gql(INSTRUMENT, key=a.key)) == ["INSTRUMENT_UNKNOWN"]
    assert sorted(_audit_kinds(gql, a.key)) == ["marketdata.file_deleted", "marketdata.file_stored"]
    assert error_codes(gql(DELETE, {"n": "own.csv"}, key=a.key)) == ["MARKETDATA_FILE_NOT_FOUND"]


@pytest.mark.parametrize(("text", "row", "column"), [
    (GOOD + "OWNCO,XNAS,2024-03-06,1d,5,4,4.5,5,100\n", 4, None),  # high under low
    (GOOD.replace("5.75,400", "5.75,-4"), 2, "volume"),
    ("symbol,mic,start,interval,open,high,low,close\nX,XNAS,2024-03-04,1d,1,1,1,1\n", None, None),
])
def test_a_file_breaking_the_layout_is_refused_and_nothing_is_stored(gql, desks, text, row, column) -> None:
    a = desks["a"]
    body = gql(PUT, _file("bad.csv", text), key=a.key)
    assert error_codes(body) == ["MARKETDATA_FILE_INVALID"], body
    details = body["errors"][0]["extensions"]
    assert details["file"] == "bad.csv" and details["layoutCode"]
    if row is not None:
        assert details["row"] == row
    if column is not None:
        assert details["column"] == column
    assert gql.data(LIST, key=a.key)["marketDataFiles"] == []
    assert _audit_kinds(gql, a.key) == []


def test_a_file_that_disagrees_with_the_tenants_others_is_refused(gql, desks) -> None:
    a = desks["a"]
    gql.data(PUT, _file("own.csv", GOOD), key=a.key)
    clash = ("symbol,mic,start,interval,open,high,low,close,volume\n"
             "OWNCO,XNAS,2024-03-04,1d,5,6,5,5.5,100\n")  # own.csv has this bar already
    body = gql(PUT, _file("more.csv", clash), key=a.key)
    assert error_codes(body) == ["MARKETDATA_FILE_INVALID"], body
    assert [f["name"] for f in gql.data(LIST, key=a.key)["marketDataFiles"]] == ["own.csv"]
    assert gql.data(INSTRUMENT, key=a.key)["instrument"]["currency"] == "USD"


def test_bad_names_bad_encoding_and_roles(gql, runtime, desks) -> None:
    a = desks["a"]
    for name in ("../etc.csv", "bars.txt", ".hidden.csv", "a" * 120 + ".csv"):
        assert error_codes(gql(PUT, _file(name, GOOD), key=a.key)) == ["MARKETDATA_FILE_NAME_INVALID"], name
    assert error_codes(gql(PUT, {"i": {"name": "x.csv", "contentBase64": "not base64!"}}, key=a.key)) == \
        ["MARKETDATA_FILE_INVALID"]
    assert error_codes(gql(PUT, _file("empty.csv", b""), key=a.key)) == ["MARKETDATA_FILE_INVALID"]
    _, viewer = user_key(runtime, a, "viewer")
    assert error_codes(gql(PUT, _file("own.csv", GOOD), key=viewer)) == ["FORBIDDEN"]
    assert gql.data(LIST, key=a.key)["marketDataFiles"] == []


def test_every_replica_serves_the_stored_files(gql, runtime, desks) -> None:
    """Another process (a replica, a job worker) reads the files from the database."""
    from gateway.marketdata.uploads import TenantUploads
    from gateway.scope import tenant_scope

    a = desks["a"]
    gql.data(PUT, _file("own.csv", GOOD), key=a.key)
    replica = TenantUploads(runtime.db, runtime.audit, runtime.markets.directory)
    with tenant_scope(a.id):
        served = replica.sources(a.id)
    assert [i.key for _, source in served for i in source.instruments()] == ["AAPL.XNAS", "OWNCO.XNAS"]
    assert replica.sources(desks["b"].id) == ()
