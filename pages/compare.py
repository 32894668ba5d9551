"""Compare pointers: two steps, two traces, or a pointer against a region (UI in app/compare_ui.py)."""

from app import compare_ui

compare_ui.render()
