"""``vlexplain serve``: the web explorer."""

from __future__ import annotations

import os

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        model: str | None = typer.Option(
            None,
            "--model",
            help="Default model spec (offline, testbed:shapes, hf:..., a directory; default: the first of --models, else offline).",
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (127.0.0.1: this machine only)."),
        port: int = typer.Option(7860, "--port", min=0, max=65535, help="Port to listen on."),
        max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest accepted upload, in MB."),
        concurrency: int = typer.Option(
            2, "--concurrency", help="Requests processed at once (others wait in the queue)."
        ),
        models: str | None = typer.Option(
            None,
            "--models",
            help="Comma-separated model specs clients may choose, e.g. offline,testbed:shapes (default: any spec "
            "on a loopback address; only --model on any other address).",
        ),
        max_models: int = typer.Option(
            2, "--max-models", min=1, help="Models kept loaded at once (least recently used dropped first)."
        ),
    ) -> None:
        """Open the web explorer: compare methods' heatmaps for an image and texts; concept maps of a class."""
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        from ..errors import InputError

        allowed = None
        if models is not None:
            allowed = [m.strip() for m in models.split(",") if m.strip()]
            if not allowed:
                raise InputError("--models needs at least one model spec (comma-separated)")
            model = model or allowed[0]
            if model.strip() not in allowed:
                raise InputError(f"--model {model} is not among --models ({', '.join(allowed)})")
        model = model or "offline"
        from ..app.app import launch

        launch(
            model=model,
            host=host,
            port=port,
            max_upload_mb=max_upload_mb,
            concurrency=concurrency,
            models=allowed,
            max_models=max_models,
        )
