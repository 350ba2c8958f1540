"""The `edgec` command: a thin shell that parses options, calls the API and prints results.

Commands live in build.py (targets, zoo, compile, tune) and board.py (run, verify, bench,
deploy, board); this module groups them and turns user errors into one line.
"""

from __future__ import annotations

import sys

import click

from edgec.cli import board, build
from edgec.errors import EdgecError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgec")
def cli() -> None:
    """edgec: compile CNNs (ONNX) for edge CPUs with Apache TVM, check them, run them."""


for command in (build.targets_cmd, build.zoo_cmd, build.compile_cmd, build.tune_cmd,
                board.run_cmd, board.verify_cmd, board.bench_cmd, board.deploy_cmd,
                board.board_group):
    cli.add_command(command)


def main() -> None:
    """Entry point: user errors become one line and exit 1; bugs keep their traceback."""
    try:
        cli.main(standalone_mode=False)
    except EdgecError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
