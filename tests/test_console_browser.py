"""The web console in a real browser: Playwright driving Debian's chromium (`make browser-host`;
never a browser of Playwright's own) against a live gateway started as `make run` starts it
(migrate, seed-demo, serve) on a temporary SQLite database.

One module-scoped browser walks the flows in order, as a desk would: sign in; install a
white-label plugin and see the console re-branded (and the sign-in page, by host, before
signing in); place an order and watch the blotter update live, then cancel it; run a backtest
to 100 % and see its equity chart drawn; install a plugin through its generated form and run
its field in GraphiQL; create and revoke a key; verify the audit trail; the markets page.
A screenshot of each main page goes to $ALPHINTRA_ARTEFACTS (default: a pytest temporary
directory)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import PluginVendor, free_port, make_wheel, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXAMPLES = Path(__file__).resolve().parents[1] / "marketplace" / "examples"
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { code } }"""
SUBMIT = """mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id status } }"""
QUOTE = """{ quote(instrument: "AAPL.XNAS") { bid ask } }"""
SECOND_ADMIN = "second.admin@demo.alphintra.local"

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (make browser-host)", allow_module_level=True)


def example_wheel(example: str, package: str) -> tuple[bytes, dict[str, Any]]:
    source = EXAMPLES / example / package
    files = {f"{package}/{p.relative_to(source).as_posix()}": p.read_bytes()
             for p in sorted(source.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
    manifest = json.loads(files[f"{package}/alphintra_manifest.json"])
    dist = manifest["id"].replace(".", "_").replace("-", "_")
    return make_wheel(files, dist, manifest["version"], manifest["id"], manifest["entry_point"]), manifest


class Gateway:
    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.second_key = ""  # a second admin's key
        self.http = httpx.Client(base_url=url, timeout=30)

    def gql(self, query: str, variables: dict[str, Any] | None = None, key: str | None = None
            ) -> dict[str, Any]:
        response = self.http.post("/graphql", json={"query": query, "variables": variables or {}},
                                  headers={"Authorization": f"Bearer {key or self.key}"})
        return response.json()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`make run` in a subprocess: migrate, seed-demo (with a known admin key), serve."""
    from gateway.runtime import build_runtime
    from gateway.settings import Settings

    folder = tmp_path_factory.mktemp("console-gateway")
    port = free_port()
    key = f"alp_{secrets.token_hex(8)}_{secrets.token_hex(24)}"
    env = {"ALPHINTRA_DATABASE_URL": f"sqlite:///{folder / 'alphintra.db'}",
           "ALPHINTRA_DEMO_API_KEY": key, "ALPHINTRA_PORT": str(port),
           "ALPHINTRA_CONSOLE_HOSTS": "127.0.0.1=demo",
           "ALPHINTRA_PLUGIN_SANDBOX": "best-effort", "ALPHINTRA_LOG_LEVEL": "WARNING",
           "PATH": os.environ.get("PATH", "")}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    for step in ("migrate", "seed-demo"):
        done = subprocess.run([sys.executable, "-m", "gateway", step], capture_output=True, timeout=300,
                              env=clean | env)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    # Plugins in the catalogue, as a vendor publishes them and the platform approves them.
    runtime = build_runtime(Settings.from_env({}, database_url=env["ALPHINTRA_DATABASE_URL"]))
    try:
        # A second admin of the demo tenant, made by no one there (four eyes: independent of the
        # first admin, who may not approve what it asked for itself).
        demo = runtime.tenancy.tenant_by_slug("demo")
        second = runtime.tenancy.create_user(demo.id, SECOND_ADMIN, display_name="Second admin",
                                             roles=["admin"], by_platform=True)
        _, second_key = runtime.tenancy.create_api_key(demo.id, second.id, "second admin", by_platform=True)
        vendor = PluginVendor(runtime, "Harbour Capital")
        for example, package in (("harbour_theme", "harbour_theme"), ("news_sentiment", "acme_news")):
            vendor.publish(*example_wheel(example, package), tier="COMMUNITY")
    finally:
        runtime.close()
    log = (folder / "gateway.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=clean | env, stdout=log,
                              stderr=subprocess.STDOUT)
    live = Gateway(f"http://127.0.0.1:{port}", key)
    live.second_key = second_key
    try:
        def ready() -> bool:
            assert server.poll() is None, (folder / "gateway.log").read_text()[-3000:]
            try:
                return live.http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=120, interval=0.3)
        body = live.gql(ACCOUNT, {"input": {"code": "DESK1", "name": "Desk one", "currency": "USD",
                                            "domicile": "US", "clientType": "LEGAL_ENTITY",
                                            "lei": None, "creditLimit": "1000000000",
                                            "equity": "500000000", "assessments": []}})
        assert "errors" not in body, body
        yield live
    finally:
        live.http.close()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        print(f"gateway log: {folder / 'gateway.log'}")


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("ALPHINTRA_ARTEFACTS") or tmp_path_factory.mktemp("console-artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Console:
    """One signed-in tab, recording what the browser refused (CSP) or failed to load."""

    def __init__(self, browser: Any, gateway: Gateway, artefacts: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.gateway, self.artefacts = gateway, artefacts
        self.problems: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: self.problems.append(m.text)
                     if m.type == "error" and "Content Security Policy" in m.text else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("request", lambda r: self.outside.append(r.url)
                     if not r.url.startswith((gateway.url, gateway.url.replace("http", "ws"), "data:"))
                     else None)

    def goto(self, path: str) -> None:
        self.page.goto(self.gateway.url + path)

    def nav(self, title: str) -> None:
        self.page.get_by_role("navigation", name="pages").get_by_role("link", name=title).click()
        self.page.get_by_role("heading", level=1, name=title).wait_for()

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.artefacts / f"{name}.png"), full_page=True)

    def css(self, name: str) -> str:
        script = f"getComputedStyle(document.documentElement).getPropertyValue('{name}')"
        return self.page.evaluate(script).strip()


@pytest.fixture(scope="module")
def console(browser: Any, gateway: Gateway, artefacts: Path) -> Iterator[Console]:
    tab = Console(browser, gateway, artefacts)
    yield tab
    tab.context.close()


def test_sign_in(console: Console, gateway: Gateway):
    page = console.page
    console.goto("/")
    assert page.url.endswith("/console/")
    assert page.get_by_test_id("product-name").inner_text() == "Alphintra"
    page.get_by_label("API key or JWT").fill("not a key")
    page.get_by_role("button", name="Sign in").click()
    assert "API key" in page.get_by_role("alert").inner_text()
    console.shot("sign-in")
    page.get_by_label("API key or JWT").fill(gateway.key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", level=1, name="Trading desk").wait_for()
    assert "admin@demo.alphintra.local" in page.locator(".topbar").inner_text()
    assert gateway.key not in page.url
    assert page.evaluate("sessionStorage.getItem('alphintra.credential')") == gateway.key
    assert page.evaluate("localStorage.getItem('alphintra.credential')") is None


def test_white_label_plugin_rebrands_the_console_live(console: Console, browser: Any, gateway: Gateway,
                                                       artefacts: Path):
    page = console.page
    before = console.css("--primary")
    console.nav("Marketplace")
    page.get_by_label("search plugins").fill("harbour")
    card = page.locator("[data-plugin='harbour.theme']")
    card.get_by_role("button", name="Install").click()
    form = page.get_by_test_id("install-panel")
    form.get_by_label("product_name").fill("Blue Harbour")
    form.get_by_role("button", name="Install").click()
    form.get_by_role("status").wait_for()
    expect(page.locator(".topbar [data-testid=product-name]")).to_have_text("Blue Harbour")
    # The theme's support links (https and mailto only) in the top bar
    expect(page.locator(".topbar .support a")).to_have_count(2)
    assert page.locator(".topbar .support a").first.get_attribute("href") == "https://harbour-capital.example/support"
    assert console.css("--primary") != before
    assert page.title() == "Blue Harbour"
    console.shot("marketplace")
    # Before signing in, on the partner's host (127.0.0.1 is mapped to the demo tenant), the
    # sign-in page wears the same brand, from the public endpoint.
    fresh = browser.new_context()
    try:
        other = fresh.new_page()
        other.goto(gateway.url + "/console/")
        expect(other.get_by_test_id("product-name")).to_have_text("Blue Harbour")
        expect(other.locator(".support a")).to_have_count(2)
        public = httpx.get(gateway.url + "/white-label").json()
        assert public["productName"] == "Blue Harbour" and "pluginId" not in public
        other.screenshot(path=str(artefacts / "sign-in-branded.png"))
    finally:
        fresh.close()


def test_order_ticket_and_live_blotter(console: Console, gateway: Gateway):
    page = console.page
    console.nav("Trading desk")
    ticket = page.get_by_test_id("order-ticket")
    ticket.locator("input[name=account]").fill("DESK1")
    ticket.locator("input[name=quantity]").fill("-5")
    ticket.get_by_role("button", name="Place order").click()
    assert "a positive quantity" in ticket.inner_text()
    # The gateway's own refusal, with its code
    ticket.locator("input[name=quantity]").fill("10")
    ticket.locator("input[name=account]").fill("NO-SUCH-ACCOUNT")
    ticket.get_by_role("button", name="Place order").click()
    ticket.get_by_role("alert", name="order errors").wait_for()
    assert "ACCOUNT_NOT_FOUND" in ticket.get_by_role("alert", name="order errors").inner_text()
    ticket.locator("input[name=account]").fill("DESK1")
    # A price far from the market: denied by the price collar, its rule code shown and in the blotter
    ticket.locator("input[name=limitPrice]").fill("1")
    ticket.get_by_role("button", name="Place order").click()
    expect(ticket.get_by_role("alert", name="order errors")).to_contain_text("COMPLIANCE_PRICE_COLLAR")
    blotter = page.get_by_test_id("blotter")
    denied = blotter.locator("tr[data-status='DENIED']").first
    expect(denied).to_contain_text("COMPLIANCE_PRICE_COLLAR")
    # 5 % under the bid: inside the collar, resting (or queued for the open)
    bid = Decimal(gateway.gql(QUOTE)["data"]["quote"]["bid"])
    limit = str((bid * Decimal("0.95")).quantize(Decimal("0.01")))
    ticket.locator("input[name=limitPrice]").fill(limit)
    ticket.get_by_role("button", name="Place order").click()
    ticket.get_by_role("status").wait_for()
    assert ticket.get_by_role("alert", name="order errors").count() == 0
    # An order placed elsewhere (another desk, the API) appears without a reload: orderUpdates.
    body = gateway.gql(SUBMIT, {"input": {"clientOrderId": "api-live-1", "account": "DESK1", "symbol": "AAPL",
                                          "mic": "XNAS", "side": "BUY", "quantity": "5", "ordType": "LIMIT",
                                          "timeInForce": "GTC", "limitPrice": limit}})
    assert "errors" not in body, body
    row = blotter.locator("tr[data-order='api-live-1']")
    row.wait_for()
    status = row.get_attribute("data-status")
    assert status in {"NEW", "PENDING", "ACCEPTED"}, status
    console.shot("desk")
    row.get_by_role("button", name="cancel api-live-1").click()
    page.wait_for_selector("tr[data-order='api-live-1'][data-status='CANCELED']")


def test_backtest_progress_and_equity_chart(console: Console):
    page = console.page
    console.nav("Strategy lab")
    page.get_by_test_id("strategy-editor").get_by_role("button", name="Create strategy").click()
    page.get_by_test_id("strategies").locator("tbody tr").first.wait_for()
    backtest = page.get_by_test_id("backtest")
    backtest.get_by_role("button", name="Run backtest").click()
    backtest.get_by_role("progressbar").wait_for()
    page.wait_for_selector("[data-testid=backtest] [role=progressbar][aria-valuenow='100']", timeout=180_000)
    page.wait_for_selector("[data-testid=backtest] .chart canvas")
    points = backtest.locator(".chart").get_attribute("data-points")
    assert points is not None and int(points) > 20
    assert backtest.get_by_role("table", name="metrics").locator("tr").count() > 3
    console.shot("strategy-lab")
    console.nav("Jobs")
    row = page.locator("tr[data-status='SUCCEEDED']").first
    row.wait_for()
    assert row.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"
    console.shot("jobs")


def test_install_through_the_generated_form_then_graphiql(console: Console, gateway: Gateway):
    page = console.page
    console.nav("Marketplace")
    page.get_by_label("search plugins").fill("sentiment")
    page.locator("[data-plugin='acme.news-sentiment']").get_by_role("button", name="Install").click()
    form = page.get_by_test_id("install-panel")
    secret = form.get_by_label("api_key")
    assert secret.get_attribute("type") == "password"
    form.get_by_role("button", name="Install").click()  # the required secret is missing
    assert "api_key" in form.inner_text() and "required" in form.inner_text()
    secret.fill("acme-secret-key-123")
    form.get_by_role("button", name="Install").click()
    form.get_by_role("status").wait_for()
    assert "acme-secret-key-123" not in page.content()
    # GraphiQL, in the same tab: the signed-in key goes with every request.
    console.goto("/graphql")
    page.locator(".graphiql-container").wait_for()
    page.locator(".graphiql-query-editor .CodeMirror").wait_for()
    page.evaluate("""document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(
        '{ acmeNewsSentiment(ticker: "AAPL.XNAS") { ticker index articles } }')""")
    page.locator(".graphiql-execute-button").click()
    expect(page.locator(".result-window")).to_contain_text("articles")
    result = page.locator(".result-window").inner_text()
    assert '"ticker": "AAPL.XNAS"' in result and "errors" not in result
    console.shot("graphiql")
    console.goto("/console/desk")
    page.get_by_role("heading", level=1, name="Trading desk").wait_for()


def test_create_and_revoke_a_key(console: Console, gateway: Gateway):
    page = console.page
    console.nav("Administration")
    keys = page.get_by_test_id("api-keys")
    keys.locator("input[name=keyName]").fill("browser-temp")
    keys.get_by_role("button", name="Create key").click()
    new_key = keys.get_by_test_id("new-key").inner_text()
    assert new_key.startswith("alp_")
    viewer = gateway.gql("{ viewer { authenticatedBy } }", key=new_key)["data"]["viewer"]
    assert viewer["authenticatedBy"] == "api_key"
    keys.get_by_role("button", name="Done").click()
    assert new_key not in page.content()  # shown once
    keys.get_by_role("button", name="revoke browser-temp").click()
    page.wait_for_selector("tr[data-key='browser-temp'][data-revoked='yes']")
    refused = gateway.http.post("/graphql", json={"query": "{ viewer { authenticatedBy } }"},
                                headers={"Authorization": f"Bearer {new_key}"})
    assert refused.status_code == 401
    console.shot("admin")


def test_verify_the_audit_trail(console: Console):
    page = console.page
    console.nav("Audit")
    page.get_by_test_id("audit-verify").get_by_role("button", name="Verify").click()
    verdict = page.locator("[data-testid=audit-verify] .verdict")
    verdict.wait_for()
    assert verdict.get_attribute("data-ok") == "true", verdict.inner_text()
    assert "Chain intact" in verdict.inner_text()
    assert re.search(r"records in \d+ lanes", verdict.inner_text())
    records = page.get_by_test_id("audit-records")
    records.locator("tbody tr").first.wait_for()
    # Each record is shown with its lane (a tenant's trail is several chains).
    assert records.locator("thead th").first.inner_text() == "Lane"
    assert records.locator("tbody tr td").first.inner_text().isdigit()
    console.shot("audit")


def test_markets_page(console: Console):
    page = console.page
    console.nav("Markets")
    page.get_by_test_id("follow-the-sun").wait_for()
    page.wait_for_selector("[data-testid=instrument-chart] .chart canvas", timeout=60_000)
    assert int(page.locator("[data-testid=instrument-chart] .chart").get_attribute("data-points") or 0) > 10
    page.get_by_label("search instruments").fill("SAP")
    page.get_by_test_id("instruments").locator("tbody tr").first.wait_for()
    console.shot("markets")
    page.get_by_role("button", name="switch light and dark").click()
    time.sleep(0.2)
    assert page.evaluate("document.documentElement.dataset.mode") == "dark"
    console.shot("markets-dark")


def test_amend_a_resting_order(console: Console):
    page = console.page
    console.nav("Trading desk")
    blotter = page.get_by_test_id("blotter")
    row = blotter.locator(", ".join(f"tr[data-status='{s}']" for s in ("NEW", "PENDING", "ACCEPTED"))).first
    row.wait_for()
    client_id = row.get_attribute("data-order")
    row.get_by_role("button", name=f"amend {client_id}").click()
    form = blotter.get_by_role("form", name=f"amend {client_id}")
    form.locator("input[name=amendQuantity]").fill("7")
    form.get_by_role("button", name="Send amend").click()
    expect(blotter.locator(f"tr[data-order='{client_id}'] td.num").first).to_have_text("7")


def always_open_instrument(gateway: Gateway) -> dict[str, str]:
    """An instrument of the platform's 24/7 venue (ALPX): it fills whatever the day."""
    edges = gateway.gql('{ instruments(mic: "ALPX", first: 5) { edges { node { key symbol mic } } } }'
                        )["data"]["instruments"]["edges"]
    assert edges, "no instrument on ALPX"
    return edges[0]["node"]


def test_position_with_pnl_after_a_fill(console: Console, gateway: Gateway):
    page = console.page
    console.nav("Trading desk")
    instrument = always_open_instrument(gateway)
    ticket = page.get_by_test_id("order-ticket")
    ticket.locator("input[name=account]").fill("DESK1")
    ticket.locator("input[name=symbol]").fill(instrument["symbol"])
    ticket.locator("input[name=mic]").fill(instrument["mic"])
    ticket.locator("select[name=ordType]").select_option("MARKET")
    ticket.locator("select[name=timeInForce]").select_option("IOC")
    ticket.locator("input[name=quantity]").fill("1")
    ticket.get_by_role("button", name="Place order").click()
    expect(ticket.get_by_role("status")).to_contain_text("FILLED")
    positions = page.get_by_test_id("positions")
    row = positions.locator(f"tr[data-position='{instrument['key']}']")
    row.wait_for()
    assert row.locator("td[data-pnl='account']").inner_text().strip() not in ("", "—")
    assert row.locator("td[data-pnl='base']").inner_text().strip().endswith("USD")
    expect(positions.get_by_test_id("account-pnl")).to_contain_text("Account net P&L")
    trades = page.get_by_test_id("trades")
    trades.get_by_role("button", name="Refresh").click()
    trades.locator("tbody tr").first.wait_for()
    assert int(trades.get_by_test_id("trades-total").inner_text().split()[0]) >= 1
    trades.locator("select[name=tradeSide]").select_option("SELL_SHORT")
    expect(trades.get_by_test_id("trades-total")).to_have_text("0 fills")
    trades.locator("select[name=tradeSide]").select_option("BUY")
    expect(trades.locator(f"tr:has-text('{instrument['key']}')").first).to_be_visible()
    console.shot("desk-positions")


def test_kill_switch_cancels_open_orders(console: Console, gateway: Gateway):
    page = console.page
    console.nav("Trading desk")
    bid = Decimal(gateway.gql(QUOTE)["data"]["quote"]["bid"])
    limit = str((bid * Decimal("0.95")).quantize(Decimal("0.01")))
    ids = []
    for n in (1, 2):  # different quantities: not duplicates of each other
        body = gateway.gql(SUBMIT, {"input": {
            "clientOrderId": f"kill-{n}", "account": "DESK1", "symbol": "AAPL", "mic": "XNAS", "side": "BUY",
            "quantity": str(n), "ordType": "LIMIT", "timeInForce": "GTC", "limitPrice": limit}})
        assert "errors" not in body and body["data"]["submitOrder"]["status"] != "DENIED", body
        ids.append(body["data"]["submitOrder"]["id"])
    page.wait_for_selector("tr[data-order='kill-2']")
    controls = page.get_by_test_id("compliance-controls")
    controls.get_by_role("button", name="Engage kill switch").click()
    expect(controls.get_by_role("status")).to_contain_text("Kill switch on")
    expect(controls.locator(".kill")).to_have_attribute("data-kill", "true")
    for n in (1, 2):
        page.wait_for_selector(f"tr[data-order='kill-{n}'][data-status='CANCELED']")
    status_of = "query($id: ID!) { order(id: $id) { status } }"
    statuses = {gateway.gql(status_of, {"id": i})["data"]["order"]["status"] for i in ids}
    assert statuses == {"CANCELED"}
    # While it is on, an order is denied, with its rule code, on the ticket and in the alerts.
    ticket = page.get_by_test_id("order-ticket")
    ticket.locator("input[name=account]").fill("DESK1")
    ticket.locator("input[name=symbol]").fill("AAPL")
    ticket.locator("input[name=mic]").fill("XNAS")
    ticket.locator("select[name=ordType]").select_option("LIMIT")
    ticket.locator("select[name=timeInForce]").select_option("GTC")
    ticket.locator("input[name=limitPrice]").fill(limit)
    ticket.get_by_role("button", name="Place order").click()
    expect(ticket.get_by_role("alert", name="order errors")).to_contain_text("KILL_SWITCH")
    expect(page.get_by_test_id("compliance-alerts")).to_contain_text("KILL_SWITCH")
    console.shot("desk-kill-switch")
    controls.get_by_role("button", name="Release kill switch").click()
    expect(controls.locator(".kill")).to_have_attribute("data-kill", "false")


def test_optimisation_run_charted_and_fx_hedge(console: Console, gateway: Gateway):
    page = console.page
    console.nav("Portfolio & FX")
    found = gateway.gql('{ instruments(mic: "XNAS", first: 5) { edges { node { key } } } }')
    keys = [e["node"]["key"] for e in found["data"]["instruments"]["edges"]]
    panel = page.get_by_test_id("optimisation")
    panel.locator("input[name=instruments]").fill(", ".join(keys))
    panel.locator("input[name=budget]").fill("2")
    panel.locator("fieldset[aria-label=backends] input[type=checkbox]").first.wait_for()
    panel.get_by_role("button", name="Run and compare").click()
    chart = page.get_by_test_id("backend-comparison")
    chart.wait_for(timeout=240_000)
    bars = chart.locator("svg rect[data-series='approximation ratio']")
    assert bars.count() >= 1
    assert any(bars.nth(i).get_attribute("data-value") for i in range(bars.count()))
    console.shot("portfolio-optimisation")
    fx = page.get_by_test_id("fx")
    fx.locator("input[name=portfolioName]").fill("Global book")
    fx.get_by_role("button", name="Create portfolio").click()
    fx.get_by_role("button", name="Record position").click()
    fx.locator("tr[data-currency='EUR']").wait_for()
    fx.get_by_role("button", name="Propose hedge").click()
    fx.get_by_role("table", name="hedge orders").locator("tbody tr").first.wait_for()
    assert "EUR" in fx.get_by_role("table", name="hedge orders").inner_text()
    console.shot("fx")


def test_defi_quote_swap_and_health_factor(console: Console):
    page = console.page
    console.nav("DeFi")
    swap = page.get_by_test_id("defi-swap")
    expect(swap.get_by_label("token in")).to_have_value("WETH", timeout=60_000)
    swap.get_by_role("button", name="Quote").click()
    quote = page.get_by_test_id("defi-quote")
    expect(quote.get_by_label("route", exact=True)).to_contain_text("→", timeout=60_000)
    assert quote.get_by_role("table", name="route hops").locator("tbody tr").count() >= 1
    quote.locator("input[name=slippage]").fill("1")
    expect(quote).to_contain_text("at least")
    quote.get_by_role("button", name="Swap").click()
    expect(swap.get_by_role("status")).to_have_attribute("data-swap", "EXECUTED", timeout=60_000)
    lending = page.get_by_test_id("defi-lending")
    lending.get_by_role("button", name="Send").click()  # supply
    expect(lending.get_by_role("status")).to_contain_text("SUPPLY")
    expect(lending.get_by_test_id("health-factor")).to_contain_text("Health factor")
    console.shot("defi")


def test_report_started_and_its_file_downloaded(console: Console, gateway: Gateway, artefacts: Path):
    import hashlib

    page = console.page
    console.nav("Audit")
    reports = page.get_by_test_id("reports")
    reports.get_by_role("button", name="Start report").click()
    job = reports.locator(".job-status[data-status='SUCCEEDED']")
    job.wait_for(timeout=120_000)
    row = reports.locator("tr[data-file]").first
    row.wait_for()
    filename = row.get_attribute("data-file")
    with page.expect_download() as info:
        row.get_by_role("button", name=f"download {filename}").click()
    download = info.value
    target = artefacts / f"report-{filename}"
    download.save_as(str(target))
    content = target.read_bytes()
    assert content
    files = gateway.gql("{ reportFiles(first: 5) { edges { node { filename sha256 } } } }")
    stored = {e["node"]["sha256"] for e in files["data"]["reportFiles"]["edges"]}
    assert hashlib.sha256(content).hexdigest() in stored
    console.shot("audit-reports")


def test_role_grant_approved_by_a_second_admin(console: Console, browser: Any, gateway: Gateway):
    page = console.page
    second_key = gateway.second_key
    console.nav("Administration")
    users = page.get_by_test_id("users")
    form = users.get_by_role("form", name="create user")
    form.locator("input[type=email]").fill("officer@demo.alphintra.local")
    form.locator("input:not([type=email])").first.fill("Officer")
    form.get_by_role("button", name="Add user").click()
    row = users.locator("tr[data-user='officer@demo.alphintra.local']")
    row.get_by_label("role for officer@demo.alphintra.local").select_option("compliance_officer")
    row.get_by_role("button", name="Request grant").click()
    expect(users.get_by_role("status")).to_contain_text("a second admin must approve")
    grants = page.get_by_test_id("role-grants")
    grants.get_by_role("button", name="Refresh").click()
    pending = grants.locator("tr[data-role='compliance_officer'][data-status='PENDING']")
    expect(pending).to_contain_text("awaiting a second admin")
    # The second admin, in another browser, approves it.
    other = Console(browser, gateway, console.artefacts)
    try:
        other.goto("/console/admin")
        other.page.get_by_label("API key or JWT").fill(second_key)
        other.page.get_by_role("button", name="Sign in").click()
        other.page.get_by_role("heading", level=1, name="Administration").wait_for()
        grants_there = other.page.get_by_test_id("role-grants")
        grants_there.get_by_role("button", name="approve compliance_officer grant").click()
        grants_there.locator("tr[data-role='compliance_officer'][data-status='APPROVED']").wait_for()
        other.shot("admin-role-grant-approved")
        assert other.problems == []
    finally:
        other.context.close()
    roles = gateway.gql("{ users(first: 50) { edges { node { email roles } } } }")["data"]["users"]["edges"]
    officer = next(e["node"] for e in roles if e["node"]["email"] == "officer@demo.alphintra.local")
    assert "compliance_officer" in officer["roles"]
    # Disable, then enable again, from the console.
    row.get_by_role("button", name="disable officer@demo.alphintra.local").click()
    expect(row).to_have_attribute("data-active", "false")
    row.get_by_role("button", name="enable officer@demo.alphintra.local").click()
    expect(row).to_have_attribute("data-active", "true")


def test_markets_venue_calendar_and_keyboard(console: Console):
    page = console.page
    console.nav("Markets")
    venue = page.locator("tr[data-venue='XTKS']")
    venue.focus()
    page.keyboard.press("Enter")
    calendar = page.get_by_test_id("venue-calendar")
    calendar.locator("tbody tr").nth(13).wait_for()
    kinds = calendar.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert "trading" in kinds and "weekend" in kinds
    # Tokyo breaks for lunch
    trading = calendar.locator("tbody tr[data-kind='trading']").first
    assert "\u2013" in trading.locator("td").nth(3).inner_text()  # a break, start to end
    expect(page.get_by_role("list", name="next hand-offs")).to_be_visible()
    console.shot("markets-calendar")
    # Alt+2 opens the second page (the desk), from anywhere
    page.keyboard.press("Alt+2")
    page.get_by_role("heading", level=1, name="Trading desk").wait_for()


def test_nothing_was_refused_or_fetched_from_elsewhere(console: Console, gateway: Gateway):
    """No CSP refusal, no page error; the one request that may leave the machine is the tenant's
    own white-label logo (an https URL the tenant's plugin chose)."""
    assert console.problems == []
    logo = gateway.gql("{ whiteLabel { logoUrl } }")["data"]["whiteLabel"]["logoUrl"]
    assert [url for url in console.outside if url != logo] == []
