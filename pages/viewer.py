"""Step through a trace with pointer heatmaps (UI in app/viewer_ui.py)."""

from app import viewer_ui

viewer_ui.render()
