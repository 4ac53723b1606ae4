"""In-process confinement of a plugin worker: the layers a process applies to itself.

Runs inside the worker, before any plugin code is imported, and is irreversible:

- rlimits: no core dumps (they would leak a tenant's data to disk), a cap on address space, open
  files and the size of any file written.
- no_new_privs: exec can never gain privileges (setuid binaries, file capabilities); it is also
  what lets an unprivileged process install Landlock and seccomp filters.
- Landlock: the file system shrinks to `read_paths` (read + execute, for .so loading) and
  `write_paths`; every TCP bind/connect is denied (ABI >= 4), and so are signals to and abstract
  unix sockets of processes outside the sandbox (ABI >= 6).
- seccomp: creating sockets, namespaces, tracing other processes, loading kernel code, mounting,
  keyrings, bpf, io_uring and the like answer EPERM; the inherited socket stays usable, and
  threads and plain fork keep working.

Only the standard library and `pyseccomp` (a ctypes binding of the system libseccomp) are
imported: this module is loaded by the worker, which must not import the gateway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import resource
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Confinement", "ConfinementFailed", "apply", "landlock_abi", "seccomp_available"]


@dataclass(frozen=True)
class Confinement:
    read_paths: tuple[str, ...]        # files/dirs readable (and executable for .so loading), nothing else
    write_paths: tuple[str, ...] = ()  # dirs writable (a private tmp), usually empty
    memory_bytes: int | None = None    # RLIMIT_AS
    max_open_files: int = 256          # RLIMIT_NOFILE
    max_file_bytes: int = 64 << 20     # RLIMIT_FSIZE
    landlock: bool = True
    seccomp: bool = True


class ConfinementFailed(RuntimeError):
    """A requested layer could not be applied; the caller decides whether that is fatal."""


# ---------------------------------------------------------------------------------------------
# libc access

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int

PR_SET_NO_NEW_PRIVS = 38

# Same numbers on x86_64 and aarch64 (Landlock arrived after the syscall tables were unified).
_LANDLOCK_SYSCALLS: dict[str, tuple[int, int, int]] = {
    "x86_64": (444, 445, 446),
    "aarch64": (444, 445, 446),
    "arm64": (444, 445, 446),
}


def _errno_failure(what: str) -> ConfinementFailed:
    err = ctypes.get_errno()
    return ConfinementFailed(f"{what}: {os.strerror(err)} (errno {err})")


# ---------------------------------------------------------------------------------------------
# rlimits and no_new_privs


def _set_rlimits(c: Confinement) -> None:
    limits = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, c.max_open_files),
        (resource.RLIMIT_FSIZE, c.max_file_bytes),
    ]
    if c.memory_bytes is not None:
        limits.append((resource.RLIMIT_AS, c.memory_bytes))
    for which, value in limits:
        try:
            # soft == hard: the worker can never raise it back
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError) as exc:
            raise ConfinementFailed(f"setrlimit({which}, {value}): {exc}") from exc


def _no_new_privs() -> None:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _errno_failure("prctl(PR_SET_NO_NEW_PRIVS)")


# ---------------------------------------------------------------------------------------------
# Landlock (see Documentation/userspace-api/landlock.rst)

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1

ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13      # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14   # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5

ACCESS_NET_BIND_TCP = 1 << 0     # ABI 4
ACCESS_NET_CONNECT_TCP = 1 << 1  # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1                # ABI 6

_FS_ABI1 = (1 << 13) - 1
# Rights that make sense on a regular file; the kernel rejects directory rights on a file rule.
_FILE_RIGHTS = ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE \
    | ACCESS_FS_IOCTL_DEV
_READ_RIGHTS = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR | ACCESS_FS_EXECUTE


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the uapi header: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock_numbers() -> tuple[int, int, int] | None:
    return _LANDLOCK_SYSCALLS.get(platform.machine())


def landlock_abi() -> int:
    """The Landlock ABI version of the running kernel, 0 when unavailable (or disabled at boot)."""
    numbers = _landlock_numbers()
    if numbers is None:
        return 0
    abi = _libc.syscall(numbers[0], None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(abi), 0)


def _handled_fs(abi: int) -> int:
    """Every FS right the ABI knows: an unhandled right would simply be allowed."""
    rights = _FS_ABI1
    if abi >= 2:
        rights |= ACCESS_FS_REFER
    if abi >= 3:
        rights |= ACCESS_FS_TRUNCATE
    if abi >= 5:
        rights |= ACCESS_FS_IOCTL_DEV
    return rights


def _ruleset_attr(abi: int) -> tuple[_RulesetAttr, int]:
    attr = _RulesetAttr(handled_access_fs=_handled_fs(abi))
    size = 8  # ABI 1-3 know only handled_access_fs
    if abi >= 4:
        # handled with no rule at all: every TCP bind and connect is denied
        attr.handled_access_net = ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
    return attr, size


def _add_path_rule(ruleset_fd: int, path: str, rights: int, add_rule: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # a path that does not exist grants nothing
    except OSError as exc:
        raise ConfinementFailed(f"landlock: cannot open {path}: {exc}") from exc
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if _libc.syscall(add_rule, ctypes.c_int(ruleset_fd), LANDLOCK_RULE_PATH_BENEATH,
                         ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            raise _errno_failure(f"landlock_add_rule({path})")
    finally:
        os.close(fd)


def _apply_landlock(c: Confinement) -> int:
    abi = landlock_abi()
    numbers = _landlock_numbers()
    if abi < 1 or numbers is None:
        raise ConfinementFailed("landlock is not available on this kernel")
    create, add_rule, restrict = numbers
    attr, size = _ruleset_attr(abi)
    ruleset_fd = _libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset_fd < 0:
        raise _errno_failure("landlock_create_ruleset")
    ruleset_fd = int(ruleset_fd)
    try:
        handled = attr.handled_access_fs
        for path in c.read_paths:
            _add_path_rule(ruleset_fd, path, _READ_RIGHTS & handled, add_rule)
        for path in c.write_paths:
            _add_path_rule(ruleset_fd, path, handled, add_rule)
        if _libc.syscall(restrict, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)) != 0:
            raise _errno_failure("landlock_restrict_self")
    finally:
        os.close(ruleset_fd)
    return abi


# ---------------------------------------------------------------------------------------------
# seccomp

# Answered EPERM unconditionally. None of these is needed by a Python worker that talks over an
# inherited socket; names the running libseccomp does not know (other architectures) are skipped.
DENIED_SYSCALLS: tuple[str, ...] = (
    # new sockets: the inherited one is the only channel (send/recv on it stay allowed)
    "socket", "socketpair",
    # other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
    # namespaces and mounts (old and new mount API)
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # kernel keyrings, bpf, perf, userfaultfd (common kernel exploit primitives)
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    # kernel code and machine state
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm",
    # file handles bypass path-based checks
    "open_by_handle_at", "name_to_handle_at",
    # io_uring performs syscalls the filter never sees
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # identity changes: no_new_privs already makes them harmless, deny anyway
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
    "setfsuid", "setfsgid", "setgroups", "capset",
)

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
# CLONE_NEWNET | CLONE_NEWTIME
CLONE_NAMESPACE_FLAGS: tuple[int, ...] = (
    0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080,
)
PERSONALITY_QUERY = 0xFFFFFFFF
LIBSECCOMP_SONAME = "libseccomp.so.2"


def _import_pyseccomp() -> Any:
    """pyseccomp resolves libseccomp with ctypes.util.find_library, which runs ldconfig, gcc and
    tempfile: slow, and impossible once Landlock is on. Its soname is stable, so hand it over."""
    if "pyseccomp" in sys.modules:
        return sys.modules["pyseccomp"]
    real = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        if name == "seccomp":
            try:
                ctypes.CDLL(LIBSECCOMP_SONAME)
                return LIBSECCOMP_SONAME
            except OSError:
                pass
        return real(name)

    ctypes.util.find_library = find_library
    try:
        import pyseccomp
    finally:
        ctypes.util.find_library = real
    return pyseccomp


def seccomp_available() -> bool:
    """pyseccomp importable, libseccomp loadable and the kernel has seccomp filters."""
    try:
        _import_pyseccomp()
    except (ImportError, OSError, RuntimeError):
        return False
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return any(line.startswith("Seccomp:") for line in fh)
    except OSError:
        return True  # no /proc (inside a bare chroot): assume a modern kernel


def _add_denials(flt: object, names: Iterable[str], action: int) -> None:
    for name in names:
        try:
            flt.add_rule(action, name)  # type: ignore[attr-defined]
        except (OSError, ValueError, RuntimeError):
            # unknown syscall on this architecture (e.g. iopl on aarch64)
            continue


def _load_pyseccomp() -> Any:
    try:
        return _import_pyseccomp()
    except (ImportError, OSError, RuntimeError) as exc:
        raise ConfinementFailed(f"seccomp: pyseccomp/libseccomp unavailable: {exc}") from exc


def _apply_seccomp(sc: Any) -> None:
    eperm = sc.ERRNO(errno.EPERM)
    try:
        flt = sc.SyscallFilter(sc.ALLOW)
        # syscalls of a foreign ABI (int 0x80 on x86_64, x32) would bypass the rules: kill
        flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
        # threads already running must not stay unfiltered
        flt.set_attr(sc.Attr.CTL_TSYNC, 1)
        _add_denials(flt, DENIED_SYSCALLS, eperm)
        # ENOSYS makes glibc fall back to clone, whose flags (unlike clone3's struct) are visible
        flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        for flag in CLONE_NAMESPACE_FLAGS:
            flt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        # only the query is harmless; setting e.g. ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC is not
        flt.add_rule(eperm, "personality", sc.Arg(0, sc.NE, PERSONALITY_QUERY))
        flt.load()
    except OSError as exc:
        raise ConfinementFailed(f"seccomp: {exc}") from exc


# ---------------------------------------------------------------------------------------------


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def apply(c: Confinement) -> list[str]:
    """Confine the calling process irreversibly; answer the layers applied, e.g.
    ["rlimits", "no_new_privs", "landlock:abi7", "seccomp"]. Raises ConfinementFailed if a
    requested layer cannot be applied (the caller decides whether that is fatal)."""
    if c.landlock and _thread_count() > 1:
        # Landlock and no_new_privs bind only the calling thread: any other would stay free
        raise ConfinementFailed("apply() must run while the process has a single thread")
    # imported first: it reads files (and with no shortcut would run ldconfig) Landlock may forbid
    sc = _load_pyseccomp() if c.seccomp else None
    applied: list[str] = []
    _set_rlimits(c)
    applied.append("rlimits")
    _no_new_privs()
    applied.append("no_new_privs")
    if c.landlock:
        applied.append(f"landlock:abi{_apply_landlock(c)}")
    if c.seccomp:
        _apply_seccomp(sc)  # last: the steps above need prctl and the landlock syscalls
        applied.append("seccomp")
    return applied
