"""Prepared corpora (format mta-tokens-v1): prepare from tiny in-test documents, then read them back."""

import json

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from mta.data.corpus import (  # noqa: E402
    FORMAT,
    TextDomain,
    load_manifest,
    load_tokenizer,
    prepare,
    split_documents,
    token_memmap,
)
from mta.data.corpus.manifest import sha256_file  # noqa: E402

WORDS = "the of and to in a that is was he for it with as his on be at by had are but from or".split()


def documents(n, seed, prefix):
    rng = np.random.default_rng(seed)
    return [f"{prefix} {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(5, 40)))) + "." for i in range(n)]


PLAIN = documents(60, 0, "Plain")
# Unicode, tabs, blank lines and a literal separator string must all survive encode -> decode.
ODD = documents(9, 1, "Odd") + ["Café — naïve\tcoöperate\n\n  indented 😀", "a literal <|eos|> is just text"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    prepare([TextDomain("plain", "test:plain", PLAIN), TextDomain("odd", "test:odd", ODD)], out, vocab_size=300,
            val_fraction=0.1, seed=3, progress=False)
    return out


def shard_documents(corpus, domain, split):
    """The documents of a shard, decoded: the ids between eos tokens."""
    manifest, tokenizer = load_manifest(corpus), load_tokenizer(corpus)
    ids = np.asarray(token_memmap(corpus, domain, split))
    assert ids.size == 0 or ids[-1] == manifest.eos_id
    ends = np.flatnonzero(ids == manifest.eos_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokenizer.decode(ids[s:e].tolist()) for s, e in zip(starts, ends)]


def test_manifest_counts_sizes_and_checksums(corpus):
    raw = json.loads((corpus / "manifest.json").read_text())
    assert raw["format"] == FORMAT and raw["dtype"] == "uint16" and raw["tokenizer"] == "tokenizer.json"
    assert set(raw) == {"format", "tokenizer", "vocab_size", "eos_id", "dtype", "domains", "created", "mta_version"}
    manifest = load_manifest(corpus, verify=True)
    assert manifest.vocab_size <= 300 and load_tokenizer(corpus).token_to_id("<|eos|>") == manifest.eos_id
    for name, count in (("plain", len(PLAIN)), ("odd", len(ODD))):
        domain = manifest.domains[name]
        assert domain.documents == {"train": count - round(0.1 * count), "val": round(0.1 * count)}
        assert domain.files == {"train": f"{name}.train.bin", "val": f"{name}.val.bin"}
        for split in ("train", "val"):
            path = corpus / domain.files[split]
            assert path.stat().st_size == 2 * domain.tokens[split]
            assert sha256_file(path) == domain.sha256[split]
            ids = token_memmap(corpus, name, split)
            assert isinstance(ids, np.memmap) and ids.dtype == np.dtype("<u2") and ids.shape == (domain.tokens[split],)
            assert int((ids == manifest.eos_id).sum()) == domain.documents[split]
            assert int(ids.max()) < manifest.vocab_size


def test_documents_round_trip_and_val_is_disjoint_from_train(corpus):
    for name, docs in (("plain", PLAIN), ("odd", ODD)):
        train, val = shard_documents(corpus, name, "train"), shard_documents(corpus, name, "val")
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(docs)
        assert train == [d for d in docs if d in train]  # source order kept
    assert "a literal <|eos|> is just text" in shard_documents(corpus, "odd", "train") + shard_documents(
        corpus, "odd", "val")


def test_split_depends_on_seed_not_order():
    docs = documents(200, 5, "Doc")
    first = split_documents(docs, 0.02, seed=0)
    assert first == split_documents(docs, 0.02, seed=0) and sum(first) == 4
    assert first != split_documents(docs, 0.02, seed=1)
    val = {d for d, v in zip(docs, first) if v}
    reordered = docs[::-1]
    assert {d for d, v in zip(reordered, split_documents(reordered, 0.02, seed=0)) if v} == val


@pytest.mark.parametrize("n,fraction,expected", [(1, 0.02, 0), (2, 0.02, 1), (10, 0.02, 1), (10, 0.0, 0),
                                                 (10, 0.5, 5), (3, 0.9, 2)])
def test_split_sizes(n, fraction, expected):
    assert sum(split_documents([f"doc {i}" for i in range(n)], fraction, seed=0)) == expected


def test_split_rejects_a_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(["a", "b"], 1.0, seed=0)


def test_prepare_drops_empty_and_repeated_documents(tmp_path):
    docs = ["one doc", "", "  \n", "one doc", "two doc", "three doc"]
    manifest = prepare([TextDomain("d", "test", docs)], tmp_path, vocab_size=260, progress=False)
    assert sum(manifest.domains["d"].documents.values()) == 3


@pytest.mark.parametrize("domains,vocab,match", [
    ([TextDomain("a", "t", ["x"])], 100, "vocab_size"),
    ([TextDomain("a", "t", ["x"])], 70000, "vocab_size"),
    ([TextDomain("../a", "t", ["x"])], 300, "domain name"),
    ([TextDomain("a", "t", ["x"]), TextDomain("a", "t", ["y"])], 300, "more than once"),
    ([TextDomain("a", "t", ["", " "])], 300, "no non-empty documents"),
    ([], 300, "nothing to prepare"),
])
def test_prepare_rejects_bad_arguments(tmp_path, domains, vocab, match):
    with pytest.raises(ValueError, match=match):
        prepare(domains, tmp_path, vocab_size=vocab, progress=False)


@pytest.fixture
def copy(corpus, tmp_path):
    """A writable copy of the prepared corpus, to damage."""
    for path in corpus.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    return tmp_path


def edit_manifest(directory, change):
    raw = json.loads((directory / "manifest.json").read_text())
    change(raw)
    (directory / "manifest.json").write_text(json.dumps(raw))


def test_reader_reports_a_missing_or_truncated_shard(copy):
    (copy / "plain.val.bin").unlink()
    with pytest.raises(ValueError, match=r"'plain' split 'val'.*missing"):
        load_manifest(copy)
    (copy / "plain.val.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"'plain' split 'val'.*has 0 bytes.*truncated"):
        load_manifest(copy)


def test_reader_reports_a_corrupt_shard_only_when_verifying(copy):
    data = bytearray((copy / "odd.train.bin").read_bytes())
    data[10] ^= 0xFF
    (copy / "odd.train.bin").write_bytes(bytes(data))
    load_manifest(copy)  # same size: only the checksum can tell
    with pytest.raises(ValueError, match=r"'odd' split 'train'.*sha256"):
        load_manifest(copy, verify=True)


@pytest.mark.parametrize("change,match", [
    (lambda raw: raw.update(format="mta-tokens-v0"), "format"),
    (lambda raw: raw.update(dtype="uint32"), "dtype"),
    (lambda raw: raw.update(eos_id="0"), "'eos_id' should be int"),
    (lambda raw: raw.update(domains={}), "'domains' is empty"),
    (lambda raw: raw["domains"]["plain"].pop("sha256"), "'sha256' should be dict"),
    (lambda raw: raw["domains"]["plain"]["tokens"].update(train=True), "'train' should be int"),
    (lambda raw: raw.update(tokenizer="nope.json"), "tokenizer file"),
])
def test_reader_reports_a_bad_manifest(copy, change, match):
    edit_manifest(copy, change)
    with pytest.raises(ValueError, match=match):
        load_manifest(copy)


def test_reader_reports_no_manifest_bad_json_and_unknown_names(copy, tmp_path_factory):
    with pytest.raises(ValueError, match="no manifest"):
        load_manifest(tmp_path_factory.mktemp("empty"))
    with pytest.raises(ValueError, match="domain: 'nope'"):
        token_memmap(copy, "nope", "train")
    with pytest.raises(ValueError, match="split"):
        token_memmap(copy, "plain", "test")
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_manifest(copy)


def test_an_empty_split_reads_as_an_empty_array(tmp_path):
    prepare([TextDomain("one", "test", ["a single document"])], tmp_path, vocab_size=260, progress=False)
    manifest = load_manifest(tmp_path, verify=True)
    assert manifest.domains["one"].documents == {"train": 1, "val": 0}
    assert token_memmap(manifest, "one", "val").shape == (0,)
