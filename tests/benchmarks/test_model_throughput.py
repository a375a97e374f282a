"""benchmarks/model_throughput.py end to end on a CPU (--quick: tiny presets, 2 steps) and the table of its
results on a synthetic GPU-like results dict: ratios to the Transformer, the paper's Table 9 and the targets."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark_scripts import load_benchmark

bench = load_benchmark("model_throughput")
render = load_benchmark("render_docs")


def test_trainer_optimizer_settings():
    assert bench.OPTIMIZER == {"lr": 1.5e-4, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.05}
    assert bench.GRAD_CLIP == 1.0


def test_plan_baseline_first_reference_last():
    plan = bench.planned(list(bench.FAMILIES), "triton", 4, True, 2)
    assert [tuple(m) for m in plan] == [("transformer", "sdpa", 4), ("mta", "triton", 4), ("talking_heads", "triton", 4),
                                        ("diff", "sdpa", 4), ("transformer", "sdpa", 2), ("mta", "reference", 2),
                                        ("talking_heads", "reference", 2)]
    assert len(bench.planned(list(bench.FAMILIES), "triton", 2, True, 2)) == 6  # one Transformer row per batch
    assert len(bench.planned(list(bench.FAMILIES), "triton", 4, False, 2)) == 4


def test_quick_cpu_run_writes_every_row(tmp_path, one_thread):
    out = tmp_path / "throughput.json"
    bench.main(["--quick", "--out", str(out)])
    results = json.loads(out.read_text())

    assert {"meta", "settings", "paper", "paper_ratios", "rows", "targets", "not_started"} <= set(results)
    assert results["meta"]["commit"] and results["not_started"] == 0
    assert results["settings"]["size"] == "tiny" and results["settings"]["steps"] == 2
    assert results["paper"]["diff"] is None and results["paper_ratios"]["diff"] is None
    assert results["paper_ratios"]["mta"]["tokens_per_s_ratio"] == pytest.approx(0.105, abs=1e-3)
    assert results["paper_ratios"]["mta"]["peak_memory_ratio"] == pytest.approx(4.22, abs=1e-2)
    rows = {(r["model"], r["backend"], r["batch"]): r for r in results["rows"]}
    assert set(rows) == {tuple(m) for m in bench.planned(list(bench.FAMILIES), "triton", 2, True, 1)}
    for (model, backend, batch), row in rows.items():
        assert row["preset"] == f"tiny-{model}" and row["seq_len"] == bench.QUICK["seq_len"]
        if backend == "triton":
            assert row["status"] == "skipped" and "triton" in row["reason"]
            assert row["tokens_per_s_ratio"] is None
            continue
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] > 0 and len(row["step_ms_all"]) == 2 and row["parameters"] > 0
        assert row["peak_gib"] is None and row["peak_memory_ratio"] is None  # no CUDA memory stats
        assert torch.isfinite(torch.tensor(row["loss"]))
        assert row["tokens_per_s_ratio"] > 0
    assert rows["transformer", "sdpa", 1]["tokens_per_s_ratio"] == 1.0
    assert all(check["met"] is None for check in results["targets"].values())  # MTA triton not measured on a CPU
    assert "| MTA | reference | 1 |" in render.model_throughput(results)


def synthetic_results(mta_tokens: float, mta_peak: float) -> dict:
    def row(model, backend, batch, tokens=None, peak=None, status="ok"):
        measured = {"tokens_per_s": tokens, "peak_gib": peak} if status == "ok" else {"reason": "CUDA out of memory."}
        return {"model": model, "backend": backend, "batch": batch, "status": status, **measured}

    return {"meta": {"device": "NVIDIA H200", "cpu_threads": 16, "torch": "2.13", "triton": "3.6", "python": "3.11",
                     "commit": "0123456789abcdef", "date": "2026-01-01"},
            "settings": {"device": "cuda", "size": "880M", "seq_len": 2048, "steps": 5, "warmup": 2, "compile": False},
            "paper": bench.PAPER_TABLE9,
            "rows": [row("transformer", "sdpa", 4, 40_000, 20.0), row("mta", "triton", 4, mta_tokens, mta_peak),
                     row("talking_heads", "triton", 4, 30_000, 22.0), row("diff", "sdpa", 4, 36_000, 21.0),
                     row("transformer", "sdpa", 2, 38_000, 16.0), row("mta", "reference", 2, 4_000, 64.0),
                     row("talking_heads", "reference", 2, status="oom")]}


def test_render_table_ratios_and_targets():
    table = render.model_throughput(synthetic_results(24_000, 26.0))
    assert "| MTA | triton | 4 | 24.0k | 0.6× | 26.0 GiB | 1.3× | 0.105× | 4.22× |" in table
    assert "| MTA | reference | 2 | 4.0k | 0.105× | 64.0 GiB | 4× | 0.105× | 4.22× |" in table  # to batch-2 baseline
    assert "| DIFF | sdpa | 4 | 36.0k | 0.9× | 21.0 GiB | 1.05× | — | — |" in table
    assert "| Talking heads | reference | 2 | OOM | | | | 0.269× | 3.6× |" in table
    assert "tokens/s ≥ 0.5×: 0.6× — **met**" in table and "peak memory ≤ 1.5×: 1.3× — **met**" in table
    assert "NVIDIA H200" in table and "0123456789ab" in table

    missed = render.model_throughput(synthetic_results(12_000, 40.0))
    assert "tokens/s ≥ 0.5×: 0.3× — **missed**" in missed and "peak memory ≤ 1.5×: 2× — **missed**" in missed
    checks = render.throughput_targets(synthetic_results(12_000, 40.0))
    assert [c["met"] for c in checks] == [False, False]


def test_render_replaces_between_markers(monkeypatch):
    results = synthetic_results(24_000, 26.0)
    monkeypatch.setattr(render, "TABLES", {"model_throughput": (lambda: results, render.model_throughput)})
    text = render.render({"README.md": "a\n<!-- model_throughput:start -->\nold\n<!-- model_throughput:end -->\nb\n"})
    text = text["README.md"]
    assert "old" not in text and "| MTA | triton | 4 |" in text and text.endswith("<!-- model_throughput:end -->\nb\n")
