"""The vendor development kit, toolkit side (issue 13): scaffold a plugin project from a category
template, find and load a project, build a dev wheel of it, and run the conformance kit on its
source, offline and without the gateway.

- `scaffold` (`alphintra plugin new`): a project from `marketplace/templates/<category>/` and
  `marketplace/templates/_common/`, whose manifest passes `parse_manifest` and whose plugin
  passes its category's kit.
- `run_kit_in_process` (the pytest plugin's `alphintra_kit`) and `run_kit_in_subprocess`
  (`alphintra plugin test`): import the plugin from its source folder, compare the hooks it
  implements with the manifest (`compare_hooks`), then run the category's kit (`run_kit`) on a
  pluggy manager, as a vendor's own machine can; the gateway runs the same kit against the
  plugin in its sandboxed worker at publication. The subprocess form keeps the plugin's
  imports out of the caller's interpreter (`python -I`: no user site, no PYTHONPATH).
- `build_dev_wheel` (`alphintra plugin dev`): the wheel of a copy of the source whose manifest
  carries a dev version; the source itself is never changed.

It imports nothing of the gateway (tests/test_packaging.py).
"""

from __future__ import annotations

import importlib
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from marketplace.errors import ToolkitError
from marketplace.manifest import CATEGORIES, PLUGIN_ID, Manifest, parse_manifest
from marketplace.wheel import MANIFEST_FILE

# Folders that are never part of a plugin's source: build output, caches, VCS, environments.
IGNORED_DIRS = frozenset({"build", "dist", "__pycache__", ".git", ".hg", ".pytest_cache", ".mypy_cache",
                          ".ruff_cache", ".venv", "venv", ".tox", ".alphintra-dev", "node_modules"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".swp", "~")
# The capability each hook needs before the gateway calls it at all; a copy of
# gateway/marketplace/sandbox/proxies.py's HOOK_CAPABILITIES (tests/test_devkit.py keeps them
# equal), here because the toolkit may not import the gateway.
HOOK_CAPABILITIES: dict[str, str] = {
    "alphintra_market_data_sources": "marketdata:publish",
    "alphintra_exchange_connectors": "orders:submit",
    "alphintra_schema_extensions": "schema:extend",
    "alphintra_white_label": "branding:theme",
}
SCHEMA_HOOK = "alphintra_schema_extensions"
# Which template file becomes which project file ({package} is the plugin's package).
LAYOUT = (
    ("_common/pyproject.toml.tmpl", "pyproject.toml"),
    ("_common/README.md.tmpl", "README.md"),
    ("_common/gitignore.tmpl", ".gitignore"),
    ("_common/__init__.py.tmpl", "{package}/__init__.py"),
    ("{category}/plugin.py.tmpl", "{package}/plugin.py"),
    ("{category}/alphintra_manifest.json.tmpl", "{package}/" + MANIFEST_FILE),
    ("_common/test_plugin.py.tmpl", "tests/test_plugin.py"),
)
# Inserted into the common templates from the category's own files.
FRAGMENTS = {"category_tests": "{category}/tests.py.tmpl", "category_readme": "{category}/README.md.tmpl"}


class ScaffoldRefused(ToolkitError):
    """`plugin new` will not write here, or not with these names; `code` says why."""

    code = "SCAFFOLD_REFUSED"


class ProjectInvalid(ToolkitError):
    """The folder is not a plugin project: no (or several) `<package>/alphintra_manifest.json`."""

    code = "PROJECT_INVALID"


class KitRunFailed(ToolkitError):
    """The separate process that runs the kit crashed or ran out of time (the plugin's import or
    one of its hooks hangs); not a verdict on the plugin's answers."""

    code = "KIT_RUN_FAILED"


# Scaffolding.

@dataclass(frozen=True)
class Names:
    """Every name a template needs, derived from the plugin id (`acme.vol-stats`)."""

    id: str
    category: str
    name: str
    vendor: str
    package: str  # acme_vol_stats: the import package, and the GraphQL field prefix
    dist: str  # acme-vol-stats: the distribution

    @property
    def class_prefix(self) -> str:  # AcmeVolStats: GraphQL type names must be unique
        return "".join(part.capitalize() for part in re.split(r"[._-]", self.id) if part)

    @property
    def field_camel(self) -> str:
        """The package as strawberry names a field made from it (its auto camel case)."""
        first, *rest = self.package.split("_")
        return first + "".join(part.capitalize() if part else "_" for part in rest)

    def values(self) -> dict[str, str]:
        return {"id": self.id, "category": self.category, "name": self.name, "vendor": self.vendor,
                "package": self.package, "dist": self.dist, "field": self.package,
                "field_camel": self.field_camel, "Class": self.class_prefix,
                "CODE": self.package.upper(), "wheel_name": self.dist.replace("-", "_"),
                "strawberry_note": " and strawberry" if self.category == "analytics" else ""}


def names_for(plugin_id: str, category: str, *, name: str | None = None, vendor: str | None = None
              ) -> Names:
    """Check the id and category, and derive the other names (ScaffoldRefused says what is wrong)."""
    if category not in CATEGORIES:
        raise ScaffoldRefused(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}",
                              code="CATEGORY_UNKNOWN", details={"categories": list(CATEGORIES)})
    if not re.fullmatch(PLUGIN_ID, plugin_id) or len(plugin_id) > 100:
        raise ScaffoldRefused(
            f"{plugin_id!r} is not a plugin id: lowercase letters, digits and '-' in two or more "
            "dot-separated parts, vendor first (e.g. acme.vol-stats)", code="PLUGIN_ID_INVALID")
    if not plugin_id[0].isalpha():
        raise ScaffoldRefused(f"{plugin_id!r}: a scaffolded plugin's id must start with a letter (it "
                              "names the Python package)", code="PLUGIN_ID_INVALID")
    package = re.sub(r"[.-]", "_", plugin_id)
    if not package.isidentifier() or keyword.iskeyword(package):
        raise ScaffoldRefused(f"{plugin_id!r} does not make a Python package name", code="PLUGIN_ID_INVALID")
    vendor_part, _, rest = plugin_id.partition(".")
    name = (name if name is not None else rest.replace("-", " ").replace(".", " ").capitalize()).strip()
    vendor = (vendor if vendor is not None else vendor_part.replace("-", " ").title()).strip()
    for label, value in (("--name", name), ("--vendor", vendor)):
        if not value or len(value) > 200 or any(ord(ch) < 32 for ch in value) or "{{" in value:
            raise ScaffoldRefused(f"{label} must be 1 to 200 printable characters (no '{{{{')",
                                  code="NAME_INVALID")
    return Names(id=plugin_id, category=category, name=name, vendor=vendor, package=package,
                 dist=plugin_id.replace(".", "-"))


def _template(relative: str) -> str:
    return (resources.files("marketplace") / "templates" / relative).read_text(encoding="utf-8")


def _render(text: str, values: Mapping[str, str], quoted: bool) -> str:
    """Replace each `{{key}}`; in code and data files values are escaped as a JSON string's inside
    (valid in Python, JSON and TOML double-quoted strings)."""
    for key, value in values.items():
        escaped = json.dumps(value, ensure_ascii=False)[1:-1] if quoted else value
        text = text.replace("{{" + key + "}}", escaped)
    return text


def render_project(names: Names) -> dict[str, str]:
    """Relative path → contents of the project `scaffold` writes."""
    values = names.values()
    files = {}
    for source, target in LAYOUT:
        quoted = not target.endswith(".md")
        text = _render(_template(source.format(category=names.category)), values, quoted)
        for key, relative in FRAGMENTS.items():  # the category's parts, rendered the same way
            fragment = _render(_template(relative.format(category=names.category)), values, quoted)
            text = text.replace("{{" + key + "}}", fragment)
        files[target.format(package=names.package)] = text
    leftover = [p for p, text in files.items() if re.search(r"\{\{[A-Za-z_]+\}\}", text)]
    if leftover:  # a template names a value this module does not give: a bug of ours
        raise ToolkitError(f"unrendered placeholders in {leftover}", code="TEMPLATE_BROKEN")
    return files


def scaffold(target: Path, category: str, plugin_id: str, *, name: str | None = None,
             vendor: str | None = None) -> list[Path]:
    """Write a new plugin project at `target` (absent or an empty folder); answer the files."""
    names = names_for(plugin_id, category, name=name, vendor=vendor)
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ScaffoldRefused(f"{target} exists and is not a folder", code="SCAFFOLD_TARGET_EXISTS")
    if target.is_dir() and any(target.iterdir()):
        raise ScaffoldRefused(f"{target} exists and is not empty; give a new or empty folder",
                              code="SCAFFOLD_TARGET_EXISTS")
    files = render_project(names)
    parse_manifest(json.loads(files[f"{names.package}/{MANIFEST_FILE}"]))  # a broken template fails here
    written = []
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# Projects.

@dataclass(frozen=True)
class PluginProject:
    directory: Path
    manifest_path: Path
    data: Mapping[str, Any]  # the manifest as written
    manifest: Manifest

    @property
    def package_dir(self) -> Path:
        return self.manifest_path.parent


def find_manifest(directory: Path) -> Path:
    """The project's `<package>/alphintra_manifest.json` (exactly one, one level down)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ProjectInvalid(f"{directory} is not a folder")
    found = sorted(p for p in directory.glob(f"*/{MANIFEST_FILE}")
                   if p.parent.name not in IGNORED_DIRS and not p.parent.name.endswith(".egg-info"))
    if len(found) != 1:
        listed = f" ({', '.join(str(p.relative_to(directory)) for p in found)})" if found else ""
        raise ProjectInvalid(
            f"{directory} is not a plugin project: expected one <package>/{MANIFEST_FILE}, found "
            f"{len(found)}{listed} (`alphintra plugin new` makes one)",
            details={"found": [str(p) for p in found]})
    return found[0]


def load_project(directory: Path) -> PluginProject:
    """Find and validate the manifest (ManifestInvalid lists its problems); the package holding
    it must be the one its entry point names."""
    directory = Path(directory).resolve()
    path = find_manifest(directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        from marketplace.manifest import ManifestInvalid

        raise ManifestInvalid(f"{path.relative_to(directory)} is not JSON: {exc}",
                              details={"errors": [{"path": "$", "message": str(exc)}]}) from None
    manifest = parse_manifest(data)
    if manifest.package != path.parent.name:
        raise ProjectInvalid(f"the manifest's entry point {manifest.entry_point} is not in the package "
                             f"that holds the manifest ({path.parent.name}/)")
    return PluginProject(directory=directory, manifest_path=path, data=data, manifest=manifest)


def source_files(directory: Path) -> dict[str, tuple[int, int]]:
    """relative path → (mtime_ns, size) of every source file (build output and caches left out):
    what `alphintra plugin dev` polls for changes."""
    directory = Path(directory)
    found: dict[str, tuple[int, int]] = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS and not d.endswith(".egg-info"))
        for name in files:
            if name.endswith(IGNORED_SUFFIXES):
                continue
            path = Path(root) / name
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed while walking
                continue
            found[path.relative_to(directory).as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return found


# Dev builds.

def dev_version(version: str, n: int) -> str:
    """The `n`th dev build's version: `1.0.0+dev.n` (semver build metadata, a PEP 440 local
    version); when that is not valid for both, the patch bumped `n` times."""
    import semver
    from packaging.version import InvalidVersion, Version

    candidate = f"{version}.dev.{n}" if "+" in version else f"{version}+dev.{n}"
    try:
        Version(candidate)
        if semver.Version.is_valid(candidate):
            return candidate
    except InvalidVersion:
        pass
    bumped = semver.Version.parse(version)
    for _ in range(n):
        bumped = bumped.bump_patch()
    return str(bumped)


def build_dev_wheel(directory: Path, version: str, out_dir: Path) -> tuple[Path, PluginProject]:
    """Build the wheel of a copy of the project whose manifest says `version`; the source is not
    touched. Answers the wheel and the project as loaded (its manifest before the change)."""
    from marketplace.build import IGNORED, build_wheel

    project = load_project(directory)
    with tempfile.TemporaryDirectory(prefix="alphintra-dev-build-") as tmp:
        copy = Path(tmp) / project.directory.name
        shutil.copytree(project.directory, copy, ignore=IGNORED)
        manifest_copy = copy / project.manifest_path.relative_to(project.directory)
        manifest_copy.write_text(json.dumps({**project.data, "version": version}, indent=2) + "\n",
                                 encoding="utf-8")
        return build_wheel(copy, out_dir), project


# The conformance kit on a source folder.

@dataclass
class KitReport:
    """What `alphintra plugin test` prints: `failures` (hook mismatches, import errors and the
    kit's own) decide; `warnings` do not (the gateway would accept the plugin, but something
    in it will never be called)."""

    plugin_id: str
    version: str
    category: str
    entry_point: str
    implemented: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KitReport:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _import_plugin(project: PluginProject) -> Any:
    """The plugin object the entry point names, imported from the project's folder."""
    folder = str(project.directory)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name, _, attribute = project.manifest.entry_point.partition(":")
    module = importlib.import_module(module_name)
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if project.directory not in origin.parents:
        raise ImportError(f"{module_name} was imported from {origin}, not from {project.directory}: "
                          "an installed copy shadows the source (pip uninstall it)")
    return getattr(module, attribute) if attribute else module


def run_kit_in_process(directory: Path) -> KitReport:
    """Import the plugin here, compare its hooks with the manifest, and run the category's kit
    (plus, for a schema extension, build its GraphQL schema as the worker would)."""
    from marketplace.conformance import compare_hooks, kit_context, local_caller, run_kit

    project = load_project(directory)
    manifest = project.manifest
    report = KitReport(plugin_id=manifest.id, version=manifest.version, category=manifest.category,
                       entry_point=manifest.entry_point)
    for hook in manifest.hooks:
        needed = HOOK_CAPABILITIES.get(hook)
        if needed and needed not in manifest.capabilities:
            report.warnings.append(f"{hook} needs the capability {needed}, which the manifest does not "
                                   "declare: the gateway will never call it")
    try:
        plugin = _import_plugin(project)
    except BaseException as exc:  # SystemExit at import is a failed import too
        if isinstance(exc, KeyboardInterrupt):
            raise
        report.failures.append(f"importing {manifest.entry_point} raised {type(exc).__name__}: {exc}"
                               + _trace_in(exc, project.directory))
        return report
    manager, implemented, problems = compare_hooks(plugin, manifest.id, manifest.hooks)
    report.implemented = list(implemented)
    if problems:
        report.failures.extend(problems)
        return report  # the gateway stops here too (MANIFEST_HOOKS_MISMATCH)
    outcome = run_kit(manifest.raw, manager, manifest.id)
    report.checks.extend(outcome.checks)
    report.failures.extend(outcome.failures)
    if SCHEMA_HOOK in manifest.hooks and not report.failures:
        _check_schema(report, local_caller(manager, kit_context(manifest.raw, manifest.id)))
    return report


def _trace_in(exc: BaseException, directory: Path) -> str:
    """The traceback's frames in the project's own files (the import machinery's are noise)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if Path(f.filename).is_absolute() and directory in Path(f.filename).resolve().parents]
    return ("\n" + "".join(traceback.format_list(frames[-5:])).rstrip()) if frames else ""


def _check_schema(report: KitReport, call: Any) -> None:
    """Build the plugin's GraphQL schema as its sandboxed worker will (plugins/guest/graphql.py)."""
    try:
        from plugins.guest.graphql import PluginGraphQL

        roots = PluginGraphQL.of(call(SCHEMA_HOOK)).roots
    except Exception as exc:
        report.failures.append(f"the schema extension does not build a GraphQL schema: "
                               f"{type(exc).__name__}: {str(exc)[:500]}")
        return
    added = [f"{root.capitalize()}.{name}" for root, names in roots.items() for name in names]
    if added:
        report.checks.append(f"GraphQL schema builds, adding {', '.join(added)}")


_CHILD = ("import sys; sys.path.append({root!r}); "
          "from marketplace.devkit import _child_main; _child_main(sys.argv[1])")


def run_kit_in_subprocess(directory: Path, *, timeout_s: float = 120.0, python: str | None = None
                          ) -> tuple[KitReport, str]:
    """`run_kit_in_process` in a fresh isolated interpreter (`python -I -B`): the plugin's imports
    never touch the caller. Answers the report and what the plugin wrote to stdout/stderr."""
    directory = Path(directory).resolve()
    load_project(directory)  # manifest problems are reported here, before a process starts
    root = str(Path(__file__).resolve().parent.parent)  # used only if the toolkit is not installed
    with tempfile.TemporaryFile(mode="w+") as out:
        try:
            done = subprocess.run([python or sys.executable, "-I", "-B", "-c", _CHILD.format(root=root),
                                   str(directory)], stdout=out, stderr=subprocess.PIPE, text=True,
                                  timeout=timeout_s, cwd=directory)
        except subprocess.TimeoutExpired:
            raise KitRunFailed(f"checking the plugin took longer than {timeout_s:g} s: its import or one "
                               "of its hooks hangs", code="KIT_TIMEOUT") from None
        out.seek(0)
        lines = out.read().strip().splitlines()
    try:
        if done.returncode != 0 or not lines:
            raise ValueError("no report")
        return KitReport.from_dict(json.loads(lines[-1])), done.stderr
    except (ValueError, TypeError):
        raise KitRunFailed(f"the process checking the plugin failed (exit {done.returncode}): "
                           f"{done.stderr[-2000:]}", details={"stderr": done.stderr[-4000:]}) from None


def _child_main(directory: str) -> None:
    """In the separate process: whatever the plugin prints goes to stderr; the report, as one JSON
    line, to the real stdout."""
    report_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    report = run_kit_in_process(Path(directory))
    report_to.write(json.dumps(report.as_dict()) + "\n")
    report_to.flush()


def describe_report(report: KitReport) -> list[str]:
    """The lines `alphintra plugin test` prints."""
    lines = [f"{report.plugin_id} {report.version} ({report.category}), entry point {report.entry_point}",
             f"hooks implemented: {', '.join(report.implemented) or 'none'}"]
    lines += [f"  ok    {check}" for check in report.checks]
    lines += [f"  warn  {warning}" for warning in report.warnings]
    for failure in report.failures:
        first, *rest = failure.splitlines()
        lines += [f"  FAIL  {first}", *(f"        {line}" for line in rest)]
    if report.ok:
        lines.append(f"passed: {len(report.checks)} check{'s' * (len(report.checks) != 1)}")
    else:
        lines.append(f"failed: {len(report.failures)} problem{'s' * (len(report.failures) != 1)}")
    return lines


def conformance_config(manifest: Manifest) -> dict[str, Any]:
    """The configuration a dev install uses unless one is given: the manifest's test values."""
    return dict(manifest.conformance.get("config") or {})
