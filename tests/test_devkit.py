"""The vendor development kit (issue 13): `alphintra plugin new` scaffolds a project per category
that `alphintra plugin test` passes; a broken one fails with a non-zero exit and says why; the
pytest plugin's fixtures work in a vendor's project (pytester); and `alphintra plugin dev`
serves a project, reloading it when its source changes (slow)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from marketplace.cli import plugin as plugin_cli
from marketplace.devkit import HOOK_CAPABILITIES, dev_version, names_for, render_project, scaffold
from marketplace.manifest import CATEGORIES, parse_manifest
from tests.support import free_port

pytest_plugins = ["pytester"]


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m gateway …` in its own process, without the suite's ALPHINTRA_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_scaffolds_a_project_that_passes_its_kit(tmp_path, category):
    project = tmp_path / "plugin"
    made = cli("plugin", "new", str(project), "--category", category, "--id", f"acme.kit-{category}",
               "--name", f'Kit "{category}"')
    assert made.returncode == 0, made.stderr
    package = f"acme_kit_{category.replace('-', '_')}"
    for relative in ("pyproject.toml", "README.md", ".gitignore", "tests/test_plugin.py",
                     f"{package}/__init__.py", f"{package}/plugin.py"):
        assert (project / relative).is_file(), relative
    manifest = parse_manifest(json.loads((project / package / "alphintra_manifest.json").read_text()))
    assert (manifest.id, manifest.category, manifest.name) == (f"acme.kit-{category}", category,
                                                               f'Kit "{category}"')
    assert manifest.conformance and manifest.capabilities
    assert f'{package} = ["alphintra_manifest.json"]' in (project / "pyproject.toml").read_text()

    tested = cli("plugin", "test", str(project))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "FAIL" not in tested.stdout and "warn" not in tested.stdout
    assert tested.stdout.splitlines()[-1].startswith("passed: ")
    assert not list(project.rglob("__pycache__"))  # the check leaves the source as it was


def test_a_hook_declared_but_removed_from_the_code_fails_the_check(tmp_path):
    project = tmp_path / "theme"
    assert cli("plugin", "new", str(project), "--category", "white-label", "--id", "acme.broken-theme"
               ).returncode == 0
    code = project / "acme_broken_theme" / "plugin.py"
    code.write_text(code.read_text().replace("@hookimpl\ndef alphintra_feature_flags",
                                             "def alphintra_feature_flags"))
    tested = cli("plugin", "test", str(project))
    assert tested.returncode == 1
    assert ("FAIL  the manifest declares alphintra_feature_flags but the plugin does not implement it"
            in tested.stdout)
    assert tested.stdout.splitlines()[-1] == "failed: 1 problem"


def test_an_import_error_a_kit_failure_and_a_bad_manifest_are_reported(tmp_path):
    runner = CliRunner()
    project = tmp_path / "p"
    scaffold(project, "white-label", "acme.check-me")
    code = project / "acme_check_me" / "plugin.py"
    original = code.read_text()

    code.write_text(original + "\nraise RuntimeError('no config service')\n")
    result = runner.invoke(plugin_cli, ["test", str(project)])
    assert result.exit_code == 1
    assert "FAIL  importing acme_check_me.plugin raised RuntimeError: no config service" in result.output
    assert "plugin.py" in result.output  # the frame in the vendor's own file

    code.write_text(original.replace('secondary_colour="#e63946"', 'secondary_colour="red"'))
    result = runner.invoke(plugin_cli, ["test", str(project)])
    assert result.exit_code == 1
    assert "FAIL  theme colours must be #rrggbb: secondary_colour" in result.output
    # The plugin ran in another process: this one never imported it.
    assert "acme_check_me" not in sys.modules

    manifest = project / "acme_check_me" / "alphintra_manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "version": "1.0", "capabilities": []}))
    result = runner.invoke(plugin_cli, ["test", str(project)])
    assert result.exit_code == 1
    assert "MANIFEST_INVALID" in result.output
    assert "$.version: '1.0' is not a semantic version" in result.output

    result = runner.invoke(plugin_cli, ["test", str(tmp_path)])
    assert result.exit_code == 1 and "PROJECT_INVALID" in result.output


def test_a_missing_capability_is_a_warning(tmp_path):
    project = tmp_path / "p"
    scaffold(project, "analytics", "acme.no-cap")
    manifest = project / "acme_no_cap" / "alphintra_manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "capabilities": []}))
    result = CliRunner().invoke(plugin_cli, ["test", str(project)])
    assert result.exit_code == 0, result.output
    assert ("warn  alphintra_schema_extensions needs the capability schema:extend, which the manifest "
            "does not declare") in result.output


def test_plugin_new_refuses_what_it_cannot_scaffold(tmp_path):
    runner = CliRunner()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    for args, message, code in [
        (["new", str(taken), "--category", "llm", "--id", "acme.x"], "SCAFFOLD_TARGET_EXISTS", 1),
        (["new", str(tmp_path / "a"), "--category", "llm", "--id", "Acme"], "PLUGIN_ID_INVALID", 1),
        (["new", str(tmp_path / "b"), "--category", "llm", "--id", "acme"], "PLUGIN_ID_INVALID", 1),
        (["new", str(tmp_path / "c"), "--category", "llm", "--id", "9lives.x"], "start with a letter", 1),
        (["new", str(tmp_path / "d"), "--category", "options", "--id", "acme.x"], "'options' is not one", 2),
    ]:
        result = runner.invoke(plugin_cli, args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
    assert (taken / "notes.txt").read_text() == "mine" and len(list(taken.iterdir())) == 1
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_names_and_dev_versions():
    names = names_for("acme.vol-stats", "analytics")
    assert (names.package, names.dist, names.class_prefix, names.field_camel, names.name, names.vendor) == (
        "acme_vol_stats", "acme-vol-stats", "AcmeVolStats", "acmeVolStats", "Vol stats", "Acme")
    files = render_project(names)
    assert "def acme_vol_stats_greeting(self)" in files["acme_vol_stats/plugin.py"]
    assert "acmeVolStatsGreeting" in files["README.md"]
    assert dev_version("1.0.0", 3) == "1.0.0+dev.3"
    assert dev_version("1.0.0-rc.1", 1) == "1.0.0-rc.1+dev.1"
    assert dev_version("1.0.0+build.7", 2) == "1.0.0+build.7.dev.2"


def test_the_toolkit_knows_which_capability_each_hook_needs():
    from gateway.marketplace.sandbox.proxies import HOOK_CAPABILITIES as GATEWAY

    assert HOOK_CAPABILITIES == GATEWAY


FIXTURES_TEST = '''
from pathlib import Path


def test_the_fixtures(alphintra_plugin_dir, alphintra_manifest, alphintra_config, alphintra_kit, request):
    assert alphintra_plugin_dir == Path(str(request.config.rootpath)).resolve()
    assert alphintra_manifest.id == "acme.fixture-theme" and alphintra_manifest.category == "white-label"
    assert alphintra_config == {"product_name": "Conformance Trader"}
    assert alphintra_kit.ok, alphintra_kit.failures
    assert alphintra_kit.implemented == ["alphintra_feature_flags", "alphintra_white_label"]
    assert "theme 'acme.fixture-theme' is valid" in alphintra_kit.checks
'''


def test_the_pytest_plugin_gives_a_vendor_project_its_fixtures(pytester):
    scaffold(pytester.path, "white-label", "acme.fixture-theme")
    pytester.makepyfile(test_fixtures=FIXTURES_TEST)
    # The fixtures, and the project's own scaffolded tests (the live ones skip without the env).
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "test_fixtures.py", "tests")
    result.assert_outcomes(passed=4, skipped=2)

    # A broken plugin: the kit fixture reports it, it does not raise.
    code = pytester.path / "acme_fixture_theme" / "plugin.py"
    code.write_text(code.read_text().replace('"#1d3557"', '"navy"'))
    pytester.makepyfile(test_broken="""
def test_broken(alphintra_kit):
    assert alphintra_kit.failures == ["theme colours must be #rrggbb: primary_colour"]
""")
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "test_broken.py").assert_outcomes(passed=1)


def test_outside_a_plugin_project_the_fixtures_fail_clearly(pytester):
    pytester.makepyfile(test_nothing="def test_it(alphintra_manifest):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*PROJECT_INVALID*override the alphintra_plugin_dir fixture*"])


@pytest.mark.slow
def test_the_gateway_fixture_serves_the_plugin(pytester):
    scaffold(pytester.path, "analytics", "acme.fixture-stats")
    pytester.makepyfile(test_live='''
def test_live(alphintra_gateway):
    body = alphintra_gateway.query("query($v: [Float!]!) { acmeFixtureStatsSummary(values: $v) { mean } }",
                                   {"v": [2, 4]})
    assert body == {"data": {"acmeFixtureStatsSummary": {"mean": 3.0}}}, body
    assert alphintra_gateway.url.endswith("/graphql") and alphintra_gateway.key
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_live.py", timeout=300)
    result.assert_outcomes(passed=1)


class Output:
    """A process's stdout lines, read on a thread (so a wait never blocks on a pipe)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                found = re.search(pattern, line)
                if found:
                    return found
            try:
                self.lines.append(self._queue.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines)) from None


@pytest.mark.slow
def test_plugin_dev_serves_the_source_and_reloads_it_on_a_change(tmp_path):
    project = tmp_path / "stats"
    scaffold(project, "analytics", "acme.dev-stats", name="Dev stats")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "plugin", "dev", str(project), "--port",
                                str(port), "--config", '{"label": "qa"}'], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = Output(process)
    try:
        url = output.wait_for(r"GraphQL:\s+(\S+)").group(1)
        key = output.wait_for(r"API key:\s+(\S+)").group(1)
        assert url == f"http://127.0.0.1:{port}/graphql"
        output.wait_for(r"installed acme\.dev-stats 0\.1\.0\+dev\.1 ")
        output.wait_for(r"fields: Query\.acmeDevStatsGreeting, Query\.acmeDevStatsSummary")

        def greeting() -> dict:
            response = httpx.post(url, json={"query": "{ acmeDevStatsGreeting }"},
                                  headers={"authorization": f"Bearer {key}"}, timeout=30)
            return response.json()

        assert greeting() == {"data": {"acmeDevStatsGreeting": "Hello from Dev stats, qa"}}

        code = project / "acme_dev_stats" / "plugin.py"
        code.write_text(code.read_text().replace('GREETING = "Hello from Dev stats"', 'GREETING = "Bonjour"'))
        output.wait_for(r"changed: acme_dev_stats/plugin\.py")
        output.wait_for(r"reloaded acme\.dev-stats 0\.1\.0\+dev\.2 ")
        assert greeting() == {"data": {"acmeDevStatsGreeting": "Bonjour, qa"}}

        # A broken save: the previous build keeps serving.
        code.write_text(code.read_text() + "\ndef broken(:\n")
        output.wait_for(r"build failed: PLUGIN_IMPORT_FAILED")
        output.wait_for(r"still serving acme\.dev-stats 0\.1\.0\+dev\.2")
        assert greeting() == {"data": {"acmeDevStatsGreeting": "Bonjour, qa"}}
        # The source's manifest still says what the vendor wrote.
        assert json.loads((project / "acme_dev_stats" / "alphintra_manifest.json").read_text()
                          )["version"] == "0.1.0"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, "\n".join(output.lines)
