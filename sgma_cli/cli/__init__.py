"""Command-line layer: thin Typer commands (parse, call one engine function, render)."""
