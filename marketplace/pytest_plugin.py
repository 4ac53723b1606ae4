"""Fixtures for plugin vendors' tests: a pytest plugin (the `pytest11` entry point `alphintra`).

Installed with Alphintra, it is loaded by every pytest run in that environment, the gateway's
own suite included, so it defines fixtures only (no hooks) and imports nothing heavy until a
fixture is used. Disable it with `-p no:alphintra`.

- `alphintra_plugin_dir`: the plugin project under test: $ALPHINTRA_PLUGIN_DIR, else pytest's
  rootdir (a project made by `alphintra plugin new` has its pyproject.toml there). Override the
  fixture to point elsewhere.
- `alphintra_manifest`: its manifest, parsed (`marketplace.manifest.Manifest`).
- `alphintra_config`: the configuration `alphintra_gateway` installs with (the manifest's
  `conformance.config`); override it to test another.
- `alphintra_kit`: the category's conformance kit run on the source in this process: a
  `marketplace.devkit.KitReport` (`failures`, `checks`, `warnings`, `implemented`, `ok`).
- `alphintra_gateway`: a local gateway (temporary SQLite, in-process bus, sandbox best-effort)
  with the plugin built, published PRIVATE and installed for a tenant, once per session:
  `.url` (GraphQL), `.key` (the tenant admin's API key), `.query(document, variables)` (the
  JSON body).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def alphintra_plugin_dir(request: pytest.FixtureRequest) -> Path:
    """The plugin project's folder (the one holding `<package>/alphintra_manifest.json`)."""
    from marketplace.devkit import find_manifest
    from marketplace.errors import ToolkitError

    folder = Path(os.environ.get("ALPHINTRA_PLUGIN_DIR") or request.config.rootpath).resolve()
    try:
        find_manifest(folder)
    except ToolkitError as exc:
        pytest.fail(f"{exc.code}: {exc.message}; set ALPHINTRA_PLUGIN_DIR or override the "
                    "alphintra_plugin_dir fixture", pytrace=False)
    return folder


@pytest.fixture(scope="session")
def alphintra_manifest(alphintra_plugin_dir: Path) -> Any:
    """The project's manifest, validated (`marketplace.manifest.Manifest`)."""
    from marketplace.devkit import load_project
    from marketplace.errors import ToolkitError

    try:
        return load_project(alphintra_plugin_dir).manifest
    except ToolkitError as exc:
        pytest.fail(f"{exc.code}: {exc.message}", pytrace=False)


@pytest.fixture(scope="session")
def alphintra_config(alphintra_manifest: Any) -> dict[str, Any]:
    """What `alphintra_gateway` installs the plugin with: the manifest's test configuration."""
    from marketplace.devkit import conformance_config

    return conformance_config(alphintra_manifest)


@pytest.fixture
def alphintra_kit(alphintra_plugin_dir: Path) -> Any:
    """The conformance kit's report on the source, run in this process (hooks compared with the
    manifest first, as the gateway does at publication)."""
    from marketplace.devkit import run_kit_in_process

    return run_kit_in_process(alphintra_plugin_dir)


@pytest.fixture(scope="session")
def alphintra_gateway(alphintra_plugin_dir: Path, alphintra_config: dict[str, Any],
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A live gateway with the plugin installed for a tenant (`gateway.devkit.DevGateway`)."""
    # The vendor toolkit (marketplace/) imports no gateway code: tests/test_packaging.py checks
    # every import statement in it, inside functions too. So the gateway-side helper is found by
    # its name at run time, and only when a test asks for a gateway.
    devkit = importlib.import_module(".".join(("gateway", "devkit")))
    try:
        gateway = devkit.start_dev_gateway(alphintra_plugin_dir, config=alphintra_config, tenant="pytest",
                                           state_dir=tmp_path_factory.mktemp("alphintra-gateway"))
    except devkit.DeployFailed as exc:
        reasons = "".join(f"\n  - {r}" for r in exc.reasons)
        pytest.fail(f"the plugin could not be deployed: {exc}{reasons}", pytrace=False)
    try:
        yield gateway
    finally:
        gateway.close()
