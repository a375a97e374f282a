"""benchmarks/op_speed_gpu.py end to end on a CPU (--quick), its plan and time budget, and the rendering
of its results: the issue's targets (ratios, met / missed), the tables and the plot."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark_scripts import load_benchmark

bench = load_benchmark("op_speed_gpu")
render = load_benchmark("render_docs")


def test_quick_cpu_run_writes_every_row(tmp_path, one_thread):
    out = tmp_path / "speed.json"
    bench.main(["--device", "cpu", "--quick", "--out", str(out)])
    results = json.loads(out.read_text())

    assert {"meta", "settings", "rows", "not_started", "sdpa_default_backend"} <= set(results)
    assert results["meta"]["commit"] and results["settings"]["tokens"] == bench.QUICK["tokens"]
    assert results["not_started"] == 0 and results["sdpa_default_backend"]
    rows = {(r["config"], r["seq_len"], r["method"]): r for r in results["rows"]}
    sdpa = [(None, n, m) for n in bench.QUICK["lengths"] for m in bench.SDPA_METHODS]
    mta = [(c, n, m) for c in bench.CONFIGS for n in bench.QUICK["lengths"] for m in ("triton", "reference", "chunked")]
    assert set(rows) == set(sdpa + mta)
    for (config, seq_len, method), row in rows.items():
        assert row["head_dim"] == 8 and row["batch"] == bench.QUICK["tokens"] // seq_len
        if method in ("sdpa_cudnn", "sdpa_flash", "triton"):
            assert row["status"] == "skipped" and row["reason"]
            continue
        assert row["status"] == "ok", row
        assert 0 < row["forward_ms"] and 0 < row["backward_ms"] and 0 < row["total_ms"]
        assert 1 <= row["samples"] <= bench.QUICK["repeats"] and row["peak_mib"] is None  # no CUDA memory stats
        assert (row["tflops"] is not None) == (method == "sdpa")
    assert rows[None, 32, "sdpa"]["sdpa_backend"] == results["sdpa_default_backend"]


def test_time_budget_stops_measuring_but_keeps_skips(tmp_path, one_thread):
    out = tmp_path / "speed.json"
    bench.main(["--device", "cpu", "--quick", "--time-budget-s", "0", "--out", str(out)])
    results = json.loads(out.read_text())
    assert all(row["status"] == "skipped" for row in results["rows"])
    assert results["not_started"] == 2 * (1 + 2 * len(bench.CONFIGS))  # per N: sdpa, reference and chunked per config


def test_plan_puts_the_targets_first_and_skips_the_infeasible():
    full = {name: bench.FULL[name] for name in ("lengths", "head_dims", "tokens")}
    plan = bench.planned(list(bench.CONFIGS), list(bench.METHODS), **full)
    first = plan[: 3 + 2 * len(bench.CONFIGS)]  # SDPA ×3, then triton and reference per config (chunked: last)
    assert {(m.head_dim, m.seq_len) for m in first} == {(128, 8192)} and first[0].method == "sdpa"
    assert plan[-1].method == "chunked"
    assert {m.config for m in plan if m.seq_len > bench.LONG_N} == {None, "A", "B"}
    cuda = torch.device("cuda")
    reason = {(m.method, m.seq_len): bench.skip_reason(m, cuda) for m in plan if m.head_dim == 128 and m.config == "A"}
    assert reason["reference", 8192] is None and "GiB" in reason["reference", 16384]
    assert reason["chunked", 8192] is None and reason["chunked", 16384]
    assert reason["reference", 65536] and reason["chunked", 65536]


def synthetic_results() -> dict:
    """d = 128 rows at the target lengths; triton is 5× / 20× / 50× / 12× SDPA's time (A, C met; B, D missed)."""
    def row(config, seq_len, method, total_ms, peak_mib):
        return {"config": config, "head_dim": 128, "seq_len": seq_len, "batch": 16384 // seq_len, "method": method,
                "status": "ok", "total_ms": total_ms, "peak_mib": peak_mib}

    rows = [row(None, 8192, "sdpa", 10.0, 100.0), row(None, 16384, "sdpa", 20.0, 200.0)]
    for config, slowdown in {"A": 5, "B": 20, "C": 50, "D": 12}.items():
        rows.append(row(config, 8192, "triton", 10.0 * slowdown, 400.0))
        rows.append(row(config, 8192, "reference", 900.0, 1000.0 if config == "D" else 4000.0))
    rows.append(row("A", 16384, "triton", 100.0, 500.0))  # 2.5× SDPA's memory: met
    rows.append(row("B", 16384, "triton", 100.0, 700.0))  # 3.5×: missed
    rows.append({"config": "A", "head_dim": 128, "seq_len": 16384, "batch": 1, "method": "reference",
                 "status": "skipped", "reason": "too big"})
    meta = {"device": "NVIDIA H200", "cpu_threads": 16, "torch": "2.x", "python": "3.11", "commit": "0" * 40, "date": "today"}
    settings = {"device": "cuda", "heads": 16, "tokens": 16384}
    return {"meta": meta, "settings": settings, "rows": rows, "sdpa_default_backend": "cudnn_attention"}


def test_targets_ratios_and_verdicts():
    checks = {(c["config"], c["kind"]): c for c in render.speed_targets(synthetic_results())}
    expected = {("A", "time"): (5, True), ("B", "time"): (20, False), ("C", "time"): (50, True),
                ("D", "time"): (12, False), ("A", "memory_vs_sdpa"): (2.5, True), ("B", "memory_vs_sdpa"): (3.5, False),
                ("C", "memory_vs_reference"): (0.1, True), ("D", "memory_vs_reference"): (0.4, False)}
    assert set(checks) == set(expected)
    for key, (ratio, met) in expected.items():
        assert checks[key]["ratio"] == pytest.approx(ratio) and checks[key]["met"] is met, key


def test_targets_take_the_faster_exact_backend_and_name_it():
    """Full mixing may meet a target through the chunked backend (triton out of memory, or slower)."""
    results = synthetic_results()
    for row in results["rows"]:
        if (row["config"], row["method"]) == ("C", "triton"):
            row.update(status="oom", total_ms=None, peak_mib=None)
    results["rows"] += [
        {"config": "C", "head_dim": 128, "seq_len": 8192, "batch": 2, "method": "chunked", "status": "ok",
         "total_ms": 300.0, "peak_mib": 200.0},
        {"config": "D", "head_dim": 128, "seq_len": 8192, "batch": 2, "method": "chunked", "status": "ok",
         "total_ms": 500.0, "peak_mib": 50.0},
    ]
    checks = {(c["config"], c["kind"]): c for c in render.speed_targets(results)}
    assert (checks["C", "time"]["method"], checks["C", "time"]["ratio"]) == ("chunked", pytest.approx(30))
    assert (checks["D", "time"]["method"], checks["D", "time"]["ratio"]) == ("triton", pytest.approx(12))
    assert (checks["D", "memory_vs_reference"]["method"], checks["D", "memory_vs_reference"]["met"]) == ("chunked", True)
    assert checks["A", "time"]["method"] == "triton"
    assert "| C | fwd+bwd time ÷ SDPA default's | 8k | chunked | 30× | ≤ 60× | met |" in render.op_speed_gpu(results)


def test_targets_not_measured_when_a_side_is_missing():
    results = synthetic_results()
    results["rows"] = [r for r in results["rows"] if (r["method"], r["seq_len"]) != ("sdpa", 16384)]
    checks = {(c["config"], c["kind"]): c for c in render.speed_targets(results)}
    assert checks["A", "memory_vs_sdpa"]["ratio"] is None and checks["A", "memory_vs_sdpa"]["met"] is None
    assert checks["A", "time"]["met"] is True


def test_rendered_tables_and_plot(tmp_path):
    results = synthetic_results()
    text = render.op_speed_gpu(results)
    assert text.count("| met |") == 4 and text.count("| missed |") == 4
    assert "| B | fwd+bwd time ÷ SDPA default's | 8k | triton | 20× | ≤ 16× | missed |" in text
    assert "| SDPA default (cudnn_attention) | 10.0 ms | 20.0 ms |" in text
    assert "| A triton | 50.0 ms (5×) | 100 ms (5×) |" in text
    assert "| A reference | 900 ms (90×) | — |" in text
    assert "| C triton | 400 MiB (4×) |  |" in text  # peak memory table
    assert "TFLOP/s, d = 128 (FlashAttention's count" in text and "| A triton | — | — |" in text
    assert "reasons: results/perf/op_speed_gpu.json." in text
    assert "](../../results/perf/op_speed_gpu.png)" in text
    render.op_speed_gpu_plot(results, tmp_path / "speed.png")
    assert (tmp_path / "speed.png").stat().st_size > 0


def test_render_writes_each_table_into_the_document_that_holds_its_markers(monkeypatch):
    monkeypatch.setattr(render, "TABLES", {"one": (lambda: {}, lambda results: "ONE"),
                                           "two": (lambda: {}, lambda results: "TWO"),
                                           "absent": (lambda: None, lambda results: "never")})
    texts = {"README.md": "a\n<!-- one:start -->\nold\n<!-- one:end -->\n",
             "docs/log.md": "b\n<!-- two:start -->\nold\n<!-- two:end -->\n"}
    rendered = render.render(texts)
    assert rendered == {"README.md": "a\n<!-- one:start -->\nONE\n<!-- one:end -->\n",
                        "docs/log.md": "b\n<!-- two:start -->\nTWO\n<!-- two:end -->\n"}
    with pytest.raises(ValueError, match="no document among README.md has <!-- two:start -->"):
        render.render({"README.md": texts["README.md"]})


def test_rendered_tap_rows_sweep():
    timing = {"config": "C", "forward_ms": 30.0, "backward_ms": 130.0, "total_ms": 160.0}
    results = {"meta": synthetic_results()["meta"], "sdpa": {"total_ms": 4.0},
               "settings": {"seq_len": 8192, "batch": 2, "head_dim": 128, "heads": 16},
               "timings": [{**timing, "tap_rows": 2}, {**timing, "tap_rows": 8, "total_ms": 200.0}]}
    text = render.map_tap_rows_sweep(results)
    assert "| 2 | 30.0 ms | 130.0 ms | 160.0 ms (40.0×) |" in text and "| 8 | 30.0 ms | 130.0 ms | 200.0 ms (50.0×) |" in text
    assert "× SDPA default's 4.00 ms" in text and "commit 000000000000" in text


def test_tflops_table_reads_each_row_and_marks_the_missing():
    results = synthetic_results()
    for row in results["rows"]:
        if row["config"] in (None, "A") and row["status"] == "ok":
            row["tflops"] = {"forward": 100.0, "backward": 200.0, "total": 150.4}
    lines = render.tflops_table(results, 128)
    assert lines[0] == "| method | N=8k | N=16k |" and lines[2] == "| SDPA default | 100 / 200 / 150 | 100 / 200 / 150 |"
    assert lines[3] == "| A triton | 100 / 200 / 150 | 100 / 200 / 150 |" and lines[4] == "| B triton | — | — |"


def test_tflops_table_leaves_out_configs_without_triton_rows():
    results = synthetic_results()
    results["rows"] = [row for row in results["rows"] if row["method"] != "triton"]
    assert [line.split(" |")[0] for line in render.tflops_table(results, 128)[2:]] == ["| SDPA default"]


def test_rendered_triton_profile_groups_kernels_by_kind():
    kernels = [{"name": "_forward_kernel", "calls": 1, "ms": 8.0}, {"name": "_pair_kernel", "calls": 8, "ms": 7.0},
               {"name": "nvjet_sm90_tst_128x256", "calls": 8, "ms": 2.0},
               {"name": "sm80_xmma_gemm_f32f32", "calls": 1, "ms": 0.5},
               {"name": "void at::native::elementwise_kernel<direct_copy_kernel_cuda>", "calls": 9, "ms": 1.5}]
    results = {"meta": synthetic_results()["meta"],
               "settings": {"seq_len": 8192, "head_dim": 128, "batch": 2, "heads": 16},
               "profiles": [{"config": "A", "gpu_ms": 20.0, "kernels": kernels}]}
    text = render.triton_profile(results)
    assert ("| A | 20.0 ms | `_forward_kernel` 8.0 (1); `_pair_kernel` 7.0 (8); cuBLAS GEMM 2.5 (9); "
            "copy / cast 1.5 (9); the rest 1.0 |") in text
    assert "the 5 longest kernels" in text


def test_work_factors_follow_the_kernel_algebra():
    """docs/design.md (e): A ≈ 3.5× (QK over 6·d columns), B ≈ 6× (one pass, pairs), C ≈ 9–10× (two passes),
    D ≈ 1.6–2× (two passes, full mixing), at d = 128."""
    assert bench.work_factor("A", 128) == 3.5
    assert bench.work_factor("B", 128) == pytest.approx(6.0, abs=0.05)
    assert 9 <= bench.work_factor("C", 128) <= 10
    assert 1.6 <= bench.work_factor("D", 128) <= 2
