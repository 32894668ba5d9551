"""Export annotations as training data (UI in app/export_ui.py)."""

from app import export_ui

export_ui.render()
