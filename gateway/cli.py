"""`alphintra`: serve, worker, migrate, config, tenant create, apikey create, role grant,
seed-demo, chain serve, venue serve."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from sqlmodel import select

from gateway.db import ALL_TENANTS, utcnow
from gateway.devkit import dev as plugin_dev
from gateway.errors import DomainError
from gateway.observability import logs
from gateway.settings import Settings, SettingsError, describe, markdown_reference
from marketplace.cli import plugin as plugin_commands

ROOT = Path(__file__).resolve().parent.parent


def _alembic_config(settings: Settings):  # noqa: ANN202 - alembic is imported lazily
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = settings.database_url
    config.attributes["configure_logging"] = False
    return config


def migrate_database(settings: Settings, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(_alembic_config(settings), revision)


def downgrade_database(settings: Settings, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(settings), revision)


class _Main(click.Group):
    """A setting that cannot be used is one line on stderr and exit code 2, never a traceback:
    a bad value (read below) or a missing secret key (found while building the runtime)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            click.echo(f"alphintra: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Main)
@click.version_option(package_name="alphintra", prog_name="alphintra")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Alphintra gateway. Settings come from ALPHINTRA_* environment variables (`alphintra
    config` lists them)."""
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_json)
    ctx.obj = settings


def _runtime(settings: Settings):  # noqa: ANN202 - imported lazily to keep the CLI light
    from gateway.runtime import build_runtime

    return build_runtime(settings)


@main.command()
@click.option("--host", default=None, help="defaults to ALPHINTRA_HOST (127.0.0.1)")
@click.option("--port", default=None, type=int, help="defaults to ALPHINTRA_PORT (8000)")
@click.option("--workers", default=None, type=click.IntRange(min=1), envvar="ALPHINTRA_WORKERS",
              show_envvar=True, help="worker processes; default: one per core in production "
              "with ALPHINTRA_REDIS_URL, else one")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve GraphQL at /graphql (worker threads inside unless ALPHINTRA_REDIS_URL is set)."""
    import uvicorn

    _require_secret_key(settings)
    _require_shared_chain(settings)
    _require_shared_venue(settings)
    count = workers or default_workers(settings)
    if count > 1 and not settings.redis_url:
        raise SettingsError(
            f"--workers {count} needs ALPHINTRA_REDIS_URL: the in-process bus cannot carry events, "
            f"revoked credentials or cache invalidations between worker processes (set it, or "
            f"serve one worker)")
    options: dict[str, Any] = {"host": host or settings.host, "port": port or settings.port,
                               "log_config": None, "ws": "websockets-sansio",
                               "ws_per_message_deflate": settings.websocket_compression}
    if count == 1:
        from gateway.app import create_app

        uvicorn.run(create_app(settings), **options)
        return
    with _metrics_directory():
        # Spawned (never forked) workers, each building its own app from the environment.
        uvicorn.run("gateway.app:app_from_env", factory=True, workers=count, **options)


def default_workers(settings: Settings) -> int:
    """One per core in production beside Redis (workers share state only through it), else one."""
    if settings.environment == "production" and settings.redis_url:
        return os.cpu_count() or 1
    return 1


@contextlib.contextmanager
def _metrics_directory() -> Iterator[None]:
    """A fresh private directory for the workers' metric files (prometheus_client's
    multi-process mode), set before they start and removed when they have stopped."""
    from gateway.observability.metrics import MULTIPROC_DIR_ENV

    path = tempfile.mkdtemp(prefix="alphintra-metrics-")  # mode 0700
    previous = os.environ.get(MULTIPROC_DIR_ENV)
    os.environ[MULTIPROC_DIR_ENV] = path
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
        else:
            os.environ[MULTIPROC_DIR_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


@main.command()
@click.option("--region", "regions", multiple=True, help="queue(s) to consume; default all")
@click.option("--threads", default=None, type=int, help="worker threads (ALPHINTRA_WORKER_THREADS)")
@click.pass_obj
def worker(settings: Settings, regions: tuple[str, ...], threads: int | None) -> None:
    """Run jobs from the Redis queues of the given regions until SIGTERM or SIGINT."""
    from gateway.jobs.broker import start_worker

    if not settings.redis_url:
        raise click.UsageError("a separate worker needs ALPHINTRA_REDIS_URL; without it the "
                               "gateway runs its own worker threads")
    _require_secret_key(settings)
    _require_shared_chain(settings)
    unknown = set(regions) - set(settings.regions)
    if unknown:
        raise click.BadParameter(f"unknown region(s) {sorted(unknown)}; one of {settings.regions}")
    runtime = _runtime(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = start_worker(runtime.broker, regions or settings.regions,
                          threads or settings.worker_threads)
    # Workers deliver the outbox too (their jobs' events and retries) and reap dead workers'
    # jobs: with every gateway down, work still moves.
    runtime.start_delivery()
    click.echo(f"worker consuming {', '.join(regions or settings.regions)}", err=True)
    stop.wait()
    worker.stop(timeout=10_000)
    runtime.stop_delivery()
    runtime.close()


def _require_secret_key(settings: Settings) -> None:
    # Refuse before anything starts (the runtime would refuse too, later and less plainly).
    problem = settings.secret_key_problem()
    if problem:
        raise SettingsError(problem)


def _require_shared_chain(settings: Settings) -> None:
    problem = settings.chain_problem()
    if problem:
        raise SettingsError(problem)


def _require_shared_venue(settings: Settings) -> None:
    # Processes that send orders: beside Redis, books per process would never cross.
    problem = settings.venue_problem()
    if problem:
        raise SettingsError(problem)


@main.command()
@click.option("--markdown", is_flag=True, help="print the settings reference (docs/settings.md)")
@click.pass_obj
def config(settings: Settings, markdown: bool) -> None:
    """Print every setting: its value (secrets masked), where it came from, and its help."""
    if markdown:
        click.echo(markdown_reference(), nl=False)
        return
    for row in describe(settings):
        click.echo(f"{row.env}={row.value}  [{row.source}]")
        click.echo(f"    {row.help}")


@main.command()
@click.option("--revision", default="head")
@click.pass_obj
def migrate(settings: Settings, revision: str) -> None:
    """Apply Alembic migrations to ALPHINTRA_DATABASE_URL."""
    migrate_database(settings, revision)
    click.echo(f"database at {revision}", err=True)


@main.group()
def tenant() -> None:
    """Tenants."""


@tenant.command("create")
@click.option("--slug", required=True)
@click.option("--name", required=True)
@click.option("--admin-email", required=True)
@click.option("--base-currency", default="USD")
@click.option("--home-region", default="americas")
@click.pass_obj
def tenant_create(settings: Settings, slug: str, name: str, admin_email: str,
                  base_currency: str, home_region: str) -> None:
    """Create a tenant with an admin user; prints the admin's API key once."""
    runtime = _runtime(settings)
    try:
        tenant_row, admin, (_, key) = runtime.tenancy.onboard(
            slug, name, admin_email, base_currency=base_currency, home_region=home_region)
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo(f"tenant {tenant_row.slug} ({tenant_row.id}), admin {admin.email}")
    click.echo(f"admin API key (shown once): {key}")


@main.group()
def user() -> None:
    """Users."""


@user.command("create")
@click.option("--tenant", "slug", required=True)
@click.option("--email", required=True)
@click.option("--name", "display_name", default="")
@click.option("--role", "roles", multiple=True,
              help="repeatable: admin, trader, compliance_officer, viewer, vendor, router")
@click.pass_obj
def user_create(settings: Settings, slug: str, email: str, display_name: str,
                roles: tuple[str, ...]) -> None:
    """Create a user as the platform (it grants compliance_officer and vendor too)."""
    runtime = _runtime(settings)
    try:
        tenant_row = runtime.tenancy.tenant_by_slug(slug)
        made = runtime.tenancy.create_user(tenant_row.id, email, display_name=display_name,
                                           roles=list(roles), actor=None, by_platform=True)
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo(f"user {made.email} ({made.id})")


@main.group()
def apikey() -> None:
    """API keys."""


@apikey.command("create")
@click.option("--tenant", "slug", required=True)
@click.option("--email", required=True, help="the user the key acts as")
@click.option("--name", default="cli")
@click.option("--expires-in-days", type=int, default=None)
@click.pass_obj
def apikey_create(settings: Settings, slug: str, email: str, name: str,
                  expires_in_days: int | None) -> None:
    """Create an API key for a user; prints it once."""
    from gateway.tenancy.models import User

    runtime = _runtime(settings)
    try:
        tenant_row = runtime.tenancy.tenant_by_slug(slug)
        with runtime.db.tenant_session(tenant_row.id) as session:
            user = session.exec(select(User).where(User.email == email.lower())).first()
        if user is None:
            raise click.ClickException(f"USER_NOT_FOUND: no user {email} in {slug}")
        expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
        # The operator is the platform: it may make a key for any user, a platform admin too.
        _, key = runtime.tenancy.create_api_key(tenant_row.id, user.id, name, expires_at=expires,
                                                by_platform=True)
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo(f"API key (shown once): {key}")


@main.group()
def role() -> None:
    """Role grants."""


@role.command("grant")
@click.option("--tenant", "slug", required=True)
@click.option("--email", required=True)
@click.option("--role", "role_name", required=True,
              help="admin, trader, compliance_officer, viewer, vendor, or platform_admin")
@click.pass_obj
def role_grant(settings: Settings, slug: str, email: str, role_name: str) -> None:
    """Grant a role in the user's tenant (platform_admin: across all tenants)."""
    from gateway.tenancy.models import User

    runtime = _runtime(settings)
    try:
        tenant_row = runtime.tenancy.tenant_by_slug(slug)
        with runtime.db.tenant_session(tenant_row.id) as session:
            user = session.exec(select(User).where(User.email == email.lower())).first()
        if user is None:
            raise click.ClickException(f"USER_NOT_FOUND: no user {email} in {slug}")
        if role_name == "platform_admin":
            # Across all tenants: the grant goes on the platform's audit chain.
            from gateway.audit import AuditEntry

            runtime.policy.grant(user.id, role_name, ALL_TENANTS)
            with runtime.db.system_transaction() as session:
                runtime.audit.append(session, None, [AuditEntry(
                    "permission.granted", user.id, {"role": role_name, "tenant": slug}, "cli")])
        else:
            # The operator is the platform: it grants vendor too (a tenant admin only asks).
            runtime.tenancy.grant_role(tenant_row.id, user.id, role_name, actor="cli",
                                       by_platform=True)
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo(f"{email} is {role_name}")


@main.command("seed-demo")
@click.pass_obj
def seed_demo(settings: Settings) -> None:
    """Create the demo tenant `demo` with an admin key (ALPHINTRA_DEMO_API_KEY, or generated)."""
    from gateway.seed import seed_demo as seed

    try:
        message = seed(_runtime(settings))
    except (DomainError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(message)


@main.group()
def fl() -> None:
    """Federated learning at scale: Flower's SuperLink, one SuperNode per institution, runs.

    The embedded gateway needs none of this (a `federated.train` job runs a Flower simulation);
    see gateway/federated/flower_app.py for a run end to end.
    """


@fl.command("superlink")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9092, show_default=True, type=int, help="Fleet, Control and Runtime API")
@click.option("--database", default=None, help="SQLite file for the SuperLink's state; memory if absent")
@click.option("--ssl-certfile", default=None)
@click.option("--ssl-keyfile", default=None)
@click.option("--ssl-ca-certfile", default=None)
def fl_superlink(host: str, port: int, database: str | None, ssl_certfile: str | None,
                 ssl_keyfile: str | None, ssl_ca_certfile: str | None) -> None:
    """Run Flower's SuperLink (plain HTTP on loopback only). Runs are started with
    `alphintra fl run` or Flower's `flwr run`."""
    from gateway.federated.deploy import run_flower_main, superlink_args

    run_flower_main("flower-superlink", superlink_args(
        host, port, database=database, certfile=ssl_certfile, keyfile=ssl_keyfile,
        ca_certfile=ssl_ca_certfile))


@fl.command("supernode")
@click.option("--tenant", "slug", required=True, help="the tenant whose data this node trains on")
@click.option("--superlink", required=True, help="the SuperLink's HOST:PORT")
@click.option("--port", default=9094, show_default=True, type=int,
              help="this node's runtime API port (distinct per SuperNode on one machine)")
@click.option("--root-certificates", default=None, help="CA bundle for a SuperLink with TLS")
@click.option("--cache-dir", default=None, help="a private directory where the tenant's features are "
              "kept between messages (each message runs in a new process); none: rebuilt each time")
def fl_supernode(slug: str, superlink: str, port: int, root_certificates: str | None,
                 cache_dir: str | None) -> None:
    """Run a Flower SuperNode for one tenant: its ClientApp reads only that tenant's data."""
    from gateway.federated.deploy import run_flower_main, supernode_args

    if not slug or len(slug) > 63 or not all(ch.isalnum() or ch == "-" for ch in slug):
        raise click.BadParameter("a tenant slug: letters, digits and hyphens", param_hint="--tenant")
    run_flower_main("flower-supernode", supernode_args(slug, superlink, port, cache_dir=cache_dir,
                                                       root_certificates=root_certificates))


@fl.command("app")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def fl_app(directory: Path) -> None:
    """Write the Flower App directory, for `flwr run DIRECTORY <connection>`."""
    from gateway.federated.flower_app import write_flower_app

    click.echo(str(write_flower_app(directory)))


@fl.command("run")
@click.option("--superlink", required=True, help="the SuperLink's HOST:PORT")
@click.option("--participants", default=2, show_default=True, type=int, help="SuperNodes to wait for")
@click.option("--rounds", default=3, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--dp-mode", type=click.Choice(["NONE", "SERVER", "CLIENT"]), default="NONE", show_default=True)
@click.option("--clip-norm", default=1.0, show_default=True, type=float)
@click.option("--noise-multiplier", default=0.0, show_default=True, type=float)
@click.option("--delta", default=1e-5, show_default=True, type=float)
@click.option("--secure-aggregation/--no-secure-aggregation", default=True, show_default=True)
@click.option("--baselines/--no-baselines", default=True, show_default=True)
@click.option("--target", type=click.Choice(["DIRECTION", "VOLATILITY"]), default="DIRECTION",
              show_default=True)
@click.option("--window-days", default=730, show_default=True, type=int)
@click.option("--result", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="where the ServerApp writes its JSON report (on the SuperLink's machine)")
@click.option("--timeout", default=None, type=float, help="seconds before giving up")
@click.option("--root-certificates", default=None)
def fl_run(superlink: str, participants: int, rounds: int, seed: int, dp_mode: str, clip_norm: float,
           noise_multiplier: float, delta: float, secure_aggregation: bool, baselines: bool, target: str,
           window_days: int, result: Path | None, timeout: float | None,
           root_certificates: str | None) -> None:
    """Start a training run on a SuperLink with `flwr run`, and follow it to the end."""
    from gateway.federated.deploy import start_run

    config = {"participants": participants, "rounds": rounds, "seed": seed, "dp-mode": dp_mode,
              "clip-norm": clip_norm, "noise-multiplier": noise_multiplier, "delta": delta,
              "secure-aggregation": secure_aggregation, "baselines": baselines, "target": target,
              "window-days": window_days, "result-path": str(result.resolve()) if result else ""}
    code = start_run(superlink, config, timeout=timeout, root_certificates=root_certificates)
    if code != 0:
        raise click.ClickException(f"flwr run exited with {code}")


@main.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
@click.option("--tenant", "slug", default=None, help="the tenant whose trail (every lane) to check")
@click.option("--platform", is_flag=True, help="check the platform chain instead")
@click.option("--from", "start", default=None, help="ISO 8601 instant (UTC if no offset)")
@click.option("--to", "end", default=None, help="ISO 8601 instant, exclusive")
@click.pass_obj
def audit_verify(settings: Settings, slug: str | None, platform: bool, start: str | None,
                 end: str | None) -> None:
    """Recompute every hash and link of a tenant's trail (each of its lanes) or of the platform
    chain; exit 1 if a record was edited, deleted or moved, naming the first bad record and its
    lane. One line per lane follows the verdict."""
    from gateway.audit.cli import parse_instant, verification_lines

    if platform == (slug is not None):
        raise click.UsageError("name one chain: --tenant SLUG or --platform")
    runtime = _runtime(settings)
    try:
        tenant_id = None if platform else runtime.tenancy.tenant_by_slug(slug or "").id
        result = runtime.audit.verify(tenant_id, parse_instant(start), parse_instant(end))
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    finally:
        runtime.close()
    for line in verification_lines(result, slug or "platform"):
        click.echo(line)
    if not result.ok:
        raise SystemExit(1)


@audit.command("export-checkpoints")
@click.option("--out", required=True, help="the JSON file to write (- for stdout)")
@click.option("--tenant", "slug", default=None,
              help="one tenant's lanes (default: every chain)")
@click.option("--platform", is_flag=True, help="the platform chain only")
@click.pass_obj
def audit_export_checkpoints(settings: Settings, out: str, slug: str | None, platform: bool) -> None:
    """Write the signed checkpoints of the audit chains (a tenant's: every lane), with the
    platform's public key, for an auditor to keep outside the database
    (verifyAuditTrail(checkpoints:) takes them back). One line per chain follows (on stderr
    when the document goes to stdout)."""
    from gateway.audit.cli import export_lines, write_export

    if platform and slug is not None:
        raise click.UsageError("name at most one chain: --tenant SLUG or --platform")
    runtime = _runtime(settings)
    try:
        if slug is None and not platform:
            document = runtime.audit.export_checkpoints(every_chain=True, secrets=runtime.secrets)
        else:
            tenant_id = None if platform else runtime.tenancy.tenant_by_slug(slug or "").id
            document = runtime.audit.export_checkpoints(tenant_id, secrets=runtime.secrets)
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    finally:
        runtime.close()
    count = write_export(document, out)
    if out != "-":
        click.echo(f"{count} checkpoints written to {out}")
    for line in export_lines(document):
        click.echo(line, err=out == "-")


@main.group()
def secrets() -> None:
    """Secrets sealed at rest (plugin secrets, signing keys)."""


@secrets.command("reseal")
@click.pass_obj
def secrets_reseal(settings: Settings) -> None:
    """Seal every secret again with the current ALPHINTRA_SECRET_KEY (after a rotation, with the
    old key in ALPHINTRA_SECRET_KEYS_PREVIOUS); exit 1 if a value opens with no configured key."""
    from gateway.db import Database
    from gateway.secrets import SecretBox
    from gateway.secrets_reseal import reseal

    box = SecretBox.from_settings(settings)
    db = Database(settings.database_url)
    try:
        report = reseal(db, box)
    finally:
        db.engine.dispose()
    click.echo(f"resealed {report.resealed}, already current {report.current}, "
               f"changed meanwhile {report.changed}, unreadable {len(report.unreadable)} "
               f"(current key id {box.key_id})")
    for where in report.unreadable:
        click.echo(f"unreadable: {where}", err=True)
    if report.unreadable:
        raise SystemExit(1)


@main.group("chain")
def chain_group() -> None:
    """The shared DeFi chain: one EVM for every gateway replica and worker (scale-out)."""


@chain_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="listen address (no authentication: keep it on loopback or a private network)")
@click.option("--port", default=8545, show_default=True, type=int)
@click.option("--state", default="alphintra-chain.state", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="the chain's state file (blocks, balances, contracts; created at first start)")
def chain_serve(host: str, port: int, state: Path) -> None:
    """Run the embedded EVM as its own process, answering Ethereum JSON-RPC; replicas and
    workers reach it with ALPHINTRA_DEFI_CHAIN_URL. Deploys the demo world at first start."""
    from gateway.defi.chain_server import serve as serve_chain
    from gateway.defi.chain_store import ChainStoreBusy, ChainStoreCorrupt

    try:
        serve_chain(host, port, state, lambda line: click.echo(line, err=True))
    except (ChainStoreBusy, ChainStoreCorrupt) as exc:
        raise click.ClickException(str(exc)) from None


@main.group("venue")
def venue_group() -> None:
    """The shared simulated venues: one set of books for every gateway process (scale-out)."""


@venue_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="listen address (clients prove they hold the secret key; still, keep it on "
                   "loopback or a private network)")
@click.option("--port", default=7710, show_default=True, type=click.IntRange(0, 65535))
@click.pass_obj
def venue_serve(settings: Settings, host: str, port: int) -> None:
    """Hold the built-in simulated venues in this one process: it restores their open orders,
    runs their clock and applies their reports; gateway processes reach it with
    ALPHINTRA_VENUE_URL=tcp://HOST:PORT (and the same secret key)."""
    from gateway.trading.venue_server import BooksHeld
    from gateway.trading.venue_server import serve as serve_venue

    _require_secret_key(settings)
    try:
        serve_venue(host, port, settings, lambda line: click.echo(line, err=True))
    except BooksHeld as exc:
        click.echo(f"error: {exc.message}", err=True)
        raise SystemExit(2) from None


# `alphintra plugin …` (marketplace/cli.py); `plugin dev` runs a gateway, so it is added here and
# marketplace/ keeps importing no gateway code.
plugin_commands.add_command(plugin_dev)
main.add_command(plugin_commands)
