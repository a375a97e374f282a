"""From documents to a prepared corpus: split by document, train a byte-level BPE, write token shards."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mta import __version__

from .manifest import EOS_TOKEN, MANIFEST, SPLITS, TOKENIZER, DomainShards, Manifest, tokenizers

MAX_VOCAB = 1 << 16  # ids are stored as uint16
MIN_VOCAB = 257  # the 256 byte symbols and <|eos|>
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_BATCH = 512  # documents per encode_batch call


@dataclass(frozen=True)
class TextDomain:
    """One domain's plain-text documents before tokenization; ``source`` says where they came from."""

    name: str
    source: str
    documents: list[str]


def split_documents(documents: list[str], val_fraction: float, seed: int) -> list[bool]:
    """Which documents are validation documents (True) and which training (False).

    The ``round(val_fraction * n)`` documents whose seeded SHA-256 is smallest are validation documents, at
    least one and at most n - 1 when there are two or more documents and val_fraction > 0. A document's fate
    depends only on its text, the seed and the other documents, never on their order, and identical documents
    hash alike, so a repeated text cannot land on both sides.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction: expected 0 <= val_fraction < 1, got {val_fraction}")
    n = len(documents)
    n_val = 0 if n < 2 or val_fraction == 0 else min(n - 1, max(1, round(val_fraction * n)))
    salt = f"{seed}\n".encode()
    rank = sorted(range(n), key=lambda i: hashlib.sha256(salt + documents[i].encode()).digest())
    val = set(rank[:n_val])
    return [i in val for i in range(n)]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE (`tokenizers`) with ``vocab_size`` ids at most; ``<|eos|>`` is id 0.

    Byte-level means every string encodes and decodes back exactly; the vocabulary is smaller than asked
    when the texts do not have enough distinct pairs to merge.
    """
    tk = tokenizers()
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def prepare(domains: list[TextDomain], out: str | Path, vocab_size: int = 8192, val_fraction: float = 0.02,
            seed: int = 0, progress: bool = True) -> Manifest:
    """Write a prepared corpus (format `mta-tokens-v1`, see manifest.py) for ``domains`` into ``out``.

    Empty and repeated documents are dropped; each domain is split by document (split_documents); the
    tokenizer is trained on the training documents of every domain; each split's documents are written in
    their source order, each followed by <|eos|>. manifest.json is written last, so a directory with a
    manifest is complete.
    """
    _check(domains, vocab_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    splits = {}
    for domain in domains:
        documents = list(dict.fromkeys(d for d in domain.documents if d.strip()))
        if not documents:
            raise ValueError(f"domain {domain.name!r}: no non-empty documents in {domain.source}")
        is_val = split_documents(documents, val_fraction, seed)
        splits[domain.name] = {"train": [d for d, v in zip(documents, is_val) if not v],
                               "val": [d for d, v in zip(documents, is_val) if v]}
    train = [d for split in splits.values() for d in split["train"]]
    # tokenizers' own progress bar prints blank lines to stdout, which is the summary's; this one is on stderr.
    with tqdm(total=1, desc=f"BPE on {len(train)} documents", unit="tokenizer", disable=not progress) as bar:
        tokenizer = train_tokenizer(train, vocab_size)
        bar.update()
    tokenizer.encode_special_tokens = True  # a literal "<|eos|>" in a document is text, not the separator
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    tokenizer.save(str(out / TOKENIZER))

    shards = {}
    for domain in domains:
        files = {split: f"{domain.name}.{split}.bin" for split in SPLITS}
        written = {split: _write_shard(tokenizer, splits[domain.name][split], out / files[split], eos_id,
                                       f"{domain.name} {split}", progress) for split in SPLITS}
        shards[domain.name] = DomainShards(
            name=domain.name, source=domain.source, files=files,
            documents={split: len(splits[domain.name][split]) for split in SPLITS},
            tokens={split: written[split][0] for split in SPLITS},
            sha256={split: written[split][1] for split in SPLITS})
    manifest = Manifest(root=out, vocab_size=tokenizer.get_vocab_size(), eos_id=eos_id, domains=shards,
                        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        mta_version=__version__)
    partial = out / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    os.replace(partial, out / MANIFEST)
    return manifest


def _check(domains: list[TextDomain], vocab_size: int) -> None:
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size: expected {MIN_VOCAB} to {MAX_VOCAB} (ids are uint16), got {vocab_size}")
    if not domains:
        raise ValueError("domains: nothing to prepare; give default sources or text/JSONL files")
    names = [d.name for d in domains]
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"domain name {name!r}: use letters, digits, '_', '-' and '.' (it names files)")
        if names.count(name) > 1:
            raise ValueError(f"domain name {name!r} is given more than once")


def _write_shard(tokenizer, documents: list[str], path: Path, eos_id: int, label: str,
                 progress: bool) -> tuple[int, str]:
    """Encode ``documents`` into ``path`` as uint16 ids, each document followed by eos_id; (tokens, sha256)."""
    digest, count = hashlib.sha256(), 0
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets, which are not needed here.
    encode_batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    with open(path, "wb") as f, tqdm(total=len(documents), desc=label, unit="doc", disable=not progress,
                                     leave=False) as bar:
        for start in range(0, len(documents), _BATCH):
            ids = []
            for encoding in encode_batch(documents[start:start + _BATCH], add_special_tokens=False):
                ids.extend(encoding.ids)
                ids.append(eos_id)
            data = np.asarray(ids, dtype="<u2").tobytes()
            f.write(data)
            digest.update(data)
            count += len(ids)
            bar.update(min(_BATCH, len(documents) - start))
    return count, digest.hexdigest()
