"""Loading a script from benchmarks/ or experiments/ in tests (the scripts are not package modules)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str, folder: str = "benchmarks"):
    """Import <folder>/<name>.py (a script, not a package module) and return the module. As when the script runs,
    its folder is importable: the benchmarks import their shared tools (benchmarks/profiling.py) from there."""
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
