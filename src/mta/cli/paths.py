"""Checks of the command line's output directories, shared by its commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def output_directory(text: str) -> str:
    """argparse type of an --out directory: one that exists or that could be created and written in (it is not
    created here, so a usage error leaves nothing behind)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create or write {text}: {existing} is not writable")
    return text


def new_output_directory(path: str, overwrite: bool) -> None:
    """ValueError naming --out if `path` is a directory holding files and `overwrite` is off."""
    if not overwrite and Path(path).is_dir() and any(Path(path).iterdir()):
        raise ValueError(f"--out: {path} already exists and is not empty; choose another directory or pass "
                         "--overwrite to write into it")

