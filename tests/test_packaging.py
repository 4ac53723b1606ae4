"""The distribution's shape: its top-level packages are its own, and gateway/ does not reach
into schema/ except at the composition root."""

import ast
import importlib.metadata as md
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"gateway", "schema", "plugins", "marketplace"}


def test_no_installed_distribution_ships_our_top_level_names():
    owners = md.packages_distributions()
    for name in OURS:
        assert set(owners.get(name, [])) <= {"alphintra"}, (name, owners.get(name))


def test_console_script_and_plugin_group():
    dist = md.distribution("alphintra")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts["alphintra"] == "gateway.cli:main"
    import gateway
    import schema

    assert Path(gateway.__file__).parent == ROOT / "gateway"
    assert Path(schema.__file__).parent == ROOT / "schema"


def test_gateway_imports_schema_only_in_the_composition_root():
    offenders = []
    for path in (ROOT / "gateway").rglob("*.py"):
        if path.name == "app.py" and path.parent.name == "gateway":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "schema" or n.startswith("schema.") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_importing_packages_has_no_side_effects(tmp_path):
    import subprocess
    import sys

    code = ("import gateway.app, gateway.cli, schema, plugins, marketplace, logging, threading;"
            "assert threading.active_count() == 1, threading.enumerate();"
            "assert not logging.getLogger().handlers")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no database file or anything else was created
