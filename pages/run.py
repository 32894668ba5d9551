"""Run v1 live on a bundled or uploaded image (UI in app/run_ui.py)."""

from app import run_ui

run_ui.render()
