"""`v1studio` command line: one typer app; each layer registers its own commands.

The root lives in `app/` because it sits at the end of the data flow (it may use every layer);
`v1core.commands` and `storage.commands` own their subcommands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

app = typer.Typer(help="v1 Studio: run, trace, annotate and export v1's pointer reasoning.", no_args_is_help=True)

ROOT = Path(__file__).resolve().parent.parent


@app.command()
def serve(
    port: int = typer.Option(8501, help="HTTP port"),
    host: str = typer.Option("localhost", help="address to bind; 0.0.0.0 to share on a network"),
    headless: bool = typer.Option(True, help="do not open a browser window"),
) -> None:
    """Start the Streamlit app (demo model unless V1STUDIO_MODEL points at a checkpoint)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
        "--server.port", str(port), "--server.address", host,
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--runner.postScriptGC", "false",  # no full gc.collect() after every rerun (see .streamlit/config.toml)
    ]
    typer.echo(f"v1 Studio on http://{host}:{port}")
    raise typer.Exit(subprocess.call(cmd))


def _register_layers() -> None:
    for module in ("v1core.commands", "storage.commands", "app.trace_cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:  # a layer not installed yet
            if exc.name and exc.name.startswith(module.split(".")[0]):
                continue
            raise
        mod.register(app)


_register_layers()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
