"""``storefront worker`` and ``storefront scheduler``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the worker's commands to the ``storefront`` CLI."""
