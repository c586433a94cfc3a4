"""The `lkps` command."""

from lkps.cli.main import app, main

__all__ = ["app", "main"]
