"""Per-worker cgroups: what one plugin worker may consume of the host.

A worker gets a memory limit (swap does not extend it), a CPU quota (a fraction of one core per
10 ms period, so a busy loop cannot starve the gateway) and a pids limit (a fork bomb is refused
at `pids.max`). Rlimits alone cannot do this: RLIMIT_AS counts virtual memory, not what is
resident, and RLIMIT_NPROC is per uid, not per worker.

cgroup v1 (hybrid hosts): a directory `alphintra/<name>` at the top of each of the memory, cpu
and pids hierarchies. cgroup v2: one directory `alphintra/<name>` in the unified hierarchy, with
+memory +cpu +pids delegated to it. Creating them needs root (or a delegated subtree).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time

PARENT = "alphintra"
CPU_PERIOD_US = 10_000
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses quotas under 1 ms
V1_CONTROLLERS = ("memory", "cpu", "pids")
NAME_RE = re.compile(r"[a-z0-9-]{1,60}")


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup mount."""
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
                found.append((fields[1], fields[2], set(fields[3].split(","))))
    return found


def v1_mount(controller: str) -> str | None:
    for point, fstype, options in _mounts():
        if fstype == "cgroup" and controller in options:
            return point
    return None


def v2_mount() -> str | None:
    for point, fstype, _options in _mounts():
        if fstype == "cgroup2":
            return point
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


def _read(path: str) -> str:
    with open(path, encoding="ascii") as fh:
        return fh.read()


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return 0


def _quota(cpu_fraction: float) -> int:
    return max(MIN_CPU_QUOTA_US, int(CPU_PERIOD_US * cpu_fraction))


def _rmdir(path: str, deadline: float) -> None:
    """rmdir, retrying while the last processes are still being reaped (EBUSY)."""
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return
            time.sleep(0.02)


def _fresh_dir(path: str) -> None:
    """mkdir; a leftover of a crashed gateway with the same name is removed first."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path)
    except FileExistsError:
        os.rmdir(path)  # raises EBUSY if it still holds processes: then the name is not ours
        os.mkdir(path)


class WorkerCgroup:
    """One worker's cgroup(s). v1: a directory `alphintra/<name>` under each of memory, cpu, pids;
    v2: one directory under the writable unified hierarchy with +memory +cpu +pids enabled."""

    def __init__(self, version: str, dirs: tuple[str, ...]) -> None:
        self.version = version
        self.dirs = dirs
        # every cgroup.procs file the process must be written into
        self.procs_files: tuple[str, ...] = tuple(os.path.join(d, "cgroup.procs") for d in dirs)

    @classmethod
    def create(cls, name: str, *, memory_bytes: int, cpu_fraction: float, pids: int,
               version: str) -> WorkerCgroup:
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"cgroup name must match [a-z0-9-]{{1,60}}: {name!r}")
        if version == "v1":
            return cls._create_v1(name, memory_bytes, cpu_fraction, pids)
        if version == "v2":
            return cls._create_v2(name, memory_bytes, cpu_fraction, pids)
        raise ValueError(f"unknown cgroup version {version!r}")

    @classmethod
    def _create_v1(cls, name: str, memory_bytes: int, cpu_fraction: float, pids: int) -> WorkerCgroup:
        mounts = {c: v1_mount(c) for c in V1_CONTROLLERS}
        missing = [c for c, m in mounts.items() if m is None]
        if missing:
            raise OSError(errno.ENOENT, f"cgroup v1 controllers not mounted: {missing}")
        dirs = {c: os.path.join(m, PARENT, name) for c, m in mounts.items() if m}
        group = cls("v1", tuple(dict.fromkeys(dirs.values())))  # cpu and memory may share a mount
        try:
            for d in group.dirs:
                _fresh_dir(d)
            mem = dirs["memory"]
            _write(os.path.join(mem, "memory.limit_in_bytes"), str(memory_bytes))
            memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):  # absent without swap accounting; then swap is not charged
                _write(memsw, str(memory_bytes))
            _write(os.path.join(dirs["cpu"], "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            _write(os.path.join(dirs["cpu"], "cpu.cfs_quota_us"), str(_quota(cpu_fraction)))
            _write(os.path.join(dirs["pids"], "pids.max"), str(pids))
        except BaseException:
            group.remove()
            raise
        return group

    @classmethod
    def _create_v2(cls, name: str, memory_bytes: int, cpu_fraction: float, pids: int) -> WorkerCgroup:
        root = v2_mount()
        if root is None:
            raise OSError(errno.ENOENT, "no cgroup2 mount")
        wanted = {"memory", "cpu", "pids"}
        if not wanted <= set(_read(os.path.join(root, "cgroup.controllers")).split()):
            raise OSError(errno.ENOTSUP, "cgroup2 lacks memory/cpu/pids (bound to v1 hierarchies?)")
        parent = os.path.join(root, PARENT)
        leaf = os.path.join(parent, name)
        group = cls("v2", (leaf,))
        try:
            os.makedirs(parent, exist_ok=True)
            for d in (root, parent):  # delegate the controllers down to the leaf
                if not wanted <= set(_read(os.path.join(d, "cgroup.subtree_control")).split()):
                    _write(os.path.join(d, "cgroup.subtree_control"), "+memory +cpu +pids")
            _fresh_dir(leaf)
            _write(os.path.join(leaf, "memory.max"), str(memory_bytes))
            swap = os.path.join(leaf, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")
            _write(os.path.join(leaf, "cpu.max"), f"{_quota(cpu_fraction)} {CPU_PERIOD_US}")
            _write(os.path.join(leaf, "pids.max"), str(pids))
        except BaseException:
            group.remove()
            raise
        return group

    def oom_killed(self) -> bool:
        """Best effort: did the kernel OOM-kill a process of this cgroup."""
        try:
            if self.version == "v2":
                return _counter(_read(os.path.join(self.dirs[0], "memory.events")), "oom_kill") > 0
            mem = next(d for d in self.dirs if os.path.exists(os.path.join(d, "memory.oom_control")))
            control = _read(os.path.join(mem, "memory.oom_control"))
            if "oom_kill " in control:
                return _counter(control, "oom_kill") > 0
            # old kernels: hitting the limit is the nearest sign we have
            return int(_read(os.path.join(mem, "memory.failcnt"))) > 0
        except (OSError, ValueError, StopIteration):
            return False

    def memory_used(self) -> int:
        """Bytes the worker's cgroup holds now (0 when unreadable)."""
        name = "memory.current" if self.version == "v2" else "memory.usage_in_bytes"
        for d in self.dirs:
            try:
                return int(_read(os.path.join(d, name)))
            except (OSError, ValueError):
                continue
        return 0

    def remove(self) -> None:
        """rmdir every directory (after the processes are gone; retry briefly; never raise)."""
        deadline = time.monotonic() + 1.0
        for d in self.dirs:
            with contextlib.suppress(Exception):
                _rmdir(d, deadline)
