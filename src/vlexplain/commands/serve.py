"""``vlexplain serve``: the web explorer."""

from __future__ import annotations

import os

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        model: str = typer.Option("offline", "--model", help="Default model spec (offline, testbed:shapes, hf:..., a directory)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (127.0.0.1: this machine only)."),
        port: int = typer.Option(7860, "--port", help="Port to listen on."),
        max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest accepted upload, in MB."),
        concurrency: int = typer.Option(2, "--concurrency", help="Requests processed at once (others wait in the queue)."),
    ) -> None:
        """Open the web explorer: compare methods' heatmaps for an image and texts; concept maps of a class."""
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        from ..app.app import launch

        launch(model=model, host=host, port=port, max_upload_mb=max_upload_mb, concurrency=concurrency)
