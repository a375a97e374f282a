"""The Table 1 launcher: stacks per architecture, one results file per run (tiny settings, CPU)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "toy_table1.py"


def load_launcher():
    spec = importlib.util.spec_from_file_location("toy_table1", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stacks_split_each_architecture_over_the_gpus():
    launcher = load_launcher()
    settings = [(a, n, "all", s) for a in ("transformer", "mta") for n in (5, 8) for s in (1, 2)]
    assert launcher.stacks(settings, ["transformer", "mta"], 1) == [settings[:4], settings[4:]]
    four = launcher.stacks(settings, ["transformer", "mta"], 4)
    assert len(four) == 4 and all(len(group) == 2 and len({s[0] for s in group}) == 1 for group in four)
    assert sorted(s for group in four for s in group) == sorted(settings)


def test_every_run_writes_its_results_file(tmp_path):
    command = [sys.executable, str(SCRIPT), "--archs", "transformer", "mta", "--n-blocks", "3", "--seeds", "1",
               "--variants", "all", "last", "--steps", "4", "--gpus", "0", "--work-dir", str(tmp_path / "work"),
               "--out", str(tmp_path / "out"), "--", "--num-blocks", "4", "--eval-every", "2", "--eval-samples", "4",
               "--dim", "16", "--layers", "1", "--batch-size", "2", "--device", "cpu"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{a}-N3-{v}-s1.json" for a in ("transformer", "mta") for v in ("all", "last"))
    result = json.loads((tmp_path / "out" / "mta-N3-last-s1.json").read_text())
    assert result["steps"] == 4 and result["stopped"] == "max_steps" and result["variant"] == "last"
    assert [point["step"] for point in result["curve"]] == [2, 4]
