"""Confinement of marketplace plugin workers: host layers (uid, bwrap, cgroups) and their launch."""
