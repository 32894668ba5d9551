"""Agreement figures and disagreeing annotators side by side (UI in app/review_ui.py)."""

from app import review_ui

review_ui.render()
