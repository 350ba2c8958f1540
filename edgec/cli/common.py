"""What the edgec commands share: messages on stderr and parsing of repeated options."""

from __future__ import annotations

import click

from edgec.errors import EdgecError

DEFAULT_MODEL = "zoo:mobilenet_v2"
DEFAULT_TARGET = "x86_64"


def say(message: str) -> None:
    click.echo(f"[edgec] {message}", err=True)


def parse_input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    from edgec.frontend import parse_input_shape

    return dict(parse_input_shape(v) for v in values)


def parse_input_files(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise EdgecError(f'--input "{value}" is not NAME=file.npy')
        pairs[name] = path
    return pairs

