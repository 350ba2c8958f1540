"""The one exception hierarchy of edgec: every error a user can cause is an EdgecError."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgecError(Exception):
    """Base of every error edgec reports to a user as a one-line message."""


class ConfigError(EdgecError):
    """A bad option, target description or command-line value."""


class ModelImportError(EdgecError):
    """The model file cannot be read, fixed up or converted to Relax."""


class QuantizeError(EdgecError):
    """Calibration data or quantization settings are unusable."""


class BuildError(EdgecError):
    """Compiling, exporting or checking the compiled artifact failed."""


class TuneError(EdgecError):
    """Tuning could not run or its database is unusable."""


class ArtifactError(EdgecError):
    """A compiled artifact is missing, corrupt or built for another machine."""


class RemoteError(EdgecError):
    """A board, SSH server or RPC server could not be reached or failed."""


class MissingDependencyError(EdgecError):
    """A program or package edgec needs is not installed; the message says how to install it."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""
