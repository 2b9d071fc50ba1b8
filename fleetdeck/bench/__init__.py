"""``fleetdeck bench …``: measurements that print one JSON object on their last line."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from fleetdeck.bench import commands

    commands.register(app)
