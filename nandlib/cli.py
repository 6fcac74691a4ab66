"""The ``nand`` command line (typer). Book: ``reproducing.md``."""

from __future__ import annotations

import typer

app = typer.Typer(help="NAND companion: data, runs, sweeps and tables.", no_args_is_help=True)
