"""The small-scale comparison launcher: every run trained, scored and copied; the context extension (CPU)."""

import json
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

    render = load_benchmark("render_readme")
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
