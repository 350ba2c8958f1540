"""Files edgec ships inside its package: target descriptions and tuning databases.

They live in the package (not beside it), so a wheel install has them too; `path()` is the
one way to find them, in a checkout, an editable install or a wheel alike.
"""

from pathlib import Path

KINDS = ("targets", "tuning_logs")


def path(kind: str) -> Path:
    """The folder of shipped `kind` files ("targets" or "tuning_logs")."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of shipped files {kind!r}; one of {KINDS}")
    return Path(__file__).resolve().parent / kind
