"""experiments/longctx.py end to end on a CPU (a tiny checkpoint, two samples per setting), then the results page's
long-context section and comparison plot rendered from what it wrote."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark_scripts import load_benchmark
from mta.models import DecoderLM, get_preset
from mta.models.checkpoint import save_checkpoint

pytest.importorskip("tokenizers")

experiment = load_benchmark("longctx", folder="experiments")
render = load_benchmark("render_docs")


@pytest.fixture
def corpus(tmp_path):
    from mta.data.corpus import TextDomain, prepare

    words = ("the secret number of is what where who Mary John moved went to kitchen garden office north south "
             "east west hallway bedroom bathroom a and in").split()
    documents = [" ".join(words[(i * 7 + j) % len(words)] for j in range(60 + i)) + "." for i in range(40)]
    prepare([TextDomain("plain", "test", documents)], tmp_path / "corpus", vocab_size=400, val_fraction=0.5,
            progress=False)
    return tmp_path / "corpus"


def test_experiment_writes_results_that_render(tmp_path, corpus, monkeypatch, one_thread):
    torch.manual_seed(0)
    save_checkpoint(DecoderLM(get_preset("tiny-transformer", vocab_size=400, dim=32, n_layers=1, max_seq_len=256)),
                    tmp_path / "model")
    out = tmp_path / "results"
    argv = ["--data", str(corpus), "--run", f"transformer={tmp_path / 'model'}", "--samples", "2", "--out", str(out),
            "--log-dir", str(tmp_path / "logs"), "--needle-args", "--needles 2 --depths 0 1 --lengths 256",
            "--babi-args", "--tasks qa1 qa4 --lengths 0 256"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert experiment.main(argv) == 0
    needle = json.loads((out / "transformer.needle.json").read_text())
    babi = json.loads((out / "transformer.babi.json").read_text())
    assert [(r["needles"], r["length"], r["depth"]) for r in needle["rows"]] == [(2, 256, 0.0), (2, 256, 1.0)]
    assert [(r["task"], r["length"]) for r in babi["rows"]] == [("qa1", 0), ("qa4", 0), ("qa1", 256), ("qa4", 256)]
    assert {p.name for p in out.iterdir()} == {"transformer.needle.json", "transformer.needle.png",
                                              "transformer.babi.json", "transformer.babi.png"}
    mtime = (out / "transformer.babi.json").stat().st_mtime_ns
    assert experiment.main(argv) == 0 and (out / "transformer.babi.json").stat().st_mtime_ns == mtime  # kept

    monkeypatch.setattr(render, "LONGCTX_DIR", out)
    models = render.load_longctx()
    assert list(models) == ["transformer"] and set(models["transformer"]) == {"needle", "babi"}
    table = render.longctx(models)
    cell = f"{sum(r['accuracy_pct'] for r in needle['rows']) / 2:.1f}"
    assert "| model | 2 needles, 256 tokens (50) |" in table and f"| Transformer | {cell} |" in table
    qa4 = {r["length"]: r["accuracy_pct"] for r in babi["rows"] if r["task"] == "qa4"}
    assert "| model | task | (chance) | story only | 256 tokens |" in table
    assert f"| Transformer | QA4 | (17) | {qa4[0]:.1f} | {qa4[256]:.1f} |" in table
    assert "max_seq_len 256" in table and needle["environment"]["commit"][:12] in table
    monkeypatch.setattr(render, "TABLES", {"longctx": render.TABLES["longctx"]})
    text = render.render({"README.md": "a\n<!-- longctx:start -->\n(not measured yet)\n<!-- longctx:end -->\n"})
    text = text["README.md"]
    assert "(not measured yet)" not in text and "| Transformer | QA1 |" in text
    render.longctx_plot(models, tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_render_orders_models_as_the_paper_and_leaves_gaps(tmp_path, monkeypatch):
    def report(task, rows):
        return {"task": task, "metric": "choice accuracy: the metric", "checkpoint": f"runs/{task}",
                "model": {"max_seq_len": 512, "rope_theta": 1e5, "parameters": 10, "training_seq_len": 512},
                "settings": {"depths": [0.0, 1.0], "samples": 3, "tasks": ["qa1"]}, "rows": rows,
                "environment": {"device": "cpu", "cpu_threads": 2, "torch": "2", "triton": None, "python": "3",
                                "commit": "abcdef1234567890", "date": "2026-01-01"}}

    needle_rows = [{"needles": 2, "length": 512, "depth": d, "accuracy_pct": a} for d, a in ((0.0, 60.0), (1.0, 80.0))]
    babi_rows = [{"task": "qa1", "length": 0, "accuracy_pct": 40.0, "chance_pct": 100 / 6}]
    for name in ("mta", "transformer", "custom"):
        (tmp_path / f"{name}.needle.json").write_text(json.dumps(report("needle", needle_rows)))
    (tmp_path / "mta.babi.json").write_text(json.dumps(report("babi", babi_rows)))
    monkeypatch.setattr(render, "LONGCTX_DIR", tmp_path)
    models = render.load_longctx()
    assert list(models) == ["transformer", "mta", "custom"]
    table = render.longctx(models)
    assert "| Transformer | 70.0 |" in table and "| MTA | 70.0 |" in table and "| custom | 70.0 |" in table
    assert "| MTA | QA1 | (17) | 40.0 |" in table and "| Transformer | QA1" not in table
    monkeypatch.setattr(render, "LONGCTX_DIR", tmp_path / "empty")
    assert render.load_longctx() is None
