"""The `edgec` command: a thin shell that parses options, calls the API and prints results.

Commands live in model_commands.py (targets, zoo, compile, tune) and board_commands.py
(run, verify, bench, deploy, board); this module groups them and turns user errors into one line.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from edgec.cli import board_commands, model_commands
from edgec.errors import EdgecError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgec")
@click.option("--debug", is_flag=True,
              help="Keep tracebacks of errors and save the IR a TVM failure came from "
                   "(same as EDGEC_DEBUG=1).")
def cli(debug: bool) -> None:
    """edgec: compile CNNs (ONNX, TFLite) for edge CPUs with Apache TVM, check them, run
    them on a board."""
    if debug:
        os.environ["EDGEC_DEBUG"] = "1"


for command in (model_commands.targets_cmd, model_commands.zoo_cmd, model_commands.compile_cmd,
                model_commands.tune_cmd, board_commands.run_cmd, board_commands.verify_cmd,
                board_commands.bench_cmd, board_commands.deploy_cmd, board_commands.bundle_cmd,
                board_commands.board_group):
    cli.add_command(command)


def main() -> None:
    """Entry point: user errors become one line and exit 1; bugs keep their traceback."""
    try:
        cli.main(standalone_mode=False)
    except EdgecError as err:
        if os.environ.get("EDGEC_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
