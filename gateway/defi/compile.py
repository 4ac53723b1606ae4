"""Compile the project's Vyper contracts with the vyper package (no solc, no download).

Results are cached by a hash of the source and the compiler version: in memory for the
process, and on disk (JSON) so `make run` and test runs do not pay the ~1 s compile each time.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import os
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).parent / "contracts"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "alphintra" / "vyper"

_lock = threading.Lock()  # the compiler is not re-entrant; one compile at a time per process
VYPER_PRECISION = 78  # the decimal digits vyper works with


def vyper_decimals() -> AbstractContextManager[decimal.Context]:
    """A context for importing and calling vyper: its import sets the calling thread's decimal
    context to 78 digits for good, which must not leak into the gateway's money arithmetic."""
    return decimal.localcontext(prec=VYPER_PRECISION)
_memory: dict[str, CompiledContract] = {}  # a cache of pure results keyed by content hash


@dataclass(frozen=True)
class CompiledContract:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str  # 0x-prefixed init code


class ContractNotFound(LookupError):
    pass


def source_of(name: str) -> str:
    path = CONTRACTS_DIR / f"{name}.vy"
    if not path.is_file():
        raise ContractNotFound(f"no contract {name!r} in {CONTRACTS_DIR}")
    return path.read_text()


def _digest(source: str) -> str:
    with vyper_decimals():
        import vyper

    return hashlib.sha256(f"{vyper.__version__}\n{source}".encode()).hexdigest()


def compile_contract(name: str, cache_dir: Path | None = None) -> CompiledContract:
    """The ABI and init bytecode of gateway/defi/contracts/<name>.vy."""
    source = source_of(name)
    digest = _digest(source)
    key = f"{name}:{digest}"
    with _lock:
        hit = _memory.get(key)
        if hit is not None:
            return hit
        directory = cache_dir or DEFAULT_CACHE_DIR
        path = directory / f"{name}-{digest[:32]}.json"
        compiled = _read(path, name)
        if compiled is None:
            compiled = _compile(name, source)
            _write(path, compiled)
        _memory[key] = compiled
        return compiled


def _compile(name: str, source: str) -> CompiledContract:
    with vyper_decimals():
        from vyper.compiler import compile_code

        out = compile_code(source, contract_path=f"{name}.vy", output_formats=["abi", "bytecode"])
    return CompiledContract(name=name, abi=out["abi"], bytecode=out["bytecode"])


def _read(path: Path, name: str) -> CompiledContract | None:
    try:
        data = json.loads(path.read_text())
        return CompiledContract(name=name, abi=data["abi"], bytecode=data["bytecode"])
    except (OSError, ValueError, KeyError):
        return None


def _write(path: Path, compiled: CompiledContract) -> None:
    # Write then rename, so a concurrent reader never sees half a file; an unwritable cache
    # directory only costs a recompile next time.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"abi": compiled.abi, "bytecode": compiled.bytecode}))
        tmp.replace(path)
    except OSError:
        pass
