"""Which confinement layers this host can give a plugin worker, probed once per process.

- uid: a dedicated uid per worker (needs a root gateway): no signals, ptrace or file access
  across workers or into the gateway.
- bwrap: namespaces and a minimal root file system (see launch.py); probed by actually running
  it as a worker uid, since a bwrap binary may exist where user namespaces are disabled.
- cgroups: memory, cpu and pids limits per worker (v1 on hybrid hosts, v2 when the unified
  hierarchy has the controllers); probed by creating and removing one.
- landlock, seccomp, rlimits: applied by the worker to itself (plugins/guest/confine.py);
  here we only check that the kernel and libseccomp have them.

The minimum a production host must offer is uid + landlock + seccomp + rlimits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass

from gateway.marketplace.sandbox.cgroups import WorkerCgroup
from gateway.marketplace.sandbox.launch import UID_BASE, UID_COUNT, setpriv_args

MINIMUM = ("uid", "landlock", "seccomp", "rlimits")
PROBE_UID = UID_BASE + UID_COUNT - 1  # the last uid of the range, never given to a worker by design
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class HostLayers:
    bwrap: str | None    # path of a bubblewrap that works here for the worker uid, else None
    cgroups: str | None  # "v1" or "v2" when child cgroups with memory+cpu+pids limits work
    landlock_abi: int
    seccomp: bool        # pyseccomp importable and libseccomp loadable
    dedicated_uid: bool  # we are root, so each worker can get its own uid

    def active(self) -> list[str]:
        names = []
        if self.dedicated_uid:
            names.append("uid")
        if self.bwrap:
            names.append("bwrap")
        if self.cgroups:
            names.append(f"cgroups:{self.cgroups}")
        if self.landlock_abi > 0:
            names.append(f"landlock:abi{self.landlock_abi}")
        if self.seccomp:
            names.append("seccomp")
        names.append("rlimits")  # setrlimit is always there
        return names

    def missing_minimum(self) -> list[str]:
        present = {name.split(":")[0] for name in self.active()}
        return [name for name in MINIMUM if name not in present]


def probe_landlock_abi() -> int:
    """Same probe as plugins.guest.confine.landlock_abi, which the gateway must not import."""
    if platform.machine() not in ("x86_64", "aarch64", "arm64"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # landlock_create_ruleset
    return max(int(abi), 0)


def probe_seccomp() -> bool:
    if importlib.util.find_spec("pyseccomp") is None:
        return False
    path = ctypes.util.find_library("seccomp")
    if path is None:
        return False
    try:
        ctypes.CDLL(path)
    except OSError:
        return False
    return True


def probe_bwrap() -> str | None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    if os.geteuid() == 0:
        # as root bwrap runs without a user namespace and drops to the worker uid inside
        cmd = [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--unshare-ipc",
               "--die-with-parent", *setpriv_args(PROBE_UID, "/usr/bin/setpriv"), "true"]
    else:
        cmd = [bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=PROBE_TIMEOUT_S, cwd="/",
                              env={"PATH": "/usr/bin:/bin"}, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return bwrap if done.returncode == 0 else None


def probe_cgroups() -> str | None:
    for version in ("v2", "v1"):  # v2 where the unified hierarchy has the controllers
        try:
            group = WorkerCgroup.create(f"probe-{os.getpid()}", memory_bytes=64 << 20,
                                        cpu_fraction=0.5, pids=16, version=version)
        except (OSError, ValueError):
            continue
        group.remove()
        return version
    return None


@functools.cache
def detect_layers(*, use_bwrap: bool = True, use_cgroups: bool = True) -> HostLayers:
    return HostLayers(
        bwrap=probe_bwrap() if use_bwrap else None,
        cgroups=probe_cgroups() if use_cgroups else None,
        landlock_abi=probe_landlock_abi(),
        seccomp=probe_seccomp(),
        dedicated_uid=os.geteuid() == 0,
    )
