"""The on-disk format of a prepared corpus (`mta-tokens-v1`) and its reader.

A prepared corpus is a directory:

- ``manifest.json``: ``{"format": "mta-tokens-v1", "tokenizer": "tokenizer.json", "vocab_size", "eos_id",
  "dtype": "uint16", "domains": {NAME: {"source", "documents": {"train", "val"}, "tokens": {"train", "val"},
  "files": {"train": "NAME.train.bin", "val": "NAME.val.bin"}, "sha256": {"train", "val"}}}, "created",
  "mta_version"}``;
- ``tokenizer.json``: a `tokenizers` byte-level BPE whose special token ``<|eos|>`` has id ``eos_id``;
- ``NAME.{train,val}.bin``: raw little-endian uint16 token ids, documents concatenated, each followed by eos_id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "mta-tokens-v1"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
EOS_TOKEN = "<|eos|>"
DTYPE = "uint16"
SPLITS = ("train", "val")
_NUMPY_DTYPE = np.dtype("<u2")


@dataclass(frozen=True)
class DomainShards:
    """One domain of a prepared corpus: where its text came from and its train/val token shards.

    ``documents``, ``tokens``, ``files`` and ``sha256`` are keyed by split ("train", "val").
    """

    name: str
    source: str
    documents: dict[str, int]
    tokens: dict[str, int]
    files: dict[str, str]
    sha256: dict[str, str]

    def to_json(self) -> dict:
        return {"source": self.source, "documents": self.documents, "tokens": self.tokens, "files": self.files,
                "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    """A validated ``manifest.json``; ``root`` is the directory it was read from."""

    root: Path
    vocab_size: int
    eos_id: int
    domains: dict[str, DomainShards]
    created: str
    mta_version: str
    tokenizer: str = TOKENIZER
    dtype: str = DTYPE

    def path(self, domain: str, split: str) -> Path:
        """The shard file of ``domain``'s ``split``; ValueError if either is unknown."""
        if domain not in self.domains:
            raise ValueError(f"domain: {domain!r} is not in {self.root / MANIFEST}; it has {sorted(self.domains)}")
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        return self.root / self.domains[domain].files[split]

    def to_json(self) -> dict:
        return {"format": FORMAT, "tokenizer": self.tokenizer, "vocab_size": self.vocab_size, "eos_id": self.eos_id,
                "dtype": self.dtype, "domains": {name: d.to_json() for name, d in self.domains.items()},
                "created": self.created, "mta_version": self.mta_version}


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(directory: str | Path, verify: bool = False) -> Manifest:
    """Read and validate ``directory/manifest.json``.

    Checks the format tag, dtype, field types, that the tokenizer and every shard exist, and that each shard
    holds exactly ``tokens`` uint16 ids; with ``verify=True`` also each shard's SHA-256 (reads every byte).
    Raises ValueError naming the file and the problem.
    """
    root = Path(directory)
    where = root / MANIFEST
    if not where.is_file():
        raise ValueError(f"{where}: no manifest; prepare a corpus with `mta data prepare --out {root}`")
    try:
        raw = json.loads(where.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise ValueError(f"{where}: format is {raw.get('format')!r}, expected {FORMAT!r}")
    if raw.get("dtype") != DTYPE:
        raise ValueError(f"{where}: dtype is {raw.get('dtype')!r}, expected {DTYPE!r}")
    vocab_size = _field(raw, "vocab_size", int, where)
    eos_id = _field(raw, "eos_id", int, where)
    if not 0 < vocab_size <= 1 << 16 or not 0 <= eos_id < vocab_size:
        raise ValueError(f"{where}: vocab_size {vocab_size} and eos_id {eos_id} do not fit uint16 ids")
    tokenizer = _field(raw, "tokenizer", str, where)
    _check_inside(root, tokenizer, f"{where}: tokenizer")
    if not (root / tokenizer).is_file():
        raise ValueError(f"{where}: tokenizer file {root / tokenizer} is missing")
    domains_raw = _field(raw, "domains", dict, where)
    if not domains_raw:
        raise ValueError(f"{where}: 'domains' is empty")
    domains = {name: _domain(name, entry, root, where, verify) for name, entry in domains_raw.items()}
    return Manifest(root=root, vocab_size=vocab_size, eos_id=eos_id, domains=domains,
                    created=_field(raw, "created", str, where), mta_version=_field(raw, "mta_version", str, where),
                    tokenizer=tokenizer)


def token_memmap(directory: str | Path | Manifest, domain: str, split: str) -> np.ndarray:
    """The token ids of ``domain``'s ``split`` as a read-only ``np.memmap`` of uint16, shape [tokens].

    ``directory`` is a prepared corpus or its loaded Manifest. An empty split (a domain of one document has no
    validation documents) gives an empty ndarray, since an empty file cannot be memory-mapped.
    """
    manifest = directory if isinstance(directory, Manifest) else load_manifest(directory)
    path = manifest.path(domain, split)
    count = manifest.domains[domain].tokens[split]
    if count == 0:
        return np.zeros(0, dtype=_NUMPY_DTYPE)
    return np.memmap(path, dtype=_NUMPY_DTYPE, mode="r", shape=(count,))


def load_tokenizer(directory: str | Path):
    """The corpus's `tokenizers.Tokenizer` (byte-level BPE; ``<|eos|>`` is the manifest's eos_id)."""
    manifest = load_manifest(directory)
    return tokenizers().Tokenizer.from_file(str(manifest.root / manifest.tokenizer))


def tokenizers():
    """The `tokenizers` module, or an ImportError that says how to install it."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError("the `tokenizers` package is needed: pip install 'multi-token-attention[train]'") from None
    return tokenizers


def _field(raw: dict, key: str, kind: type, where: str | Path):
    value = raw.get(key)
    # bool is an int in Python; a count or id of True is still a malformed manifest.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: {key!r} should be {kind.__name__}, got {value!r}")
    return value


def _check_inside(root: Path, name: str, label: str) -> None:
    """ValueError unless the file `name` of the manifest lies inside the corpus directory `root`."""
    if not (root / name).resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{label} {name!r} lies outside the corpus directory {root}; a manifest names files "
                         "inside its own directory")


def _domain(name: str, entry, root: Path, where: Path, verify: bool) -> DomainShards:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: domain {name!r} should be an object, got {entry!r}")
    label = f"{where}: domain {name!r}"
    per_split = {key: _field(entry, key, dict, label) for key in ("documents", "tokens", "files", "sha256")}
    for key, kinds in per_split.items():
        for split in SPLITS:
            _field(kinds, split, int if key in ("documents", "tokens") else str, f"{label} {key}")
    shards = DomainShards(name=name, source=_field(entry, "source", str, label), **per_split)
    for split in SPLITS:
        _check_inside(root, shards.files[split], f"{label} split {split!r}: shard")
        path = root / shards.files[split]
        if not path.is_file():
            raise ValueError(f"{label} split {split!r}: shard {path} is missing")
        size, count = path.stat().st_size, shards.tokens[split]
        if size != count * _NUMPY_DTYPE.itemsize:
            raise ValueError(f"{label} split {split!r}: shard {path} has {size} bytes, expected {count} tokens "
                             f"x {_NUMPY_DTYPE.itemsize} = {count * _NUMPY_DTYPE.itemsize} bytes (truncated?)")
        if verify and sha256_file(path) != shards.sha256[split]:
            raise ValueError(f"{label} split {split!r}: shard {path} does not match its sha256 (corrupt?)")
    return shards
