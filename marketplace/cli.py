"""`alphintra plugin …`: what a vendor runs to make, test, build, sign and publish a plugin.

    alphintra plugin new my-plugin --category analytics --id acme.vol-stats
    alphintra plugin test my-plugin                   # offline: manifest, hooks, conformance kit
    alphintra plugin dev my-plugin                    # a local gateway, reinstalling on each save
    alphintra plugin keygen --out vendor.key          # prints the public key
    alphintra plugin register-key --url URL --api-key KEY --public-key PUB
    alphintra plugin build marketplace/examples/news_sentiment --out-dir dist
    alphintra plugin sign dist/acme_news_sentiment-1.0.0-py3-none-any.whl --key vendor.key
    alphintra plugin publish dist/acme_news_sentiment-1.0.0-py3-none-any.whl \
        --signature-file dist/acme_news_sentiment-1.0.0-py3-none-any.whl.sig --url URL --api-key KEY

`register-key` and `publish` go through GraphQL over HTTP (the same mutations a client calls);
the others work offline. Heavy imports happen inside the commands. `dev` needs the gateway, so
gateway/cli.py adds it to this group (gateway/devkit.py): this module imports no gateway code.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import click

from marketplace.errors import ToolkitError


def _fail(exc: ToolkitError) -> click.ClickException:
    return click.ClickException(f"{exc.code}: {exc.message}")


def _graphql(url: str, api_key: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # its per-request INFO line is noise here
    endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/graphql") else "/graphql")
    try:
        response = httpx.post(endpoint, json={"query": query, "variables": variables},
                              headers={"authorization": f"Bearer {api_key}"}, timeout=120)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {endpoint}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        raise click.ClickException(f"HTTP {response.status_code}: {response.text[:500]}") from None
    if body.get("errors"):
        first = body["errors"][0]
        code = first.get("extensions", {}).get("code", f"HTTP {response.status_code}")
        extensions = first.get("extensions", {})
        reasons = extensions.get("reasons") or [f"{e.get('path')}: {e.get('message')}"
                                                for e in extensions.get("errors", [])]
        text = f"{code}: {first.get('message')}"
        if reasons:
            text += "\n  " + "\n  ".join(str(r) for r in reasons)
        raise click.ClickException(text)
    return body["data"]


@click.group()
def plugin() -> None:
    """Vendors: scaffold, test and run plugins; make a signing key, build, sign and publish them."""


@plugin.command("new")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--category", required=True, type=click.Choice(
    ["data-source", "exchange", "white-label", "analytics", "compliance", "llm"]),
    help="the template: which hooks the plugin implements")
@click.option("--id", "plugin_id", required=True, help="the plugin id, vendor first: acme.vol-stats")
@click.option("--name", default=None, help="display name (default: from the id)")
@click.option("--vendor", default=None, help="vendor's display name (default: from the id)")
def new(directory: Path, category: str, plugin_id: str, name: str | None, vendor: str | None) -> None:
    """Scaffold a plugin project in DIRECTORY (new or empty) from a category template."""
    from marketplace.devkit import scaffold

    try:
        written = scaffold(directory, category, plugin_id, name=name, vendor=vendor)
    except ToolkitError as exc:
        raise _fail(exc) from None
    click.echo(f"created {category} plugin {plugin_id} in {directory}:")
    for path in written:
        click.echo(f"  {path.relative_to(directory)}")
    click.echo(f"next:\n  alphintra plugin test {directory}\n  alphintra plugin dev {directory}")


@plugin.command("test")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--timeout", "timeout_s", default=120.0, show_default=True, type=float,
              help="seconds the plugin's import and hooks may take")
@click.option("--verbose", "-v", is_flag=True, help="also show what the plugin printed")
def check_project(directory: Path, timeout_s: float, verbose: bool) -> None:
    """Check the plugin project in DIRECTORY offline: its manifest, its hooks against the manifest
    and its category's conformance kit, in a separate Python process. Exit 1 on any failure."""
    from marketplace.devkit import describe_report, run_kit_in_subprocess
    from marketplace.manifest import ManifestInvalid

    try:
        report, output = run_kit_in_subprocess(directory, timeout_s=timeout_s)
    except ManifestInvalid as exc:
        click.echo(f"{exc.code}: the manifest is invalid", err=True)
        for problem in exc.details.get("errors", []):
            click.echo(f"  FAIL  {problem['path']}: {problem['message']}", err=True)
        raise SystemExit(1) from None
    except ToolkitError as exc:
        raise _fail(exc) from None
    for line in describe_report(report):
        click.echo(line)
    if output.strip() and (verbose or not report.ok):
        click.echo("plugin output:\n" + output.rstrip(), err=True)
    if not report.ok:
        raise SystemExit(1)


@plugin.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="file for the private key (created with mode 0600)")
def keygen(out: Path) -> None:
    """Make an Ed25519 key pair; print the public key to register with registerVendorKey."""
    from marketplace.signing import generate_key

    if out.exists():
        raise click.ClickException(f"{out} exists; refusing to overwrite a private key")
    private, public = generate_key()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(private + "\n")
    click.echo(public)


@plugin.command("build")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out-dir", default="dist", type=click.Path(file_okay=False, path_type=Path))
def build(source: Path, out_dir: Path) -> None:
    """Build the wheel of the plugin project at SOURCE (offline); print its path."""
    from marketplace.build import build_wheel
    from marketplace.manifest import parse_manifest
    from marketplace.wheel import check_entry_point, read_wheel

    try:
        wheel = build_wheel(source, out_dir)
        contents = read_wheel(wheel.read_bytes())
        manifest = parse_manifest(contents.manifest_data)
        check_entry_point(contents, manifest.id, manifest.entry_point)
    except ToolkitError as exc:
        raise _fail(exc) from None
    click.echo(str(wheel))


@plugin.command("sign")
@click.argument("wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="signature file (default: WHEEL.sig)")
def sign(wheel: Path, key_file: Path, out: Path | None) -> None:
    """Sign WHEEL's manifest and files with the private key; write and print the signature."""
    from marketplace import signing
    from marketplace.manifest import parse_manifest
    from marketplace.wheel import read_wheel

    data = wheel.read_bytes()
    try:
        contents = read_wheel(data)
        manifest = parse_manifest(contents.manifest_data)
        signature = signing.sign(contents, manifest, key_file.read_text())
    except ToolkitError as exc:
        raise _fail(exc) from None
    target = out or wheel.with_name(wheel.name + ".sig")
    target.write_text(signature + "\n")
    click.echo(signature)


@plugin.command("register-key")
@click.option("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8000")
@click.option("--api-key", required=True, envvar="ALPHINTRA_API_KEY")
@click.option("--public-key", required=True)
@click.option("--name", default=None, help="the vendor's display name")
def register_key(url: str, api_key: str, public_key: str, name: str | None) -> None:
    """Register (or replace) the vendor's public key."""
    data = _graphql(url, api_key, "mutation($k: String!, $n: String) { registerVendorKey("
                                  "publicKey: $k, name: $n) { id name publicKey } }",
                    {"k": public_key, "n": name})
    click.echo(json.dumps(data["registerVendorKey"]))


@plugin.command("publish")
@click.argument("wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--signature", default=None, help="the signature (or use --signature-file)")
@click.option("--signature-file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8000")
@click.option("--api-key", required=True, envvar="ALPHINTRA_API_KEY")
@click.option("--tier", default="COMMUNITY", type=click.Choice(["PRIVATE", "COMMUNITY", "CERTIFIED"]))
def publish(wheel: Path, signature: str | None, signature_file: Path | None, url: str, api_key: str,
            tier: str) -> None:
    """Publish WHEEL with its signature through GraphQL; print the stored version."""
    if signature_file is not None:
        signature = signature_file.read_text().strip()
    if not signature:
        raise click.UsageError("give --signature or --signature-file (from `alphintra plugin sign`)")
    data = _graphql(url, api_key,
                    "mutation($w: String!, $s: String, $t: PluginTier!) { publishPluginVersion("
                    "wheelBase64: $w, signature: $s, tier: $t) { id pluginId version status tier "
                    "created wheelSha256 } }",
                    {"w": base64.b64encode(wheel.read_bytes()).decode(), "s": signature, "t": tier})
    click.echo(json.dumps(data["publishPluginVersion"]))
