"""Label traces: verdicts, revisit regions, missing revisits, history (UI in app/annotate_ui.py)."""

from app import annotate_ui

annotate_ui.render()
