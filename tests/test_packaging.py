"""The distribution's shape: its top-level packages are its own, and its layers point one way
(schema -> gateway -> models and plugins; plugins see only the SDK; the vendor toolkit sees no
gateway)."""

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


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _offenders(folder: Path, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in folder.rglob("*.py"):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden) and not any(
                    name == a or name.startswith(a + ".") for a in allowed):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


def test_the_layers_point_one_way():
    """schema -> gateway services -> models and plugins; plugins import only the SDK; the
    vendor toolkit in marketplace/ imports nothing of the gateway."""
    assert _offenders(ROOT / "plugins", ("gateway", "schema", "marketplace")) == []
    assert _offenders(ROOT / "marketplace", ("gateway", "schema")) == []
    # A partner's plugin sees the SDK (plugins.sdk) and nothing else of ours.
    examples = ROOT / "marketplace" / "examples"
    assert _offenders(examples, ("gateway", "schema", "marketplace", "plugins"),
                      allowed=("plugins.sdk",)) == []


def test_the_worker_side_of_the_sandbox_imports_no_gateway_code():
    """plugins/guest runs inside the sandbox: it may not import the gateway (which holds the
    settings, the database and the keys) even indirectly through another package of ours."""
    assert _offenders(ROOT / "plugins" / "guest", ("gateway", "schema", "marketplace", "plugins.builtin",
                                                   "plugins.host")) == []
