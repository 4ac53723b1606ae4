"""Configuration for production (issue 16): help per setting, `alphintra config`, the generated
docs/settings.md, one-line errors, an explicit secret key beside PostgreSQL or Redis, start-up
warnings, `--version`, and /readyz waiting for warm-up."""

from __future__ import annotations

import base64
import dataclasses
import importlib.metadata
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.runtime import Runtime
from gateway.secrets import SecretBox
from gateway.settings import Settings, SettingsError, markdown_reference
from tests.support import LiveServer, wait_for

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgresql+psycopg://alphintra:hunter2@127.0.0.1:1/nowhere"  # never connected to


def alphintra(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`alphintra …` in a scratch directory with only these ALPHINTRA_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=tmp_path, text=True,
                          env={**clean, "ALPHINTRA_LOG_JSON": "false", **env},
                          capture_output=True, timeout=60)


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_every_setting_has_help():
    missing = [f.name for f in dataclasses.fields(Settings) if len(f.metadata.get("help", "")) < 10]
    assert missing == []


@pytest.mark.parametrize("command", ["serve", "worker", "migrate"])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path, command):
    done = alphintra(tmp_path, command, ALPHINTRA_MAX_PAGE_SIZE="abc")
    assert done.returncode == 2
    assert done.stderr == 'alphintra: ALPHINTRA_MAX_PAGE_SIZE: expected an integer, got "abc"\n'
    assert not (tmp_path / "alphintra.db").exists()  # refused before anything was made


def test_bad_values_of_every_kind_name_their_variable(tmp_path):
    cases = {"ALPHINTRA_GRAPHIQL": ("maybe", "expected true or false"),
             "ALPHINTRA_PLUGIN_CPU_FRACTION": ("half", "expected a number"),
             "ALPHINTRA_SECRET_KEY": ("c2hvcnQ=", "expected 32 bytes in base64, got 5 bytes")}
    for name, (value, said) in cases.items():
        done = alphintra(tmp_path, "serve", **{name: value})
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"alphintra: {name}: {said}")
        assert "Traceback" not in done.stderr
    # a range check of a well-formed value: one line too
    done = alphintra(tmp_path, "migrate", ALPHINTRA_ENVIRONMENT="staging")
    assert (done.returncode, done.stderr) == (2, "alphintra: environment must be development or "
                                                 "production\n")


def test_config_prints_every_setting_with_its_source_and_masks_secrets(tmp_path):
    secret = key()
    done = alphintra(tmp_path, "config", ALPHINTRA_MAX_DEPTH="7", ALPHINTRA_SECRET_KEY=secret,
                     ALPHINTRA_DATABASE_URL=POSTGRES, ALPHINTRA_JWT_SECRET="jwt-shh")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for f in dataclasses.fields(Settings):
        name = f"ALPHINTRA_{f.name.upper()}"
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}="))
        assert lines[at + 1].strip() == f.metadata["help"]  # its help below it
    assert "ALPHINTRA_MAX_DEPTH=7  [ALPHINTRA_MAX_DEPTH]" in lines
    assert "ALPHINTRA_MAX_ALIASES=30  [default]" in lines
    assert "ALPHINTRA_SECRET_KEY=***  [ALPHINTRA_SECRET_KEY]" in lines
    assert "ALPHINTRA_DATABASE_URL=postgresql+psycopg://alphintra:***@127.0.0.1:1/nowhere  " \
           "[ALPHINTRA_DATABASE_URL]" in lines
    for never in (secret, "jwt-shh", "hunter2"):
        assert never not in done.stdout


def test_docs_settings_md_is_the_generated_reference(tmp_path):
    committed = (ROOT / "docs" / "settings.md").read_text()
    assert committed == markdown_reference(), \
        "regenerate: alphintra config --markdown > docs/settings.md"
    for f in dataclasses.fields(Settings):
        assert f"`ALPHINTRA_{f.name.upper()}`" in committed
    done = alphintra(tmp_path, "config", "--markdown")
    assert done.returncode == 0 and done.stdout == committed


def test_version():
    done = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip() == f"alphintra, version {importlib.metadata.version('alphintra')}"


def test_postgresql_or_redis_needs_an_explicit_secret_key(tmp_path):
    said = ("alphintra: ALPHINTRA_SECRET_KEY or an absolute ALPHINTRA_SECRET_KEY_FILE is required "
            "with PostgreSQL or Redis (a relative key file differs per working directory)\n")
    served = alphintra(tmp_path, "serve", ALPHINTRA_DATABASE_URL=POSTGRES)
    assert (served.returncode, served.stderr) == (2, said)
    worked = alphintra(tmp_path, "worker", ALPHINTRA_REDIS_URL="redis://127.0.0.1:1/0")
    assert (worked.returncode, worked.stderr) == (2, said)
    relative = alphintra(tmp_path, "serve", ALPHINTRA_DATABASE_URL=POSTGRES,
                         ALPHINTRA_SECRET_KEY_FILE="keys/secret.key")
    assert (relative.returncode, relative.stderr) == (2, said)
    missing = tmp_path / "absent.key"
    absent = alphintra(tmp_path, "serve", ALPHINTRA_DATABASE_URL=POSTGRES,
                       ALPHINTRA_SECRET_KEY_FILE=str(missing))
    assert absent.returncode == 2 and absent.stderr.count("\n") == 1
    assert f"ALPHINTRA_SECRET_KEY_FILE: {missing} does not exist" in absent.stderr
    assert not missing.exists() and not list(tmp_path.glob("*.key"))  # no key made silently


def test_an_absolute_key_file_is_the_same_key_from_any_directory(tmp_path, monkeypatch):
    path = tmp_path / "secret.key"
    path.write_text(key() + "\n")
    settings = Settings(database_url=POSTGRES, secret_key_file=str(path))
    monkeypatch.chdir(tmp_path)
    sealed = SecretBox.from_settings(settings).seal(b"vault", "ctx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert SecretBox.from_settings(settings).open(sealed, "ctx") == b"vault"
    with pytest.raises(SettingsError, match="relative key file"):
        SecretBox.from_settings(Settings(redis_url="redis://127.0.0.1:1/0"))
    path.write_text("not a key")
    with pytest.raises(SettingsError, match="not base64"):
        SecretBox.from_settings(settings)


def test_the_embedded_default_needs_no_key(tmp_path, monkeypatch):
    # `make run`: SQLite, no Redis, nothing configured: a key file is made beside it, once
    monkeypatch.chdir(tmp_path)
    assert Settings().secret_key_problem() is None
    sealed = SecretBox.from_settings(Settings()).seal(b"x", "ctx")
    assert (tmp_path / ".alphintra-secret.key").exists()
    assert SecretBox.from_settings(Settings()).open(sealed, "ctx") == b"x"


def _runtime(runtime: Runtime, **changes: object) -> Runtime:
    settings = runtime.settings.with_(embedded_worker="off", **changes)
    return Runtime(**{**runtime.__dict__, "settings": settings})


WARNINGS = ("GraphiQL is served", "introspection is on", "/metrics is unauthenticated")


def test_production_warns_about_insecure_settings_at_start_up(runtime, caplog):
    caplog.set_level(logging.INFO, logger="gateway.app")
    create_app(runtime=_runtime(runtime, environment="production", graphiql=True,
                                introspection=True, metrics_token=None))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for text in WARNINGS:
        assert sum(text in message for message in warned) == 1, warned
    caplog.clear()
    create_app(runtime=_runtime(runtime, graphiql=True, introspection=True))  # development
    create_app(runtime=_runtime(runtime, environment="production", graphiql=False,
                                introspection=False, metrics_token="m-token"))
    assert not [r for r in caplog.records
                if any(text in r.getMessage() for text in WARNINGS)]


def test_metrics_token(runtime):
    with LiveServer(create_app(runtime=_runtime(runtime, metrics_token="m-token"))) as live:
        assert httpx.get(live.url + "/metrics").status_code == 401
        wrong = httpx.get(live.url + "/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = httpx.get(live.url + "/metrics", headers={"authorization": "Bearer m-token"})
        assert ok.status_code == 200 and "alphintra_http_requests_total" in ok.text


def test_readyz_waits_for_warm_up(runtime, monkeypatch):
    gate, calls = threading.Event(), []

    def slow_step() -> None:
        calls.append("calendars")
        gate.wait(30)

    monkeypatch.setattr(runtime.markets.directory.calendars, "warm", slow_step)
    monkeypatch.setattr(runtime.patterns, "model", lambda: calls.append("patterns"))
    monkeypatch.setattr(runtime.defi, "warm", lambda: calls.append("defi"))
    try:
        with LiveServer(create_app(runtime=_runtime(runtime, warm_on_start=True))) as live:
            wait_for(lambda: calls, timeout=10)
            early = httpx.get(live.url + "/readyz")
            assert early.status_code == 503
            assert early.json()["checks"]["warm_up"] == "pending"
            assert httpx.get(live.url + "/healthz").status_code == 200  # alive meanwhile
            gate.set()
            wait_for(lambda: httpx.get(live.url + "/readyz").status_code == 200, timeout=10)
            body = httpx.get(live.url + "/readyz").json()
            assert body == {"status": "ready", "checks": {"warm_up": "ok", "database": "ok",
                                                          "bus": "ok", "broker": "ok"}}
            assert calls == ["calendars", "patterns", "defi"]
    finally:
        gate.set()


def test_a_failed_warm_up_is_reported_but_ready(runtime, monkeypatch):
    def broken() -> None:
        raise RuntimeError("no calendars today")

    monkeypatch.setattr(runtime.markets.directory.calendars, "warm", broken)
    with LiveServer(create_app(runtime=_runtime(runtime, warm_on_start=True))) as live:
        ready = wait_for(lambda: (r := httpx.get(live.url + "/readyz")).status_code == 200 and r,
                         timeout=10)
    assert ready.json()["checks"]["warm_up"] == "failed: RuntimeError"


def test_no_secret_setting_reaches_a_repr():
    """Settings end up in logs and tracebacks: every secret setting stays out of repr()."""
    values = {f.name: f"S3CRET-{f.name}" for f in dataclasses.fields(Settings)
              if f.metadata.get("secret")}
    assert values, "the secret settings are marked"
    text = repr(Settings(**values))
    assert not [name for name, value in values.items() if value in text]


def test_origins_and_limits_are_checked():
    for bad in ({"cors_origins": ("a.com",)}, {"websocket_origins": ("https://a.com/path",)},
                {"rate_limit_key_per_second": float("nan")}, {"max_response_bytes": -1},
                {"apq_cache_size": 0}):
        with pytest.raises(SettingsError):
            Settings(**bad).check()
    Settings(cors_origins=("https://desk.example.com", "http://127.0.0.1:8000"),
             websocket_origins=("https://desk.example.com",)).check()
