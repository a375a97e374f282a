"""A user's own text as a domain: plain-text files (a file is a document) or JSONL (a line is a document)."""

from __future__ import annotations

import json
from pathlib import Path

from .clean import normalize
from .prepare import TextDomain


def text_domain(name: str, paths: list[str | Path]) -> TextDomain:
    """Domain ``name`` from text files: each file is one document; a directory gives every ``*.txt`` below it.

    Files are read as UTF-8 in sorted order; ValueError for a missing path, a directory without .txt files or
    a file that is not UTF-8.
    """
    documents, sources = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not files:
                raise ValueError(f"--text {name}={given}: the directory has no .txt files")
        elif path.is_file():
            files = [path]
        else:
            raise ValueError(f"--text {name}={given}: no such file or directory")
        for file in files:
            try:
                documents.append(normalize(file.read_text(encoding="utf-8")))
            except UnicodeDecodeError as error:
                raise ValueError(f"--text {name}: {file} is not UTF-8 text ({error})") from None
        sources.append(str(path.resolve()))
    return TextDomain(name, ", ".join(sources), documents)


def jsonl_domain(name: str, path: str | Path, field: str = "text") -> TextDomain:
    """Domain ``name`` from a JSONL file: each line is an object whose ``field`` (a string) is one document.

    Blank lines are skipped; ValueError names the line of a malformed object or a missing/non-string field.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--jsonl {name}={path}: no such file")
    documents = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"--jsonl {name}: {path} line {number} is not JSON ({error})") from None
            text = record.get(field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise ValueError(f"--jsonl {name}: {path} line {number} has no string field {field!r}")
            documents.append(normalize(text))
    return TextDomain(name, f"{path.resolve()}:{field}", documents)
