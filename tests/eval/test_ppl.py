"""Perplexity per domain (the paper's Table 2, docs/spec.md §4): windows, the numbers against a direct
computation, rank shares, dataset errors and `mta eval ppl`."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mta.cli import main
from mta.eval.ppl import _rank_batches, evaluate_ppl, load_split, window_starts
from mta.models import DecoderLM, get_preset
from mta.models.checkpoint import save_checkpoint

VOCAB = 50


def write_dataset(path, val_sizes={"web": 70, "code": 45}):
    """A mta-tokens-v1 directory (mta.data.corpus) whose domains have random train and val tokens."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.json").write_text("{}")  # only its presence is checked
    rng = np.random.default_rng(1)
    domains = {}
    for name, size in val_sizes.items():
        for split in ("train", "val"):
            rng.integers(0, VOCAB, size).astype("<u2").tofile(path / f"{name}.{split}.bin")
        domains[name] = {"source": "test", "documents": {"train": 1, "val": 1}, "tokens": {"train": size, "val": size},
                         "files": {"train": f"{name}.train.bin", "val": f"{name}.val.bin"},
                         "sha256": {"train": "not checked", "val": "not checked"}}
    manifest = {"format": "mta-tokens-v1", "tokenizer": "tokenizer.json", "vocab_size": VOCAB, "eos_id": 0,
                "dtype": "uint16", "domains": domains, "created": "2025-01-01T00:00:00+00:00", "mta_version": "0.1.0"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def model():
    torch.manual_seed(0)
    return DecoderLM(get_preset("tiny-transformer", vocab_size=VOCAB, dim=32, n_layers=1, max_seq_len=16)).eval()


def test_window_starts():
    assert window_starts(10, 3).tolist() == [0, 3, 6]  # windows [0..3], [3..6], [6..9]: tokens 1..9 predicted
    assert window_starts(9, 3).tolist() == [0, 3]  # the tail [6..8] is shorter than a window
    assert window_starts(3, 3).tolist() == []
    assert window_starts(100, 3, windows=4).tolist() == [0, 24, 48, 72]  # spread over the 33 windows
    assert window_starts(10, 3, windows=5).tolist() == [0, 3, 6]


def test_ppl_equals_a_direct_computation(tmp_path, model):
    split = load_split(write_dataset(tmp_path), "val")
    result = evaluate_ppl(model, split, seq_len=8, batch_size=3)
    for name, tokens in split.domains.items():
        tokens = torch.from_numpy(tokens.astype(np.int64))
        count = (len(tokens) - 1) // 8 * 8
        with torch.no_grad():
            logits = torch.cat([model(tokens[s : s + 8][None])[0] for s in range(0, count, 8)])
        expected = F.cross_entropy(logits, tokens[1 : count + 1]).item()
        assert result["domains"][name]["tokens"] == count
        assert result["domains"][name]["loss"] == pytest.approx(expected, rel=1e-5)
        assert result["domains"][name]["ppl"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert result["mean_ppl"] == pytest.approx(np.mean([d["ppl"] for d in result["domains"].values()]))
    assert evaluate_ppl(model, split, seq_len=8, batch_size=5)["mean_ppl"] == pytest.approx(result["mean_ppl"])


def test_rank_shares_cover_every_window_once():
    starts = window_starts(200, 8)  # 24 windows
    for world_size in (1, 3, 5, 7):
        shares = [list(_rank_batches(starts, 2, rank, world_size)) for rank in range(world_size)]
        assert len({len(batches) for batches in shares}) == 1  # the same number of forward passes on every rank
        counted = sorted(int(s) for batches in shares for batch, weight in batches if weight for s in batch)
        assert counted == starts.tolist()


def test_dataset_errors_pass_through(tmp_path):
    data = write_dataset(tmp_path)
    with pytest.raises(ValueError, match="split: expected one of"):
        load_split(data, "test")
    (data / "web.val.bin").write_bytes(b"abc")
    with pytest.raises(ValueError, match="web.val.bin has 3 bytes"):
        load_split(data, "val")
    (data / "manifest.json").unlink()
    with pytest.raises(ValueError, match="no manifest"):
        load_split(data, "val")


def test_a_domain_shorter_than_a_window_is_an_error(tmp_path, model):
    split = load_split(write_dataset(tmp_path, {"web": 70, "tiny": 5}), "val")
    with pytest.raises(ValueError, match="domain 'tiny' has 5 tokens"):
        evaluate_ppl(model, split, seq_len=8)


def test_cli(tmp_path, model, capsys):
    data = write_dataset(tmp_path / "data")
    save_checkpoint(model, tmp_path / "model")
    out = tmp_path / "ppl.json"
    assert main(["eval", "ppl", "--checkpoint", str(tmp_path / "model"), "--data", str(data), "--device", "cpu",
                 "--batch-size", "2", "--out", str(out), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    assert report["seq_len"] == 16 and report["split"] == "val" and set(report["domains"]) == {"web", "code"}
    direct = evaluate_ppl(model, load_split(data, "val"), seq_len=16)
    assert report["mean_ppl"] == pytest.approx(direct["mean_ppl"])

    with pytest.raises(SystemExit):
        main(["eval", "ppl", "--checkpoint", str(tmp_path / "nothing"), "--data", str(data)])
    assert "--checkpoint: " in capsys.readouterr().err
