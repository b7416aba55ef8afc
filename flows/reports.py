"""Markdown pieces of the flows' Prefect artifacts."""

from __future__ import annotations


def loss_table(state: dict) -> str:
    """A training run's loss curve (``loss_columns`` / ``losses`` of its state) as a Markdown
    table of at most ~20 rows."""
    columns, rows = state.get("loss_columns", []), state.get("losses", [])
    stride = max(1, len(rows) // 20)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(f"{v:.4g}" for v in row) + " |"
                              for row in rows[::stride]])
