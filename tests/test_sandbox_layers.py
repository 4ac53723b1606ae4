"""The plugin sandbox's layers against real attacks, on the real kernel (no mocks).

Every test spawns a worker-like child through `launch.prepare` + `subprocess.Popen`. The child runs
PROBE: it confines itself with `plugins.guest.confine.apply`, tries each attack it is asked to and
reports over the inherited socketpair end. Each layer is also run with the layer off, where that
is cheap, so an assertion that an attack is blocked cannot pass vacuously.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from gateway.marketplace.sandbox.cgroups import WorkerCgroup
from gateway.marketplace.sandbox.launch import UID_BASE, LaunchSpec, _reachable, prepare
from gateway.marketplace.sandbox.layers import HostLayers, detect_layers

ROOT = Path(__file__).resolve().parents[1]
GUEST_DIR = ROOT / "plugins" / "guest"
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
CANARY = "ALPHINTRA_SANDBOX_CANARY"
MiB = 1 << 20
WORKER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
              "OPENBLAS_NUM_THREADS": "1"}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dedicated uids and cgroups need root")

PROBE = r'''
import ctypes, errno, json, os, socket, sys, threading, time

cfg = json.loads(sys.argv[sys.argv.index("--cfg") + 1])
chan = socket.socket(fileno=int(sys.argv[sys.argv.index("--fd") + 1]))
sys.path[:0] = cfg["sys_path"]  # -S: no site; confine is imported on its own, not via plugins/
libc = ctypes.CDLL(None, use_errno=True)


def send(obj):
    chan.sendall((json.dumps(obj) + "\n").encode())


def outcome(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    except Exception as exc:
        return type(exc).__name__


def check(rc):
    if rc == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def read(path):
    with open(path) as fh:
        fh.read(1)


def ptrace_child():
    pid = os.fork()
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    try:
        check(libc.ptrace(16, pid, None, None))  # PTRACE_ATTACH
        os.waitpid(pid, 0)
        libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def unshare_in_child():
    pid = os.fork()
    if pid == 0:  # a child: a new user namespace would change what the later attacks mean
        rc = libc.unshare(0x10000000)  # CLONE_NEWUSER
        os._exit(0 if rc == 0 else ctypes.get_errno())
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code:
        raise OSError(code, os.strerror(code))


def thread_works():
    box = []
    t = threading.Thread(target=lambda: box.append(sum(range(1000))))
    t.start()
    t.join(5)
    assert box == [499500]


def imports_work():
    import msgpack, numpy
    assert int(numpy.arange(10).sum()) == 45
    assert msgpack.unpackb(msgpack.packb({"a": [1, 2]})) == {"a": [1, 2]}


def fork_bomb():
    r, w = os.pipe()
    children, refused = [], 0
    for _ in range(100):
        try:
            pid = os.fork()
        except OSError:
            refused += 1
            continue
        if pid == 0:
            os.close(w)
            os.read(r, 1)  # parked until the parent closes the pipe
            os._exit(0)
        children.append(pid)
    os.close(w)
    for pid in children:
        os.waitpid(pid, 0)
    return refused


def touch_memory():
    block = b"\x01" * cfg["touch"]  # written, so resident: counted by the memory cgroup
    return len(block)


pre_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # made before confinement
ATTACKS = {
    "etc_passwd": lambda: outcome(lambda: read("/etc/passwd")),
    "secret": lambda: outcome(lambda: read(cfg["secret"])),
    "socket": lambda: outcome(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
    "tcp_connect": lambda: outcome(lambda: pre_tcp.connect(("127.0.0.1", cfg["port"]))),
    "kill_parent": lambda: outcome(lambda: os.kill(cfg["parent"], 0)),
    "ptrace": lambda: outcome(ptrace_child),
    "unshare": lambda: outcome(unshare_in_child),
    "clone3": lambda: outcome(lambda: check(libc.syscall(435, None, 0))),
    "personality": lambda: outcome(lambda: check(libc.personality(0x0040000))),  # ADDR_NO_RANDOMIZE
    "memory": lambda: outcome(lambda: bytes(cfg["alloc"])),  # calloc: lazy, nothing resident
    "threads": lambda: outcome(thread_works),
    "imports": lambda: outcome(imports_work),
    "environ": lambda: dict(os.environ),
    "uid": lambda: [os.getuid(), os.getgid(), os.getgroups()],
    "fork_bomb": fork_bomb,
    "touch_memory": touch_memory,
}

applied = []
if cfg.get("thread_before"):  # a thread that would escape Landlock, had apply() not refused
    threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
if cfg["confine"] is not None:
    import confine
    try:
        applied = confine.apply(confine.Confinement(**cfg["confine"]))
    except confine.ConfinementFailed as exc:
        applied = "ConfinementFailed: " + str(exc)
send({"ready": applied})
for name in cfg["attacks"]:
    send({name: ATTACKS[name]()})
send({"done": True})
'''


@dataclass
class Outcome:
    results: dict[str, object]
    returncode: int
    startup_s: float  # Popen to the first message (the probe confined and ready)
    oom_killed: bool  # read before the cgroup is removed


_uids = iter(range(UID_BASE + 1, UID_BASE + 1000))


def worker_python(uid: int) -> str:
    """The gateway's interpreter when the worker uid can reach it; else the system's python of the
    same version (a pyenv interpreter under a 0700 /root cannot be exec'd by another uid)."""
    candidates = [sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"]
    for python in candidates:
        if os.path.exists(python) and _reachable(python, uid, 0o5):
            return python
    pytest.skip("no interpreter of this version reachable by a worker uid")


@pytest.fixture(scope="module")
def dirs() -> Iterator[dict[str, str]]:
    """A probe dir the worker can read (under /tmp itself: pytest's tmp dirs sit in a 0700 dir)
    and a secret in a 0700 root-only dir outside every read path."""
    probe_dir = tempfile.mkdtemp(prefix="alphintra-probe-", dir="/tmp")
    secret_dir = tempfile.mkdtemp(prefix="alphintra-secret-", dir="/tmp")
    try:
        os.chmod(probe_dir, 0o755)
        probe = Path(probe_dir, "probe.py")
        probe.write_text(PROBE)
        probe.chmod(0o644)
        secret = Path(secret_dir, "secret.txt")
        secret.write_text("tenant-a api key\n")
        secret.chmod(0o600)
        yield {"probe_dir": probe_dir, "probe": str(probe), "secret": str(secret)}
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
        shutil.rmtree(secret_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback that a confined worker must not reach."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@pytest.fixture(autouse=True)
def canary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANARY, "gateway-secret")


def read_paths(python: str, dirs: dict[str, str]) -> list[str]:
    prefix = str(Path(os.path.realpath(python)).parents[1])  # /usr for /usr/bin/python3.11
    return [prefix, "/usr", "/lib", "/lib64", "/etc/ld.so.cache", SITE_PACKAGES, str(GUEST_DIR),
            dirs["probe_dir"]]


def run_probe(dirs: dict[str, str], layers: HostLayers, attacks: list[str], *,
              uid: int | None = None, confine: dict | None = None, port: int = 0,
              memory: int = 512 * MiB, pids: int = 64, extra: dict | None = None,
              timeout: float = 30.0) -> Outcome:
    python = worker_python(uid if uid is not None else UID_BASE)
    parent, child = socket.socketpair()
    cfg = {
        "sys_path": [str(GUEST_DIR), SITE_PACKAGES], "secret": dirs["secret"], "port": port,
        "parent": os.getpid(), "attacks": attacks, "alloc": 1024 * MiB, "touch": 0,
        "confine": None if confine is None else {"read_paths": read_paths(python, dirs), **confine},
        **(extra or {}),
    }
    spec = LaunchSpec(
        name=f"test-{os.getpid()}-{next(_uids)}", uid=uid, python=python,
        argv=("-I", "-S", dirs["probe"], "--fd", str(child.fileno()), "--cfg", json.dumps(cfg)),
        fd=child.fileno(), ro_binds=(SITE_PACKAGES, str(GUEST_DIR), dirs["probe_dir"]),
        memory_bytes=memory, cpu_fraction=1.0, pids=pids,
        env=WORKER_ENV,
    )
    launch = prepare(spec, layers)
    results: dict[str, object] = {}
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(launch.args, env=launch.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, **launch.popen_kwargs())
        child.close()
        parent.settimeout(timeout)
        startup = float("nan")
        with contextlib.suppress(TimeoutError, OSError), parent.makefile("r") as lines:
            for line in lines:
                if not results:
                    startup = time.perf_counter() - started
                results.update(json.loads(line))
        _out, err = proc.communicate(timeout=timeout)
        if "done" not in results and "touch_memory" not in attacks:
            pytest.fail(f"probe died (rc {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        oom = launch.cgroup is not None and launch.cgroup.oom_killed()
        return Outcome(results, proc.returncode, startup, oom)
    finally:
        parent.close()
        if launch.cgroup is not None:
            launch.cgroup.remove()


def bare(layers: HostLayers) -> HostLayers:
    """No host layers at all: only what the probe applies to itself."""
    return replace(layers, bwrap=None, cgroups=None)


LANDLOCK_ATTACKS = ["etc_passwd", "secret", "tcp_connect", "kill_parent"]
SECCOMP_ATTACKS = ["socket", "ptrace", "unshare", "clone3", "personality"]
ALL_ATTACKS = [*LANDLOCK_ATTACKS, *SECCOMP_ATTACKS, "memory", "threads", "imports", "environ",
               "uid"]
OFF = {"landlock": False, "seccomp": False}


# ---------------------------------------------------------------------------------------------


@needs_root
def test_detect_layers_reports_every_layer_of_this_host() -> None:
    started = time.perf_counter()
    layers = detect_layers()
    assert time.perf_counter() - started < 1.0 or detect_layers.cache_info().hits
    assert layers.missing_minimum() == []
    assert layers.dedicated_uid and layers.seccomp and layers.landlock_abi >= 1
    if shutil.which("bwrap"):
        assert layers.bwrap == shutil.which("bwrap")
    assert layers.cgroups in ("v1", "v2")
    assert layers.active() == ["uid", "bwrap", f"cgroups:{layers.cgroups}",
                               f"landlock:abi{layers.landlock_abi}", "seccomp", "rlimits"]
    # not vacuous: switched off, they are reported missing
    off = detect_layers(use_bwrap=False, use_cgroups=False)
    assert off.bwrap is None and off.cgroups is None
    assert HostLayers(None, None, 0, False, False).missing_minimum() == list(
        ("uid", "landlock", "seccomp"))


@needs_root
def test_all_layers_block_every_attack(dirs: dict[str, str], listener: int) -> None:
    layers = detect_layers()
    uid = next(_uids)
    out = run_probe(dirs, layers, ALL_ATTACKS, uid=uid, port=listener,
                    confine={"memory_bytes": 512 * MiB})
    r = out.results
    assert r["ready"] == ["rlimits", "no_new_privs", f"landlock:abi{layers.landlock_abi}", "seccomp"]
    assert r["uid"] == [uid, uid, []]
    for attack in [*LANDLOCK_ATTACKS, *SECCOMP_ATTACKS, "memory"]:
        assert r[attack] != "ok", attack
    assert r["socket"] == "EPERM" and r["ptrace"] == "EPERM" and r["unshare"] == "EPERM"
    assert r["memory"] == "MemoryError"
    assert r["threads"] == "ok" and r["imports"] == "ok"
    assert CANARY not in r["environ"]
    # bwrap always exports PWD (its --chdir); nothing else comes from anywhere but the spec
    assert r["environ"] == {**WORKER_ENV, "PWD": "/tmp"}
    assert out.returncode == 0
    assert not out.oom_killed


@needs_root
def test_landlock_blocks_files_tcp_and_signals(dirs: dict[str, str], listener: int) -> None:
    layers = bare(detect_layers())  # as root, no uid and no bwrap: only Landlock stands in the way
    if layers.landlock_abi < 6:
        pytest.skip("signal scoping needs Landlock ABI 6")
    free = run_probe(dirs, layers, LANDLOCK_ATTACKS, port=listener, confine=OFF).results
    assert [free[a] for a in LANDLOCK_ATTACKS] == ["ok"] * 4
    locked = run_probe(dirs, layers, [*LANDLOCK_ATTACKS, "imports", "threads"], port=listener,
                       confine={"landlock": True, "seccomp": False}).results
    assert locked["etc_passwd"] == "EACCES" and locked["secret"] == "EACCES"
    assert locked["tcp_connect"] == "EACCES"  # a socket made before confinement is no way out
    assert locked["kill_parent"] == "EPERM"
    assert locked["imports"] == "ok" and locked["threads"] == "ok"


@needs_root
def test_seccomp_blocks_sockets_ptrace_namespaces(dirs: dict[str, str]) -> None:
    layers = bare(detect_layers())
    free = run_probe(dirs, layers, SECCOMP_ATTACKS, confine=OFF).results
    assert [free[a] for a in SECCOMP_ATTACKS] == ["ok", "ok", "ok", "EINVAL", "ok"]
    filtered = run_probe(dirs, layers, [*SECCOMP_ATTACKS, "threads", "imports"],
                         confine={"landlock": False, "seccomp": True}).results
    assert [filtered[a] for a in SECCOMP_ATTACKS] == ["EPERM", "EPERM", "EPERM", "ENOSYS", "EPERM"]
    assert filtered["threads"] == "ok" and filtered["imports"] == "ok"


@needs_root
def test_apply_refuses_a_process_that_already_runs_threads(dirs: dict[str, str]) -> None:
    layers = bare(detect_layers())
    ready = run_probe(dirs, layers, [], confine={}, extra={"thread_before": True}).results["ready"]
    assert isinstance(ready, str) and ready.startswith("ConfinementFailed")
    calm = run_probe(dirs, layers, [], confine={}).results["ready"]
    assert isinstance(calm, list) and "seccomp" in calm


@needs_root
def test_rlimit_as_turns_a_huge_allocation_into_memory_error(dirs: dict[str, str]) -> None:
    layers = bare(detect_layers())
    assert run_probe(dirs, layers, ["memory"], confine=OFF).results["memory"] == "ok"
    capped = run_probe(dirs, layers, ["memory"], confine={**OFF, "memory_bytes": 256 * MiB})
    assert capped.results["memory"] == "MemoryError"


@needs_root
def test_dedicated_uid_alone_keeps_root_files_and_the_gateway_out(dirs: dict[str, str]) -> None:
    layers = bare(detect_layers())
    uid = next(_uids)
    r = run_probe(dirs, replace(layers, cgroups=detect_layers().cgroups),
                  ["secret", "kill_parent", "uid", "environ"], uid=uid, confine=OFF).results
    assert r["uid"] == [uid, uid, []]
    assert r["environ"] == WORKER_ENV  # exactly, through the cgroup-joining sh and setpriv
    assert r["secret"] == "EACCES" and r["kill_parent"] == "EPERM"


@needs_root
def test_bwrap_hides_etc_host_processes_and_network(dirs: dict[str, str], listener: int) -> None:
    layers = detect_layers()
    if layers.bwrap is None:
        pytest.skip("bubblewrap does not work here")
    uid = next(_uids)
    r = run_probe(dirs, replace(layers, cgroups=None), ["etc_passwd", "secret", "kill_parent",
                  "socket", "tcp_connect", "environ", "uid"], uid=uid, port=listener,
                  confine=OFF).results
    assert r["etc_passwd"] == "ENOENT" and r["secret"] == "ENOENT"  # not in the sandbox at all
    assert r["kill_parent"] == "ESRCH"  # another pid namespace
    assert r["socket"] == "ok" and r["tcp_connect"] in ("ECONNREFUSED", "ENETUNREACH")
    assert r["uid"] == [uid, uid, []]
    assert r["environ"] == {**WORKER_ENV, "PWD": "/tmp"}


@needs_root
def test_pids_limit_refuses_a_fork_bomb(dirs: dict[str, str]) -> None:
    layers = detect_layers()
    if layers.cgroups is None:
        pytest.skip("no cgroups here")
    free = run_probe(dirs, bare(layers), ["fork_bomb"], uid=next(_uids), confine=OFF)
    assert free.results["fork_bomb"] == 0
    out = run_probe(dirs, layers, ["fork_bomb", "threads"], uid=next(_uids), pids=20,
                    confine={"landlock": True, "seccomp": True})
    assert out.results["fork_bomb"] >= 80  # sh/setpriv exec'd away; bwrap + python hold a few
    assert out.results["threads"] == "ok"


@needs_root
def test_memory_cgroup_kills_a_worker_past_its_limit(dirs: dict[str, str]) -> None:
    layers = detect_layers()
    if layers.cgroups is None:
        pytest.skip("no cgroups here")
    # without bwrap the probe is the process Popen sees, so its SIGKILL is visible as such
    out = run_probe(dirs, replace(layers, bwrap=None), ["touch_memory"], uid=next(_uids),
                    memory=96 * MiB, confine=OFF, extra={"touch": 256 * MiB})
    assert out.returncode == -9 and "touch_memory" not in out.results
    assert out.oom_killed


@needs_root
def test_cgroup_files_carry_the_limits() -> None:
    layers = detect_layers()
    if layers.cgroups is None:
        pytest.skip("no cgroups here")
    group = WorkerCgroup.create(f"limits-{os.getpid()}", memory_bytes=200 * MiB, cpu_fraction=0.25,
                                pids=7, version=layers.cgroups)
    try:
        text = {name: Path(d, name).read_text().strip() for d in group.dirs
                for name in ("memory.limit_in_bytes", "cpu.cfs_quota_us", "cpu.cfs_period_us",
                             "pids.max", "memory.max", "cpu.max") if Path(d, name).exists()}
        if layers.cgroups == "v1":
            assert text["memory.limit_in_bytes"] == str(200 * MiB)
            assert (text["cpu.cfs_quota_us"], text["cpu.cfs_period_us"]) == ("2500", "10000")
        else:
            assert text["memory.max"] == str(200 * MiB) and text["cpu.max"] == "2500 10000"
        assert text["pids.max"] == "7"
        assert all(Path(f).exists() for f in group.procs_files)
    finally:
        group.remove()
    assert not any(Path(d).exists() for d in group.dirs)


@needs_root
def test_start_overhead_of_all_layers(dirs: dict[str, str]) -> None:
    layers = detect_layers()
    plain = min(run_probe(dirs, bare(layers), []).startup_s for _ in range(3))
    full = min(run_probe(dirs, layers, [], uid=next(_uids), confine={}).startup_s for _ in range(3))
    print(f"\nworker start: plain python {plain * 1000:.0f} ms, all layers {full * 1000:.0f} ms")
    assert full < plain + 1.0  # the layers must not make a worker start noticeably slow
