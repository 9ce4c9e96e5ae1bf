"""The district's Flower ServerApp: one round per run (district/round.py says what a round does)."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from district.round import RoundConfig, run_round

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Runs one round with the run's config and writes its result (``result-path``)."""
    run_round(grid, RoundConfig.from_run_config(dict(context.run_config)))
