"""CLI subcommands: each module defines ``register(app: typer.Typer)``; cli.py discovers them."""
