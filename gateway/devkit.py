"""The vendor development kit, gateway side (issue 13): a local gateway serving one plugin
project from its source folder.

`alphintra plugin dev DIR` and the pytest plugin's `alphintra_gateway` fixture
(marketplace/pytest_plugin.py, which finds this module by name so that marketplace/ imports no
gateway code) both use `DevGateway`: a gateway on a fresh SQLite file in a temporary folder,
the in-process bus and job workers, the plugin sandbox in best-effort mode (a developer's
machine rarely has every layer), and a dev tenant. `deploy()` builds the source as the vendor
would ship it, with a dev version (`1.0.0+dev.N`; the source is not changed), signs it with a
throwaway vendor key, publishes it PRIVATE for the dev tenant (running the same inspection and
conformance kit a real publication runs, in the sandbox) and installs it, or upgrades the
installation on later builds. `watch()` polls the source's files every second and redeploys
on a change; a failed build keeps the previous version serving.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from gateway.errors import DomainError
from gateway.settings import Settings
from marketplace.devkit import build_dev_wheel, conformance_config, dev_version, load_project, source_files
from marketplace.errors import ToolkitError

log = logging.getLogger(__name__)


class DeployFailed(Exception):
    """A build, publication or installation of the source failed; `reasons` are the checks that
    failed (a conformance kit's, a manifest's), when there are several."""

    def __init__(self, code: str, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reasons = reasons or []


@dataclass(frozen=True)
class Deployment:
    plugin_id: str
    version: str
    seconds: float
    fields: tuple[str, ...]  # root fields the plugin adds to the tenant's schema, "Query.fooBar"


class DevGateway:
    """A local gateway with one plugin project installed for one tenant, for development."""

    def __init__(self, source: Path, *, host: str = "127.0.0.1", port: int = 0, tenant: str = "dev",
                 config: Mapping[str, Any] | None = None, state_dir: Path | None = None,
                 base_settings: Settings | None = None) -> None:
        self.source = Path(source).resolve()
        self.host = host
        self.port = port
        self.tenant_slug = tenant
        self.config = dict(config) if config is not None else None  # None: the manifest's test config
        self._own_state = state_dir is None
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="alphintra-dev-"))
        self.base_settings = base_settings or Settings()
        self.builds = 0
        self.installed: Deployment | None = None
        self.url = ""  # the GraphQL endpoint, once started
        self.key = ""  # the dev tenant's admin API key, once started
        self.runtime: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._signing_key = ""
        self._tenant_id = ""
        self._admin_id = ""

    # Life cycle.

    def settings(self) -> Settings:
        """The base settings (ALPHINTRA_* for the CLI) with everything that must be local forced."""
        return self.base_settings.with_(
            database_url=f"sqlite:///{self.state_dir / 'alphintra.db'}", redis_url=None,
            embedded_worker="on", host=self.host, port=self.port,
            jwt_secret=self.base_settings.jwt_secret or secrets.token_urlsafe(48),
            secret_key=base64.b64encode(os.urandom(32)).decode(),
            secret_key_file=str(self.state_dir / "secret.key"), warm_on_start=False,
            plugin_sandbox="best-effort")

    def start(self) -> DevGateway:
        """Migrate a fresh database, serve it, and make the dev tenant and its vendor key."""
        import uvicorn

        from gateway.app import create_app
        from gateway.cli import migrate_database
        from gateway.runtime import build_runtime
        from marketplace.signing import generate_key

        self.state_dir.mkdir(parents=True, exist_ok=True)
        settings = self.settings()
        migrate_database(settings)
        self.runtime = build_runtime(settings)
        app = create_app(runtime=self.runtime)
        self._server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_config=None,
                                                     log_level="warning", ws="websockets-sansio",
                                                     lifespan="on"))
        self._thread = threading.Thread(target=self._serve, name="alphintra-dev-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise DeployFailed("SERVER_NOT_STARTED", f"the gateway could not listen on {self.host}:"
                                                         f"{self.port} (in use?)")
            time.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}/graphql"
        tenant, admin, (_, key) = self.runtime.tenancy.onboard(
            self.tenant_slug, f"Plugin development ({self.tenant_slug})", f"dev@{self.tenant_slug}.example")
        self._tenant_id, self._admin_id, self.key = tenant.id, admin.id, key
        self._signing_key, public_key = generate_key()  # throwaway: this database dies with the process
        self.runtime.marketplace_publishing.register_vendor_key(tenant.id, admin.id, public_key, "Dev vendor")
        return self

    def _serve(self) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind: start() says so
            self._server.run()

    def close(self) -> None:
        """Stop serving (the plugin's workers stop with the app) and forget the database."""
        if self._server is not None and self._thread is not None and self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout=30)
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> DevGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Deploying the source.

    def deploy(self) -> Deployment:
        """Build, sign, publish (PRIVATE) and install or upgrade the source; DeployFailed says why
        not (and the previous deployment keeps serving)."""
        from marketplace.manifest import parse_manifest
        from marketplace.signing import sign
        from marketplace.wheel import read_wheel

        started = time.perf_counter()
        self.builds += 1  # even on failure: a version once published is never reused
        try:
            version = dev_version(load_project(self.source).manifest.version, self.builds)
            with tempfile.TemporaryDirectory(prefix="alphintra-dev-wheel-") as out:
                wheel_path, _ = build_dev_wheel(self.source, version, Path(out))
                wheel = wheel_path.read_bytes()
            contents = read_wheel(wheel)
            manifest = parse_manifest(contents.manifest_data)
            signature = sign(contents, manifest, self._signing_key)
            self.runtime.marketplace_publishing.publish(self._tenant_id, self._admin_id, wheel, signature,
                                                        "PRIVATE")
            config = self.config if self.config is not None else conformance_config(manifest)
            marketplace = self.runtime.marketplace
            if self.installed is not None and self.installed.plugin_id == manifest.id:
                marketplace.upgrade(self._tenant_id, self._admin_id, manifest.id, version, config)
            else:
                if self.installed is not None:  # the manifest's id changed: swap the plugins
                    marketplace.uninstall(self._tenant_id, self._admin_id, self.installed.plugin_id)
                    self.installed = None
                marketplace.install(self._tenant_id, self._admin_id, manifest.id, version, config)
        except (DomainError, ToolkitError) as exc:
            details = getattr(exc, "details", {}) or {}
            reasons = [str(r) for r in details.get("reasons", [])] or [
                f"{e.get('path')}: {e.get('message')}" for e in details.get("errors", [])]
            message = exc.message.removeprefix(f"{exc.code}: ")
            raise DeployFailed(exc.code, message, [r for r in reasons if r != message]) from None
        self.installed = Deployment(manifest.id, version, time.perf_counter() - started,
                                    self._fields(manifest.id))
        return self.installed

    def _fields(self, plugin_id: str) -> tuple[str, ...]:
        view = self.runtime.marketplace.view(self._tenant_id)
        active = view.by_id.get(plugin_id) if view is not None else None
        if active is None or active.schema is None:
            return ()
        return tuple(f"{root.capitalize()}.{name}" for root, names in sorted(active.schema.roots.items())
                     for name in names)

    def watch(self, stop: threading.Event, on_change: Callable[[list[str]], None],
              on_result: Callable[[Deployment | DeployFailed], None], interval_s: float = 1.0) -> None:
        """Until `stop` is set: poll the source's files every `interval_s`; on a change, redeploy and
        report. A change made during a build triggers another build."""
        seen = source_files(self.source)
        while not stop.wait(interval_s):
            now = source_files(self.source)
            if now == seen:
                continue
            changed = sorted(p for p in now.keys() | seen.keys() if now.get(p) != seen.get(p))
            seen = now
            on_change(changed)
            try:
                on_result(self.deploy())
            except DeployFailed as exc:
                on_result(exc)
            except Exception as exc:  # a bug of the plugin or ours must not end the dev loop
                log.exception("deploying the plugin failed")
                on_result(DeployFailed("DEPLOY_FAILED", f"{type(exc).__name__}: {exc}"))

    # Calling it.

    def query(self, document: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST a GraphQL document as the dev tenant's admin; the JSON body (data and errors)."""
        import httpx

        response = httpx.post(self.url, json={"query": document, "variables": dict(variables or {})},
                              headers={"authorization": f"Bearer {self.key}"}, timeout=60)
        return response.json()


def start_dev_gateway(source: Path, *, config: Mapping[str, Any] | None = None, tenant: str = "dev",
                      port: int = 0, state_dir: Path | None = None) -> DevGateway:
    """A started gateway with the source deployed (the pytest plugin's `alphintra_gateway`);
    DeployFailed when the first deployment fails."""
    gateway = DevGateway(source, port=port, tenant=tenant, config=config, state_dir=state_dir,
                         base_settings=Settings.from_env())
    gateway.start()
    try:
        gateway.deploy()
    except BaseException:
        gateway.close()
        raise
    return gateway


# `alphintra plugin dev`, added to the toolkit's `plugin` group by gateway/cli.py.

def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def _say_result(result: Deployment | DeployFailed, previous: Deployment | None) -> None:
    if isinstance(result, Deployment):
        verb = "installed" if previous is None or previous.plugin_id != result.plugin_id else "reloaded"
        click.echo(f"[{_stamp()}] {verb} {result.plugin_id} {result.version} in {result.seconds:.1f} s")
        if result.fields:
            click.echo(f"           fields: {', '.join(result.fields)}")
        return
    click.echo(f"[{_stamp()}] build failed: {result.code}: {result.message}")
    for reason in result.reasons[:20]:
        click.echo(f"           - {reason}")
    if previous is not None:
        click.echo(f"           still serving {previous.plugin_id} {previous.version}")


@click.command("dev")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", default=8000, show_default=True, type=int, help="0 picks a free port")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--tenant", "tenant_slug", default="dev", show_default=True, help="the dev tenant's slug")
@click.option("--config", "config_json", default=None,
              help="the installation's configuration, JSON (default: the manifest's conformance.config)")
@click.option("--interval", "interval_s", default=1.0, show_default=True, type=float,
              help="seconds between polls of the source's files")
@click.option("--verbose", "-v", is_flag=True, help="the gateway's own log lines (INFO)")
@click.pass_obj
def dev(settings: Settings | None, source: Path, port: int, host: str, tenant_slug: str,
        config_json: str | None, interval_s: float, verbose: bool) -> None:
    """Serve the plugin project at SOURCE on a local gateway (a temporary SQLite database) for a
    dev tenant, and rebuild and reinstall it whenever a file in SOURCE changes."""
    from gateway.observability import logs

    logs.configure("INFO" if verbose else "WARNING", json=False)
    config = None
    if config_json is not None:
        try:
            config = json.loads(config_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--config") from None
        if not isinstance(config, dict):
            raise click.BadParameter("a JSON object", param_hint="--config")
    try:
        project = load_project(source)
    except ToolkitError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    gateway = DevGateway(source, host=host, port=port, tenant=tenant_slug, config=config,
                         base_settings=settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"starting a dev gateway for {project.manifest.id} ({project.manifest.category}) "
               f"from {gateway.source}")
    try:
        try:
            gateway.start()
        except (DeployFailed, DomainError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"  GraphQL:  {gateway.url}")
        click.echo(f"  tenant:   {tenant_slug}")
        click.echo(f"  API key:  {gateway.key}")
        click.echo("  (send it as `Authorization: Bearer <key>`; the database lives until you stop)")
        try:
            result: Deployment | DeployFailed = gateway.deploy()
        except DeployFailed as exc:
            result = exc
        _say_result(result, None)
        click.echo(f"watching {gateway.source} for changes (every {interval_s:g} s); Ctrl-C stops")

        def changed(paths: list[str]) -> None:
            shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            click.echo(f"[{_stamp()}] changed: {shown}; rebuilding")

        previous = {"deployment": gateway.installed}

        def report(outcome: Deployment | DeployFailed) -> None:
            _say_result(outcome, previous["deployment"])
            previous["deployment"] = gateway.installed

        gateway.watch(stop, changed, report, interval_s)
    finally:
        click.echo("stopping the dev gateway")
        gateway.close()
