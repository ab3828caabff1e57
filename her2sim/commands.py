"""Subcommands that run simulation stages (demo, simulate, ...), registered on the CLI parser."""
from __future__ import annotations


def register(sub) -> None:
    """Add the stage subcommands to the ``her2sim`` argument parser."""
    return None
