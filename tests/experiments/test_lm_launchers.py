"""The language-model launchers on a CPU: the small-scale comparison (train, score, copy, extend, render) and
the multi-process scaling run (experiments/lm_small.py, experiments/lm_scaling.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")

from benchmark_scripts import load_benchmark  # noqa: E402
from mta.data.corpus import TextDomain, prepare  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "lm_small.py"
WORDS = "the of and to in a that is was he for it with as his on be at by had are but from or".split()


def test_runs_are_trained_scored_extended_and_rendered(tmp_path, monkeypatch):
    documents = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(60)) for i in range(20)]
    prepare([TextDomain("plain", "test:plain", documents)], tmp_path / "corpus", vocab_size=300, val_fraction=0.2,
            seed=0, progress=False)
    command = [sys.executable, str(SCRIPT), "--data", str(tmp_path / "corpus"), "--size", "tiny",
               "--archs", "transformer", "mta", "--seeds", "3", "--extend", "2", "--extend-set", "steps=2",
               "--extend-set", "warmup=0", "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
               "--", "--set", "steps=3", "--set", "warmup=1", "--set", "batch_size=2", "--set", "seq_len=32",
               "--set", "eval_every=3", "--set", "eval_windows=2", "--set", "checkpoint_every=3", "--set", "model.dim=32"]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "mta-s3.json", "mta-s3.metrics.jsonl", "transformer-s3.json", "transformer-s3.metrics.jsonl"]
    result = json.loads((tmp_path / "out" / "mta-s3.json").read_text())
    assert (result["arch"], result["seed"]) == ("mta", 3)
    assert result["config"]["train"]["seed"] == 3 and result["config"]["model"]["dim"] == 32
    assert set(result["ppl"]["domains"]) == {"plain"} and result["ppl"]["mean_ppl"] > 1
    extended = json.loads((tmp_path / "work" / "mta-s3-x2" / "train_config.json").read_text())
    assert extended["train"]["seq_len"] == 64 and extended["model"]["max_seq_len"] == 256
    assert extended["model"]["rope_theta"] == 4e5 and extended["model"]["dim"] == 32

    render = load_benchmark("render_docs")
    monkeypatch.setattr(render, "LM_DIR", tmp_path / "out")
    runs = render.load_lm_runs()
    assert [(r["arch"], r["seed"]) for r in runs] == [("transformer", 3), ("mta", 3)]
    table = render.lm_small(runs).splitlines()
    assert table[0] == "| model | parameters | seeds | plain | mean |"
    assert table[2].startswith("| Transformer |") and table[3].startswith(f"| MTA | {result['config']['parameters']:,} | 3 |")
    assert f"{result['ppl']['mean_ppl']:.2f} |" in table[3]
    render.lm_curves_plot(runs, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_a_failed_run_fails_the_launcher(tmp_path):
    command = [sys.executable, str(SCRIPT), "--data", str(tmp_path / "missing"), "--size", "tiny",
               "--archs", "transformer", "--seeds", "0", "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 1 and "FAILED: transformer-s0" in finished.stdout


def test_scaling_runs_each_world_size_with_the_same_global_batch(tmp_path, monkeypatch):
    documents = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(60)) for i in range(20)]
    prepare([TextDomain("plain", "test:plain", documents)], tmp_path / "corpus", vocab_size=300, val_fraction=0.2,
            seed=0, progress=False)
    out = tmp_path / "scaling.json"
    command = [sys.executable, str(ROOT / "experiments" / "lm_scaling.py"), "--data", str(tmp_path / "corpus"),
               "--preset", "tiny-transformer", "--world-sizes", "1", "2", "--global-batch", "4", "--skip-steps", "2",
               "--work-dir", str(tmp_path / "work"), "--out", str(out), "--", "--set", "steps=6", "--set", "warmup=1",
               "--set", "seq_len=32", "--set", "log_every=2", "--set", "eval_every=6", "--set", "eval_windows=2",
               "--set", "checkpoint_every=6", "--set", "model.dim=32"]
    subprocess.run(command, check=True, capture_output=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    results = json.loads(out.read_text())
    runs = {run["world_size"]: run for run in results["runs"]}
    assert [(runs[k]["per_rank_batch"], runs[k]["parallel"]) for k in (1, 2)] == [(4, "none"), (2, "ddp")]
    for run in runs.values():
        assert [step for step, _ in run["curve"]] == [2, 4, 6] and run["tokens_per_s"] > 0
        assert run["val_mean_ppl"] > 1
    assert runs[1]["speedup"] == 1.0 and runs[2]["efficiency"] == pytest.approx(runs[2]["speedup"] / 2)

    render = load_benchmark("render_docs")
    table = render.lm_scaling(results).splitlines()
    assert table[2].startswith("| 1 | none | 4 |") and table[3].startswith("| 2 | ddp | 2 |")
    render.lm_scaling_plot(results, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_scaling_rejects_a_world_size_that_does_not_divide_the_batch(tmp_path):
    finished = subprocess.run([sys.executable, str(ROOT / "experiments" / "lm_scaling.py"), "--data", "x",
                               "--world-sizes", "3", "--global-batch", "4"], capture_output=True, text=True)
    assert finished.returncode == 2 and "--world-sizes: 3 does not divide --global-batch 4" in finished.stderr
