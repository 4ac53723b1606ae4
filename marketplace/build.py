"""Build a plugin's wheel from its source directory, offline (`alphintra plugin build`).

The source is copied to a temporary directory first, so building leaves no `build/` or
`*.egg-info` behind in it, and pip runs with `--no-deps --no-build-isolation --no-index`: the
build backend (setuptools) comes from the environment, nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from marketplace.errors import ToolkitError

IGNORED = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".git")


def build_wheel(source: Path, out_dir: Path, *, timeout_s: float = 300) -> Path:
    """Build the wheel of the project at `source` into `out_dir`; answer its path."""
    source = Path(source).resolve()
    if not (source / "pyproject.toml").is_file():
        raise ToolkitError(f"{source} has no pyproject.toml", code="BUILD_FAILED")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="alphintra-build-") as tmp:
        work = Path(tmp) / source.name
        shutil.copytree(source, work, ignore=IGNORED)
        wheels = Path(tmp) / "wheels"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
             "--quiet", "--disable-pip-version-check", "-w", str(wheels), str(work)],
            capture_output=True, text=True, timeout=timeout_s, cwd=tmp)
        built = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
        if done.returncode != 0 or len(built) != 1:
            raise ToolkitError(f"building {source} failed: {(done.stderr or done.stdout)[-1500:]}",
                               code="BUILD_FAILED")
        target = out_dir / built[0].name
        shutil.copyfile(built[0], target)
    return target
