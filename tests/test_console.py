"""The web console as the gateway serves it: the page, its assets, GraphiQL from the gateway's own
assets, the security headers, the public white-label endpoint, and a build that matches its
sources (docs/console.md). The console's behaviour in a browser: tests/test_console_browser.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.http import console
from tests.support import onboard

ASSET = re.compile(r'(?:src|href)="(/console/assets/[^"]+)"')
ANY_URL = re.compile(r'(?:src|href)="([^"]+)"')


def test_the_shipped_build_matches_its_sources():
    """CI's stale-build check: run `make frontend` after changing anything under frontend/."""
    if not console.FRONTEND.is_dir():
        pytest.skip("no frontend/ sources beside this installation")
    recorded = console.manifest()
    sha, files = console.source_hash()
    assert recorded["files"] == files, "the console's source files changed: run `make frontend`"
    assert recorded["sources"] == sha, "the shipped console is older than frontend/: run `make frontend`"


def test_the_source_hash_sees_every_change(tmp_path: Path):
    for name in ("index.html", "package-lock.json", "src/main.tsx", "src/lib/a.ts", "src/lib/a.test.ts"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    before, files = console.source_hash(tmp_path)
    assert files == ["index.html", "package-lock.json", "src/lib/a.ts", "src/main.tsx"]
    (tmp_path / "src/lib/a.test.ts").write_text("a test changes no build")
    assert console.source_hash(tmp_path)[0] == before
    (tmp_path / "package-lock.json").write_text("another lock")
    changed = console.source_hash(tmp_path)[0]
    assert changed != before
    (tmp_path / "src/lib/b.ts").write_text("")
    assert console.source_hash(tmp_path)[0] != changed


def _security_headers(response) -> None:
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["default-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_root_and_console_redirect_to_the_console(gql):
    for path in ("/", "/console"):
        response = gql.http.get(path, follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == "/console/"


@pytest.mark.parametrize("path", ["/console/", "/console/desk", "/console/marketplace/anything"])
def test_every_console_path_answers_the_page_with_security_headers(gql, path):
    response = gql.http.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert '<div id="root">' in response.text
    assert response.headers["cache-control"] == "no-cache"
    _security_headers(response)


def test_the_pages_load_only_their_own_assets_with_long_cache(gql):
    for page in ("/console/", "/graphql"):
        html = gql.http.get(page, headers={"accept": "text/html"}).text
        urls = ANY_URL.findall(html)
        assets = ASSET.findall(html)
        assert assets and urls == assets, f"{page} refers to something outside /console/assets: {urls}"
        for url in assets:
            response = gql.http.get(url)
            assert response.status_code == 200, url
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            kind = "text/css" if url.endswith(".css") else "javascript"
            assert kind in response.headers["content-type"], (url, response.headers["content-type"])
            assert len(response.content) > 100


def test_no_asset_refers_to_another_origin():
    """Nothing at run time leaves the machine: no stylesheet imports a remote font or image, no
    script is loaded from elsewhere (a string naming a URL in a library's message is no fetch)."""
    for css in (console.DIST / "assets").glob("*.css"):
        for url in re.findall(r"url\(([^)]*)\)", css.read_text()):
            url = url.strip("'\"")
            assert url.startswith(("data:", "/console/assets/", "#")) or "://" not in url, (css.name, url)
        assert "@import" not in css.read_text() or "http" not in css.read_text().split("@import")[1][:80]
    for js in (console.DIST / "assets").glob("*.js"):
        text = js.read_text()
        assert not re.search(r"""import\s*\(?\s*["']https?://""", text), js.name


def test_unknown_and_escaping_asset_paths_are_not_found(gql):
    assert gql.http.get("/console/assets/nope.js").status_code == 404
    assert gql.http.get("/console/assets/..%2Fmanifest.json").status_code == 404
    assert gql.http.get("/console/assets/%2E%2E/index.html").status_code == 404


def test_graphiql_is_bundled_and_has_the_security_headers(gql):
    response = gql.http.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200 and '<div id="graphiql">' in response.text
    assert "cdn" not in response.text.lower() and "unpkg" not in response.text.lower()
    _security_headers(response)
    # a program's GET is still GraphQL
    assert gql.http.get("/graphql", params={"query": "{ __typename }"}).status_code == 401


def test_public_white_label_reveals_the_theme_and_nothing_else(gql):
    response = gql.http.get("/white-label")
    assert response.status_code == 200
    assert set(response.json()) == {"name", "productName", "primaryColour", "secondaryColour",
                                    "backgroundColour", "textColour", "logoUrl", "supportLinks"}
    assert response.json()["productName"] == "Alphintra"
    assert response.json()["supportLinks"] == []


def test_white_label_by_host(runtime, monkeypatch):
    from plugins.sdk import SupportLink, Theme

    tenant = onboard(runtime)
    branded = Theme(name="harbour", product_name="Blue Harbour", primary_colour="#003366",
                    secondary_colour="#ffcc00", logo_url="https://harbour.example/logo.svg",
                    support_links=(SupportLink("Help desk", "https://harbour.example/help"),
                                   SupportLink("Script", "javascript:alert(1)"),
                                   SupportLink(" ", "https://harbour.example/blank"),
                                   SupportLink("Mail us", "mailto:desk@harbour.example")))
    asked: list[str] = []

    def white_label(tenant_id: str):
        asked.append(tenant_id)
        return branded, "harbour.theme"

    monkeypatch.setattr(runtime.marketplace, "white_label", white_label)
    hosts = console.parse_hosts(("Partner.Example.com=" + tenant.slug, "ghost.example=no-such-tenant", "bad"))
    assert hosts == {"partner.example.com": tenant.slug, "ghost.example": "no-such-tenant"}
    app = Starlette(routes=[Route("/white-label", console.white_label_route(runtime, hosts))])
    with TestClient(app) as client:
        partner = client.get("/white-label", headers={"host": "partner.example.com:8443"}).json()
        assert partner == {"name": "harbour", "productName": "Blue Harbour", "primaryColour": "#003366",
                           "secondaryColour": "#ffcc00", "backgroundColour": "#ffffff",
                           "textColour": "#111111", "logoUrl": "https://harbour.example/logo.svg",
                           "supportLinks": [{"label": "Help desk", "url": "https://harbour.example/help"},
                                            {"label": "Mail us", "url": "mailto:desk@harbour.example"}]}
        assert asked == [tenant.id]
        for host in ("ghost.example", "other.example"):
            assert client.get("/white-label", headers={"host": host}).json()["productName"] == "Alphintra"
        assert asked == [tenant.id]


def test_support_links_cross_the_plugin_wire_and_only_safe_ones_are_shown():
    """A theme's support links travel from a sandboxed plugin as SDK values; a theme without
    them (a plugin written before they existed) still decodes, with none."""
    from plugins import wire
    from plugins.sdk import SupportLink, Theme

    theme = Theme(name="t", product_name="T", primary_colour="#000", secondary_colour="#fff",
                  support_links=(SupportLink("Help", "https://t.example/help"),
                                 SupportLink("Bad", "http://t.example/plain"),
                                 SupportLink("Bad too", "https://t.example/a b")))
    back = wire.unpackb(wire.packb(theme))
    assert back == theme and isinstance(back.support_links, tuple)
    assert [link.url for link in back.usable_support_links()] == ["https://t.example/help"]
    plain = Theme(name="t", product_name="T", primary_colour="#000", secondary_colour="#fff")
    assert wire.unpackb(wire.packb(plain)).usable_support_links() == []
    many = Theme(name="t", product_name="T", primary_colour="#000", secondary_colour="#fff",
                 support_links=tuple(SupportLink(f"L{i}", f"https://t.example/{i}") for i in range(12)))
    assert len(many.usable_support_links()) == 8
