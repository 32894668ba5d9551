"""Browse, import and delete traces (UI in app/library_ui.py)."""

from app import library_ui

library_ui.render()
