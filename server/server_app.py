"""The ServerApp the coordinator runs (``flwr run .`` or ``fedsynth simulate``)."""

from __future__ import annotations

from logging import ERROR

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import UserError
from fedsynth.server.federation import run_federation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Validate the run configuration, then run the federation."""
    try:
        config = RunConfig.from_mapping(dict(context.run_config))
        run_federation(grid, config)
    except UserError as exc:
        # One line for the user; the run is marked failed by re-raising without the chain.
        log(ERROR, "fedsynth: %s", exc)
        raise RuntimeError(str(exc)) from None
