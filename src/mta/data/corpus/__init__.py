"""Text corpora as packed token shards: `mta data prepare` writes them, the trainer reads them.

Reading (what a trainer needs)::

    manifest = load_manifest(path)                 # validated manifest.json (verify=True also checks sha256)
    tokens = token_memmap(path, "bible", "train")  # np.memmap of uint16 ids, documents ending in eos_id
    tokenizer = load_tokenizer(path)               # tokenizers.Tokenizer (byte-level BPE)

Writing: `prepare(domains, out, vocab_size, val_fraction, seed)` from TextDomains, which come from the default
sources (`DEFAULT_SOURCES`, downloaded with pip/npm/apt) or from the user's files (`text_domain`,
`jsonl_domain`). The on-disk format is described in manifest.py.
"""

from .files import jsonl_domain, text_domain
from .manifest import EOS_TOKEN, FORMAT, DomainShards, Manifest, load_manifest, load_tokenizer, token_memmap
from .prepare import TextDomain, prepare, split_documents, train_tokenizer
from .sources import DEFAULT_SOURCES

__all__ = [
    "DEFAULT_SOURCES", "EOS_TOKEN", "FORMAT", "DomainShards", "Manifest", "TextDomain", "jsonl_domain",
    "load_manifest", "load_tokenizer", "prepare", "split_documents", "text_domain", "token_memmap",
    "train_tokenizer",
]
