"""What every command shares: one-line input errors, atomic writes, worker processes,
progress bars and the typer app runner."""
