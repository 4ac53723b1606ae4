"""A plugin worker: one process per (tenant, plugin version), run by the gateway as

    python -I -S .../plugins/guest/main.py --fd N --sdk .../plugins --path <site-packages>...

It talks to the gateway over the inherited socket `N` only (plugins/wire.py). The first
message is `init`: the unpacked wheel's directory, the entry point, the tenant's context of the
plugin (its configuration, secrets included: they exist nowhere else in this process's reach)
and the confinement to apply. The worker confines itself (plugins/guest/confine.py), then
imports the plugin exactly as at any other time (the same module name whether it is being
inspected or serving a tenant), registers it against the hookspecs and answers which hooks it
implements. After that it answers calls until the socket closes:

- `describe {hook}`: call a provider hook once (cached for this process) and answer each
  provider's kind and static attributes;
- `call {hook, n, method, args, kwargs}`: a method of the n-th provider of a hook, from the
  allow-list of its SDK protocol;
- `value {hook}`: a value hook (white label, feature flags, activated, deactivated);
- `schema`, `graphql`, `subscribe`: the plugin's own GraphQL (plugins/guest/graphql.py);
- `ping`.
"""

from __future__ import annotations

import importlib.util
import sys


def _bootstrap(sdk_dir: str, paths: list[str]) -> None:
    """Make `plugins` importable from its own directory only (not its parent, which holds the
    gateway's files), and the listed site-packages."""
    sys.path[:] = [p for p in sys.path if "site-packages" not in p] + paths
    spec = importlib.util.spec_from_file_location("plugins", f"{sdk_dir}/__init__.py",
                                                  submodule_search_locations=[sdk_dir])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["plugins"] = module
    spec.loader.exec_module(module)


def _args(argv: list[str]) -> tuple[int, str, list[str]]:
    fd, sdk_dir, paths = -1, "", []
    it = iter(argv)
    for arg in it:
        if arg == "--fd":
            fd = int(next(it))
        elif arg == "--sdk":
            sdk_dir = next(it)
        elif arg == "--path":
            paths.append(next(it))
    if fd < 0 or not sdk_dir:
        raise SystemExit("usage: main.py --fd N --sdk DIR [--path DIR]...")
    return fd, sdk_dir, paths


def main(argv: list[str]) -> int:
    fd, sdk_dir, paths = _args(argv)
    _bootstrap(sdk_dir, paths)
    from plugins.guest.serve import serve

    return serve(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
