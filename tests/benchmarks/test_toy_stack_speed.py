"""benchmarks/toy_stack_speed.py on a CPU (--quick: tiny models): every (arch, mode) row, ratios to eager, the table."""

from __future__ import annotations

import json

from benchmark_scripts import load_benchmark

bench = load_benchmark("toy_stack_speed")
render = load_benchmark("render_docs")


def test_quick_cpu_run_times_eager_and_compiled_stacks(tmp_path, one_thread):
    out = tmp_path / "speed.json"
    bench.main(["--quick", "--archs", "transformer", "--modes", "default", "off", "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["meta"]["commit"] and results["settings"]["runs"] == 2
    rows = {(r["arch"], r["compile"]): r for r in results["rows"]}
    assert list(rows) == [("transformer", "off"), ("transformer", "default")]  # eager first
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["ms_per_run_step"] * 2 == row["ms_per_step"] and row["warmup_s"] > 0
    assert rows["transformer", "off"]["speedup_vs_eager"] == 1.0
    assert rows["transformer", "default"]["speedup_vs_eager"] > 0
    table = render.toy_stack_speed(results).splitlines()
    assert table[2].startswith("| transformer | off |") and "| 1.00× |" in table[2]
    assert table[3].startswith("| transformer | default |")


def test_profile_steps_record_the_top_ops(tmp_path, one_thread):
    out = tmp_path / "speed.json"
    bench.main(["--quick", "--archs", "mta", "--modes", "off", "--profile-steps", "2", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "ok" and row["profile"]["steps"] == 2 and row["profile"]["aten_calls_per_step"] > 10
    assert all(op["op"].startswith("aten::") for op in row["profile"]["top"])


def test_lone_run_is_timed_alone(tmp_path, one_thread):
    out = tmp_path / "speed.json"
    bench.main(["--quick", "--lone", "--archs", "mta", "--modes", "off", "--out", str(out)])
    results = json.loads(out.read_text())
    (row,) = results["rows"]
    assert results["settings"]["lone"] and row["runs"] == 1
    assert row["status"] == "ok" and row["ms_per_step"] == row["ms_per_run_step"] > 0
    table = render.toy_stack_speed(results)
    assert "| ms per step |" in table and "One run trained alone" in table and "toy_stack_speed.py --lone" in table
