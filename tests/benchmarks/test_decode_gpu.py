"""benchmarks/decode_gpu.py end to end on a CPU (--quick: tiny presets), its random cache against a real prefill's,
the time budget, and the table of its results."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark_scripts import load_benchmark
from mta.models import DecodeCache

bench = load_benchmark("decode_gpu")
render = load_benchmark("render_docs")


def test_quick_cpu_run_writes_every_row(tmp_path, one_thread):
    out = tmp_path / "decode.json"
    bench.main(["--quick", "--out", str(out)])
    results = json.loads(out.read_text())
    assert {"meta", "settings", "rows", "not_started"} <= set(results) and results["meta"]["commit"]
    assert results["not_started"] == 0 and results["settings"]["size"] == "tiny"
    rows = {(r["method"], r["context"]): r for r in results["rows"]}
    assert set(rows) == {(m, n) for m in bench.METHODS for n in bench.QUICK["contexts"]}
    for (method, context), row in rows.items():
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] > 0 and row["peak_gib"] is None  # no CUDA memory statistics on a CPU
        assert (row["cache_gib"] is None) == (method == "mta_recompute")
        assert row["steps"] == bench.QUICK["recompute_steps" if method == "mta_recompute" else "steps"]
        assert (row["speedup_vs_recompute"] is not None) == (method == "mta_cached")
        assert "profile" not in row
    assert rows["transformer_cached", 24]["tokens_per_s_vs_transformer"] == 1.0
    assert rows["mta_cached", 48]["cache_gib"] > rows["transformer_cached", 48]["cache_gib"]  # queries, conv rows


def test_real_prefill_records_its_time(tmp_path, one_thread):
    out = tmp_path / "decode.json"
    bench.main(["--quick", "--prefill", "real", "--contexts", "16", "--methods", "mta_cached", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "ok" and row["prefill_s"] > 0


def test_profile_steps_record_the_top_ops(tmp_path, one_thread):
    out = tmp_path / "decode.json"
    bench.main(["--quick", "--contexts", "48", "--profile-steps", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok"] * 3  # the profiled steps fit the models' max_seq_len
    for row in rows:
        profile = row["profile"]
        assert profile["steps"] == 2 and profile["aten_calls_per_step"] > 10
        assert 0 < len(profile["top"]) <= 12 and all(op["op"].startswith("aten::") for op in profile["top"])
        times = [op["self_cpu_ms_per_step"] for op in profile["top"]]
        assert times == sorted(times, reverse=True)  # ranked by CPU self time on a CPU


def test_resume_measures_only_the_missing_rows(tmp_path, one_thread):
    out = tmp_path / "decode.json"
    bench.main(["--quick", "--contexts", "24", "--methods", "transformer_cached", "--out", str(out)])
    first = json.loads(out.read_text())
    results = bench.main(["--quick", "--contexts", "24", "48", "--resume", "--out", str(out)])
    rows = {(r["method"], r["context"]): r for r in results["rows"]}
    assert set(rows) == {(m, n) for m in bench.METHODS for n in (24, 48)}
    assert rows["transformer_cached", 24] == {**first["rows"][0], **{k: rows["transformer_cached", 24][k] for k in
                                              ("tokens_per_s_vs_transformer", "peak_vs_transformer", "speedup_vs_recompute")}}
    assert results["settings"]["contexts"] == [24, 48] and results["earlier_meta"] == [first["meta"]]
    assert rows["mta_cached", 24]["tokens_per_s_vs_transformer"] is not None  # ratios over old and new rows


def test_resume_refuses_other_settings(tmp_path, one_thread):
    out = tmp_path / "decode.json"
    bench.main(["--quick", "--contexts", "24", "--methods", "transformer_cached", "--out", str(out)])
    with pytest.raises(SystemExit, match="settings differ"):
        bench.main(["--quick", "--batch", "1", "--contexts", "24", "--resume", "--out", str(out)])


def test_random_cache_has_the_shapes_and_dtypes_of_a_prefill(one_thread):
    args = bench.parse_args(["--quick"])
    model = bench.build_model("mta_cached", args, torch.device("cpu"))
    real = DecodeCache(len(model.layers))
    model.hidden(torch.randint(model.config.vocab_size, (2, 20)), cache=real)
    fake = bench.random_cache(model, 2, 20, torch.device("cpu"))
    fields = ("keys", "values", "queries", "weights")
    for ours, theirs in zip(fake.layers, real.layers):
        for name in fields:
            a, b = getattr(ours, name), getattr(theirs, name)
            assert (a is None) == (b is None) and (a is None or (a.shape, a.dtype) == (b.shape, b.dtype)), name
    assert any(state.weights is not None for state in real.layers)  # the MTA preset has post-softmax conv layers
    assert bench.cache_bytes(fake) == bench.cache_bytes(real)


def test_time_budget_starts_nothing(tmp_path, one_thread):
    out = tmp_path / "decode.json"
    bench.main(["--quick", "--time-budget-s", "-1", "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["rows"] == [] and results["not_started"] == len(bench.METHODS) * len(bench.QUICK["contexts"])


def test_render_table():
    def row(method, context, tokens=None, peak=None, status="ok"):
        return {"method": method, "context": context, "status": status, "tokens_per_s": tokens, "peak_gib": peak}

    rows = [row("transformer_cached", 1024, 400.0, 2.0), row("mta_cached", 1024, 200.0, 2.1),
            row("mta_recompute", 1024, 4.0, 20.0), row("transformer_cached", 32768, 300.0, 6.0),
            row("mta_cached", 32768, 150.0, 6.3), row("mta_recompute", 32768, status="skipped")]
    bench.add_ratios(rows)
    results = {"meta": {"device": "NVIDIA H200", "cpu_threads": 16, "torch": "2.13", "triton": "3.6", "python": "3.11",
                        "commit": "0123456789abcdef", "date": "2026-01-01"},
               "settings": {"device": "cuda", "size": "880M", "batch": 1, "weights": "bfloat16", "steps": 32,
                            "warmup": 2, "recompute_steps": 3, "prefill": "random"}, "rows": rows}
    table = render.decode_gpu(results)
    assert "| 1k | 400.0 | 200.0 | 0.50× | 4.00 | 50× | 2.0 GiB | 2.1 GiB | 20.0 GiB |" in table
    assert "| 32k | 300.0 | 150.0 | 0.50× | skipped | — | 6.0 GiB | 6.3 GiB | skipped |" in table
    assert "NVIDIA H200" in table and "0123456789ab" in table
