"""The demo world with every extension the gateway deploys into it: one definition for the
runtime (in-process chain) and for `alphintra chain serve` (the shared chain), so both deploy
the same world."""

from __future__ import annotations

from gateway.defi.lending_deploy import extend_world
from gateway.defi.world import DemoWorld


def build_demo_world() -> DemoWorld:
    world = DemoWorld()
    world.add_extension("lending", extend_world)  # the lending market joins the demo world
    return world
