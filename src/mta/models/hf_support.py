"""Whether the transformers integration (mta.models.hf) can be imported, without importing transformers."""

from __future__ import annotations

import importlib.metadata
import re


def transformers_supported() -> bool:
    """Whether a transformers release that mta.models.hf supports (5.x) is installed."""
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return False
    return re.match(r"5\.", version) is not None
