"""The command line that starts one plugin worker inside every host layer available.

Outside in, the worker is started as:

1. `/bin/sh -c` (root): writes its own pid into the worker's cgroups, then execs the rest, so
   everything after it starts inside the memory/cpu/pids limits with no window to escape them.
2. `setpriv`: a dedicated uid/gid per worker (no supplementary groups, no capabilities, empty
   bounding set, no_new_privs): one worker cannot signal, ptrace or read the files of another,
   nor of the gateway.
3. `bwrap`: new user/pid/net/ipc/uts/cgroup namespaces (no network at all, no view of host
   processes), a root file system of /usr, ld.so.cache and the read-only binds only (no /etc,
   no /home, no gateway secrets), a private /tmp, no capabilities, a new session (no TIOCSTI
   into a terminal), and death with its parent.
4. the interpreter, which then confines itself (`plugins.guest.confine`: rlimits, Landlock,
   seccomp) before importing plugin code.

Only fork+exec of this command line: no preexec_fn (unsafe in a threaded gateway) and never a
bare fork that would leave the gateway's memory, secrets included, in the worker.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.marketplace.sandbox.cgroups import WorkerCgroup

if TYPE_CHECKING:
    from gateway.marketplace.sandbox.layers import HostLayers

UID_BASE = 62000
UID_COUNT = 2000
NAME_RE = re.compile(r"[a-z0-9-]{1,60}")
CGROUP_JOIN_FAILED = 111  # exit status of the launcher script when it cannot join the cgroups
# Host directories the sandbox needs besides the binds; merged-/usr hosts have them as symlinks.
TOP_DIRS = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
# Only the dynamic linker cache from /etc: no passwd, hosts, resolv.conf or the gateway's config.
ETC_FILES = ("/etc/ld.so.cache",)


@dataclass(frozen=True)
class LaunchSpec:
    name: str                   # unique per worker, [a-z0-9-]{1,60}
    uid: int | None             # the dedicated uid (gid = same number) when running as root, else None
    python: str                 # the interpreter to run inside (sys.executable of the gateway)
    argv: tuple[str, ...]       # arguments after the interpreter
    fd: int                     # the inherited socket fd number to keep open
    ro_binds: tuple[str, ...]   # host paths the worker must read; bound read-only at the same path
    memory_bytes: int
    cpu_fraction: float
    pids: int
    env: dict[str, str]         # the complete environment of the worker; never the gateway's


@dataclass
class Launch:
    args: list[str]
    env: dict[str, str]
    cgroup: WorkerCgroup | None
    layers: list[str]
    fd: int = field(default=-1, repr=False)

    def popen_kwargs(self) -> dict[str, Any]:
        """What to give subprocess.Popen besides args/env."""
        return {
            "pass_fds": (self.fd,) if self.fd >= 0 else (),
            "start_new_session": True,  # a signal to the gateway's process group spares workers
            "stdin": subprocess.DEVNULL,
            "close_fds": True,          # everything but pass_fds and stdio is closed
            "cwd": "/",
        }


def setpriv_args(uid: int, setpriv: str = "setpriv") -> list[str]:
    return [
        shutil.which(setpriv) or setpriv,
        f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
    ]


def _host_tree() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in TOP_DIRS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--perms", "0755", "--dir", "/etc"]  # traversable by the worker uid, otherwise empty
    for path in ETC_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    # /usr/share/zoneinfo comes with /usr; a host with it elsewhere would need a bind here
    return args


def _under_host_tree(path: Path) -> bool:
    return any(path == Path(top) or Path(top) in path.parents for top in ("/usr", *TOP_DIRS))


def bwrap_args(bwrap: str, spec: LaunchSpec, as_root: bool = False) -> list[str]:
    """As root (a dedicated uid follows), bwrap runs without a user namespace, so it can bind
    an interpreter under a path the worker uid could not traverse on the host (pyenv under
    /root): inside, the bind's parents are bwrap's own 0755 directories. setpriv then drops
    to the worker uid inside the sandbox, with every capability."""
    unshare = (["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
               if as_root else ["--unshare-all", "--cap-drop", "ALL"])
    args = [
        bwrap, *unshare, "--die-with-parent", "--new-session", "--clearenv",
        "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
        *_host_tree(),
    ]
    made: set[str] = set()
    for path in spec.ro_binds:
        # The bind's parents are bwrap's own directories: traversable, holding nothing else.
        for parent in reversed(Path(path).parents):
            if str(parent) != "/" and str(parent) not in made and not _under_host_tree(parent):
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
        args += ["--ro-bind", path, path]
    for key, value in spec.env.items():
        args += ["--setenv", key, value]
    return [*args, "--chdir", "/tmp"]


def _reachable(path: str, uid: int, mode: int, parents: bool = True) -> bool:
    """Could `uid` (no supplementary groups, gid == uid) traverse to `path` and use it with `mode`?
    os.access would answer for root."""
    target = Path(os.path.realpath(path))
    chain = [(d, 0o1) for d in reversed(target.parents)] if parents else []
    for current, want in [*chain, (target, mode)]:
        try:
            st = current.stat()
        except OSError:
            return False
        shift = 6 if st.st_uid == uid else 3 if st.st_gid == uid else 0
        if (stat.S_IMODE(st.st_mode) >> shift) & want != want:
            return False
    return True


def check_reachable(spec: LaunchSpec, parents: bool = True) -> None:
    """Fail early, with the path named, instead of an EACCES from deep inside setpriv or bwrap
    (bwrap resolves its bind sources as the worker uid). A python under /root (pyenv) is the
    classic case."""
    if spec.uid is None:
        return
    wanted = [(spec.python, 0o5)] + [(p, 0o4) for p in spec.ro_binds]
    for path, mode in wanted:
        if not _reachable(path if parents else os.path.realpath(path), spec.uid, mode, parents):
            raise PermissionError(f"{path} is not reachable by worker uid {spec.uid}; "
                                  "install the interpreter and plugins under world-readable paths")


def _validate(spec: LaunchSpec, layers: HostLayers) -> None:
    if not NAME_RE.fullmatch(spec.name):
        raise ValueError(f"worker name must match [a-z0-9-]{{1,60}}: {spec.name!r}")
    if spec.uid is not None:
        if not UID_BASE <= spec.uid < UID_BASE + UID_COUNT:
            raise ValueError(f"worker uid {spec.uid} outside [{UID_BASE}, {UID_BASE + UID_COUNT})")
        if not layers.dedicated_uid:
            raise ValueError("a dedicated uid needs a root gateway")
    if spec.fd < 3:
        raise ValueError("the worker's socket must not be stdin/stdout/stderr")
    for path in spec.ro_binds:
        if not os.path.isabs(path) or not os.path.exists(path):
            raise FileNotFoundError(f"ro_bind {path!r} must be an existing absolute path")
    # bwrap as root binds each path itself; only the targets' own modes matter then
    check_reachable(spec, parents=not layers.bwrap)


def _join_cgroup_script(cgroup: WorkerCgroup, env: dict[str, str]) -> str:
    joins = " && ".join(f"echo $$ > {shlex.quote(f)}" for f in cgroup.procs_files)
    # dash exports PWD to what it execs; the worker's environment must be exactly `env`
    unset = "" if "PWD" in env else "unset PWD; "
    return f'{unset}{{ {joins}; }} || exit {CGROUP_JOIN_FAILED}; exec "$@"'


def prepare(spec: LaunchSpec, layers: HostLayers) -> Launch:
    """The command for Popen. Creates the worker's cgroup when cgroups are active: the caller
    owns `Launch.cgroup` and must `remove()` it once the worker is gone (also when Popen fails)."""
    _validate(spec, layers)
    args = [spec.python, *spec.argv]
    active: list[str] = []
    if spec.uid is not None:
        args = setpriv_args(spec.uid, "/usr/bin/setpriv" if layers.bwrap else "setpriv") + args
        active.append("uid")
    if layers.bwrap:
        args = bwrap_args(layers.bwrap, spec, as_root=spec.uid is not None) + args
        active.append("bwrap")
    cgroup = None
    if layers.cgroups:
        cgroup = WorkerCgroup.create(spec.name, memory_bytes=spec.memory_bytes,
                                     cpu_fraction=spec.cpu_fraction, pids=spec.pids,
                                     version=layers.cgroups)
        args = ["/bin/sh", "-c", _join_cgroup_script(cgroup, spec.env), "sh", *args]
        active.append(f"cgroups:{layers.cgroups}")
    return Launch(args=args, env=dict(spec.env), cgroup=cgroup, layers=active, fd=spec.fd)
