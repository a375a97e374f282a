"""Where a result came from: library versions, device and git commit, recorded beside every result file."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

import mta
from mta.ops import available_backends


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_architecture() -> str:
    """What platform reports for the CPU: often only the architecture, e.g. 'x86_64'."""
    return platform.processor() or platform.machine()


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name from `cpuinfo` (Linux), else cpu_architecture()."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu_architecture()


def environment() -> dict:
    """Versions, the device torch sees, the host CPU and the vector instructions torch's CPU kernels use (results
    on a CPU can differ in rounding between hosts), and the op backends that can run on the device."""
    cuda = torch.cuda.is_available()
    return {
        "mta": mta.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "transformers": package_version("transformers"),
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({cpu_architecture()})",
        "cuda": torch.version.cuda if cuda else "no GPU",
        "cpu_threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "backends": available_backends("cuda" if cuda else "cpu"),
    }


def git_commit(path: str | Path | None = None) -> str:
    """$MTA_COMMIT if set, else the commit checked out at `path` (default: this source tree), with '+dirty'
    if files differ, else (outside a git checkout) 'unknown'.

    A tree copied to a remote GPU machine may carry a .git that is behind its files: set MTA_COMMIT there to
    the commit whose tree was copied.
    """
    if os.environ.get("MTA_COMMIT"):
        return os.environ["MTA_COMMIT"]
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def run_metadata() -> dict:
    """environment() plus the git commit and the UTC time: the header of every results file."""
    return {**environment(), "commit": git_commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
