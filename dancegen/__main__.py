"""``python -m dancegen`` runs the CLI."""

from dancegen.cli import app

app()
