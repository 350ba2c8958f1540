"""Where edgec keeps what it downloads or measures once per machine: $EDGEC_CACHE, else
~/.cache/edgec (the emulated board's root, wheels, the estimator's data, tuning logs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("EDGEC_CACHE", "~/.cache/edgec")).expanduser()
