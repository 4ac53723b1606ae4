"""Flower's SuperLink and SuperNodes for `alphintra fl …` (gateway/cli.py): their arguments,
and starting a run against a SuperLink with Flower's own `flwr run`.

flwr 1.41's processes: `flower-superlink` serves one HTTP API (Fleet, Control and Runtime) on
--host/--port; each `flower-supernode` connects to it with --superlink HOST:PORT and serves its
own runtime API on --port (so SuperNodes on one machine need distinct ports). Both start
`flower-superexec`, which launches a `flwr-serverapp` per run and a `flwr-clientapp` per
message, by name from PATH: the directory of this Python goes first on PATH so they are the
same installation's. TLS is Flower's: on loopback `--insecure` is allowed; anywhere else
certificates are required, never silently skipped.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from gateway.federated.runner import quiet_environment

CONNECTION = "alphintra"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {address!r}")
    return host, int(port)


def flower_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with Flower's tools of this installation first on PATH."""
    quiet_environment()
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra or {})
    return env


def superlink_args(host: str, port: int, *, database: str | None = None, certfile: str | None = None,
                   keyfile: str | None = None, ca_certfile: str | None = None) -> list[str]:
    args = ["--host", host, "--port", str(port),
            # An app's dependencies are the installed gateway's: nothing is fetched at run time.
            "--disable-runtime-dependency-installation"]
    if certfile or keyfile:
        if not (certfile and keyfile):
            raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
        args += ["--ssl-certfile", certfile, "--ssl-keyfile", keyfile]
        if ca_certfile:
            args += ["--ssl-ca-certfile", ca_certfile]
    elif is_loopback(host):
        args.append("--insecure")
    else:
        raise click.UsageError(f"{host} is not loopback: give --ssl-certfile and --ssl-keyfile "
                               "(plain HTTP is allowed on loopback only)")
    if database:
        args += ["--database", database]
    return args


def supernode_args(tenant: str, superlink: str, port: int, *, root_certificates: str | None = None,
                   cache_dir: str | None = None) -> list[str]:
    host, _ = split_address(superlink)
    # What the ClientApp reads to know whose data it may touch (flower._node), and where it may
    # keep them between messages (each message runs in a new process).
    node_config = f'tenant="{tenant}"'
    if cache_dir:
        if any(ch.isspace() or ch == '"' for ch in cache_dir):
            raise click.BadParameter("no spaces or quotes in --cache-dir", param_hint="--cache-dir")
        node_config += f' cache-dir="{Path(cache_dir).resolve()}"'
    args = ["--superlink", superlink, "--host", "127.0.0.1", "--port", str(port),
            "--node-config", node_config]
    if root_certificates:
        args += ["--root-certificates", root_certificates]
    elif is_loopback(host):
        args.append("--insecure")
    else:
        raise click.UsageError(f"{host} is not loopback: give --root-certificates")
    return args


def run_flower_main(program: str, args: list[str]) -> None:
    """Run flwr's own entry point in this process, as its console script would."""
    os.environ.update(flower_environment())
    # flwr logs through its own console handler; passing records on to the gateway's handler
    # too would print each line twice. httpx logs every poll of the SuperLink at INFO.
    logging.getLogger("flwr").propagate = False
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.argv = [program, *args]
    if program == "flower-superlink":
        from flwr.superlink.cli.flower_superlink import flower_superlink

        flower_superlink()
    elif program == "flower-supernode":
        from flwr.supernode.cli.flower_supernode import flower_supernode

        flower_supernode()
    else:
        raise ValueError(program)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def start_run(superlink: str, run_config: Mapping[str, Any], *, timeout: float | None = None,
              root_certificates: str | None = None) -> int:
    """`flwr run` of the Alphintra Flower App against `superlink`, streaming its log until the
    run ends; returns flwr's exit code."""
    from gateway.federated.flower_app import write_flower_app

    host, _ = split_address(superlink)
    with tempfile.TemporaryDirectory(prefix="alphintra-fl-") as tmp:
        home = Path(tmp) / "flwr-home"
        home.mkdir()
        connection = [f'[superlink]\ndefault = "{CONNECTION}"\n', f"[superlink.{CONNECTION}]",
                      f"address = {_toml(superlink)}"]
        if root_certificates:
            connection.append(f"root-certificates = {_toml(root_certificates)}")
        elif is_loopback(host):
            connection.append("insecure = true")
        else:
            raise click.UsageError(f"{host} is not loopback: give --root-certificates")
        (home / "config.toml").write_text("\n".join(connection) + "\n")
        app = write_flower_app(Path(tmp) / "app")
        overrides = " ".join(f"{key}={_toml(value)}" for key, value in run_config.items())
        command = [str(Path(sys.executable).parent / "flwr"), "run", str(app), CONNECTION,
                   "--run-config", overrides, "--stream"]
        try:
            done = subprocess.run(command, env=flower_environment({"FLWR_HOME": str(home)}),
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise click.ClickException(f"the run did not finish in {timeout:g} s") from None
        return done.returncode
