"""CLI commands over the snapshot store: checkpoints list/show, verify, restore, gc."""
from __future__ import annotations

import argparse


def register_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the ``stateserver`` parser."""
