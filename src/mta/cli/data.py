"""`mta data prepare | info`: a multi-domain English corpus as token shards for training (format mta-tokens-v1)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mta.data.corpus import DEFAULT_SOURCES, Manifest, jsonl_domain, load_manifest, prepare, text_domain
from mta.data.corpus.fetch import FetchError, default_cache

from .paths import new_output_directory, output_directory


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `data` command to ``subparsers``; return its parser."""
    parser = subparsers.add_parser("data", help="prepare and inspect text corpora (token shards for training)")
    data_sub = parser.add_subparsers(dest="data_command", required=True)
    _register_prepare(data_sub)
    _register_info(data_sub)
    return parser


def _register_prepare(data_sub) -> None:
    p = data_sub.add_parser(
        "prepare", help="build a corpus: documents -> byte-level BPE -> uint16 token shards + manifest",
        description="Build a prepared corpus in --out: one domain per source, each split into train/val by "
                    "document; a byte-level BPE tokenizer trained on the training documents; packed uint16 "
                    "shards and manifest.json. With no --text/--jsonl it uses the four default sources, "
                    "downloaded once into --cache with pip, npm and apt-get.")
    p.add_argument("--out", required=True, type=output_directory, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if it holds files")
    p.add_argument("--vocab-size", type=int, default=8192, help="most tokenizer ids, <|eos|> included "
                   "(default 8192, at most 65536)")
    p.add_argument("--sources", nargs="+", choices=list(DEFAULT_SOURCES), default=None,
                   help="default sources to include (default: all of them, unless --text or --jsonl is given)")
    p.add_argument("--text", action="append", default=[], metavar="NAME=PATH",
                   help="domain NAME from a text file (one document) or a directory (each *.txt a document); "
                        "repeat NAME to add more paths")
    p.add_argument("--jsonl", action="append", default=[], metavar="NAME=PATH[:FIELD]",
                   help="domain NAME from a JSONL file, one document per line in FIELD (default 'text')")
    p.add_argument("--val-fraction", type=float, default=0.02,
                   help="fraction of each domain's documents held out for validation, at least one "
                        "(default 0.02)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    p.add_argument("--cache", default=None, help=f"where downloaded packages are kept (default {default_cache()})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_prepare)


def _register_info(data_sub) -> None:
    p = data_sub.add_parser("info", help="summary of a prepared corpus")
    p.add_argument("dir", help="a directory written by `mta data prepare`")
    p.add_argument("--verify", action="store_true", help="also check every shard's sha256")
    p.set_defaults(func=_info)


def _prepare(args: argparse.Namespace) -> None:
    new_output_directory(args.out, args.overwrite)
    start = time.perf_counter()
    domains = []
    cache = Path(args.cache) if args.cache else default_cache()
    for name in default_sources_wanted(args):
        loaded = time.perf_counter()
        try:
            domains.append(DEFAULT_SOURCES[name](cache))
        except FetchError as error:
            raise SystemExit(f"mta data prepare: error: {error}\n(leave it out with --sources)") from None
        _note(f"{name}: {len(domains[-1].documents)} documents from {domains[-1].source} "
              f"({time.perf_counter() - loaded:.1f} s)")
    texts: dict[str, list[str]] = {}
    for spec in args.text:
        name, path = _name_value(spec, "--text")
        texts.setdefault(name, []).append(path)
    domains += [text_domain(name, paths) for name, paths in texts.items()]
    for spec in args.jsonl:
        name, value = _name_value(spec, "--jsonl")
        domains.append(jsonl_domain(name, *_path_field(value)))
    manifest = prepare(domains, args.out, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                       seed=args.seed, progress=not args.no_progress)
    print(summary(manifest))
    print(f"split: val fraction {args.val_fraction}, seed {args.seed}; took {time.perf_counter() - start:.1f} s")


def default_sources_wanted(args: argparse.Namespace) -> list[str]:
    """--sources as given; without it, every default source unless the user gave files of their own."""
    if args.sources is not None:
        return args.sources
    return [] if args.text or args.jsonl else list(DEFAULT_SOURCES)


def _info(args: argparse.Namespace) -> None:
    print(summary(load_manifest(args.dir, verify=args.verify)))
    if args.verify:
        print("sha256: every shard matches")


def summary(manifest: Manifest) -> str:
    """The manifest as a table: one row per domain (documents and tokens per split), then the totals."""
    header = ("domain", "docs train", "docs val", "tokens train", "tokens val", "source")
    rows = [(name, d.documents["train"], d.documents["val"], d.tokens["train"], d.tokens["val"], d.source)
            for name, d in manifest.domains.items()]
    rows.append(("total", *(sum(row[i] for row in rows) for i in range(1, 5)), ""))
    cells = [header] + [(row[0], *(f"{n:,}" for n in row[1:5]), row[5]) for row in rows]
    widths = [max(len(cell[i]) for cell in cells) for i in range(5)]
    lines = [f"{manifest.root}: vocab {manifest.vocab_size}, eos id {manifest.eos_id}, created "
             f"{manifest.created} by mta {manifest.mta_version}"]
    for cell in cells:
        numbers = "  ".join(c.rjust(w) for c, w in zip(cell[1:5], widths[1:5]))
        lines.append(f"{cell[0].ljust(widths[0])}  {numbers}  {cell[5]}".rstrip())
    return "\n".join(lines)


def _name_value(spec: str, flag: str) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not (name and sep and value):
        raise ValueError(f"{flag} {spec!r}: expected NAME=PATH")
    return name, value


def _path_field(value: str) -> tuple[str, str]:
    """PATH[:FIELD] -> (PATH, FIELD or 'text'); a colon that is part of an existing path stays in it."""
    path, sep, field = value.rpartition(":")
    if sep and path and field and "/" not in field and not Path(value).exists():
        return path, field
    return value, "text"


def _note(message: str) -> None:
    print(message, file=sys.stderr)
