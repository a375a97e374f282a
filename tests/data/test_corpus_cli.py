"""`mta data prepare` from the user's own text/JSONL files and `mta data info`, in-process."""

import json

import pytest

pytest.importorskip("tokenizers")

from mta.cli import build_parser, main  # noqa: E402
from mta.cli.data import _path_field, default_sources_wanted  # noqa: E402
from mta.data.corpus import load_manifest, load_tokenizer, token_memmap  # noqa: E402


@pytest.fixture
def inputs(tmp_path):
    essays = tmp_path / "essays"
    (essays / "more").mkdir(parents=True)
    for i in range(5):
        (essays / f"e{i}.txt").write_text(f"Essay {i}.\nIt rains in the plain of Spain, {i} times a day.\n")
    (essays / "more" / "e9.txt").write_text("A nested essay, read as well.")
    (essays / "notes.md").write_text("not a .txt file, left out")
    lines = [json.dumps({"body": f"record {i}: the quick brown fox", "id": i}) for i in range(7)]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n\n")
    return tmp_path


def test_prepare_then_info(inputs, capsys):
    out = inputs / "corpus"
    assert main(["data", "prepare", "--out", str(out), "--vocab-size", "300", "--val-fraction", "0.2",
                 "--text", f"essays={inputs / 'essays'}", "--jsonl", f"records={inputs / 'records.jsonl'}:body",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "docs train" in printed and "essays" in printed and "records" in printed
    manifest = load_manifest(out, verify=True)
    assert manifest.domains["essays"].documents == {"train": 5, "val": 1}
    assert manifest.domains["records"].documents == {"train": 6, "val": 1}
    assert manifest.domains["records"].source.endswith("records.jsonl:body")
    ids = token_memmap(out, "records", "val").tolist()
    assert load_tokenizer(out).decode(ids[:-1]).startswith("record ")

    assert main(["data", "info", str(out), "--verify"]) == 0
    info = capsys.readouterr().out
    assert "every shard matches" in info
    total = next(line for line in info.splitlines() if line.startswith("total")).split()
    assert total[1:3] == ["11", "2"]


def test_the_default_sources_are_used_only_without_user_files():
    def wanted(*argv):
        return default_sources_wanted(build_parser().parse_args(["data", "prepare", "--out", "x", *argv]))

    args = build_parser().parse_args(["data", "prepare", "--out", "x"])
    assert (args.vocab_size, args.val_fraction, args.seed) == (8192, 0.02, 0)
    assert wanted() == ["shakespeare", "bible", "brown", "gcide"]
    assert wanted("--text", "a=b.txt") == []
    assert wanted("--sources", "bible", "--jsonl", "a=b.jsonl") == ["bible"]


@pytest.mark.parametrize("argv,message", [
    (["--text", "no-equals-sign"], "expected NAME=PATH"),
    (["--text", "a=/does/not/exist"], "no such file or directory"),
    (["--jsonl", "a=/does/not/exist.jsonl"], "no such file"),
])
def test_prepare_reports_bad_inputs(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "--out", str(tmp_path / "o"), "--no-progress", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_info_reports_a_directory_without_a_corpus(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "info", str(tmp_path)])
    assert exit_info.value.code == 2 and "no manifest" in capsys.readouterr().err


def test_jsonl_field_is_split_off_unless_the_colon_is_in_the_path(tmp_path):
    assert _path_field("data/a.jsonl:body") == ("data/a.jsonl", "body")
    assert _path_field("data/a.jsonl") == ("data/a.jsonl", "text")
    odd = tmp_path / "a:b.jsonl"
    odd.write_text("")
    assert _path_field(str(odd)) == (str(odd), "text")
