"""The Table 1 launcher: stacks per architecture, one results file per run (tiny settings, CPU)."""

import json
import subprocess
import sys
from pathlib import Path

from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "toy_table1.py"


def load_launcher():
    return load_benchmark("toy_table1", folder="experiments")


def test_stacks_split_each_architecture_over_the_gpus():
    launcher = load_launcher()
    settings = [(a, n, "all", s) for a in ("transformer", "mta") for n in (5, 8) for s in (1, 2)]
    assert launcher.stacks(settings, ["transformer", "mta"], 1) == [settings[:4], settings[4:]]
    four = launcher.stacks(settings, ["transformer", "mta"], 4)
    assert len(four) == 4 and all(len(group) == 2 and len({s[0] for s in group}) == 1 for group in four)
    assert sorted(s for group in four for s in group) == sorted(settings)


def test_lone_runs_are_stacks_of_one():
    settings = [(a, 5, "all", s) for a in ("transformer", "mta") for s in (1, 2)]
    assert load_launcher().stacks(settings, ["transformer", "mta"], 1, lone=True) == [[s] for s in settings]


def test_finished_means_solved_or_at_the_step_limit(tmp_path):
    launcher = load_launcher()
    for name, stopped, steps in (("a", "solved", 10), ("b", "max_steps", 100), ("c", "max_steps", 10),
                                 ("d", "time_limit", 100)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"stopped": stopped, "train_config": {"steps": steps}}))
    assert [launcher.finished(name, tmp_path, 100) for name in "abcde"] == [True, True, False, False, False]


def toy_command(tmp_path, *flags, variants=("all", "last")):
    return [sys.executable, str(SCRIPT), "--archs", "transformer", "mta", "--n-blocks", "3", "--seeds", "1",
            "--variants", *variants, "--steps", "4", "--gpus", "0", "--work-dir", str(tmp_path / "work"),
            "--out", str(tmp_path / "out"), *flags, "--", "--num-blocks", "4", "--eval-every", "2",
            "--eval-samples", "4", "--dim", "16", "--layers", "1", "--batch-size", "2", "--device", "cpu"]


def test_skip_done_runs_only_the_unfinished(tmp_path):
    subprocess.run(toy_command(tmp_path, "--lone", variants=("all",)), check=True, capture_output=True, timeout=300)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert sorted(before) == ["mta-N3-all-s1.json", "transformer-N3-all-s1.json"]
    log = (tmp_path / "work" / "sweep-0-transformer.log").read_text()
    assert '"stopped": "max_steps"' in log  # `mta toy train`'s summary: a lone run trains without a stack
    done = subprocess.run(toy_command(tmp_path, "--lone", "--skip-done"), check=True, capture_output=True,
                          text=True, timeout=300)
    assert "--skip-done: 2 runs already finished" in done.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert len(after) == 4 and all(after[name] == mtime for name, mtime in before.items())  # not rerun


def test_limit_runs_the_first_unfinished(tmp_path):
    done = subprocess.run(toy_command(tmp_path, "--lone", "--skip-done", "--limit", "1"), check=True,
                          capture_output=True, text=True, timeout=300)
    assert "launched 1 runs" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["transformer-N3-all-s1.json"]
    bad = subprocess.run(toy_command(tmp_path, "--limit", "0"), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--limit: got 0" in bad.stderr


def test_every_run_writes_its_results_file(tmp_path):
    subprocess.run(toy_command(tmp_path), check=True, capture_output=True, timeout=300)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{a}-N3-{v}-s1.json" for a in ("transformer", "mta") for v in ("all", "last"))
    result = json.loads((tmp_path / "out" / "mta-N3-last-s1.json").read_text())
    assert result["steps"] == 4 and result["stopped"] == "max_steps" and result["variant"] == "last"
    assert [point["step"] for point in result["curve"]] == [2, 4]


def test_table1_renders_mean_std_steps_and_every_batch_provenance():
    """render_docs's toy_table1: mean ± std over seeds, steps with their stop and resume marks, and the commits
    and dates of every batch the runs came from."""
    render = load_benchmark("render_docs")

    def run(variant, seed, error, steps, stopped, commit, date, resumed_at=()):
        environment = {"device": "NVIDIA H200", "torch": "2.11.0", "commit": commit * 40, "date": date}
        return {"arch": "mta", "n_block": 5, "variant": variant, "seed": seed, "steps": steps, "stopped": stopped,
                "final_sequence_error_pct": error, "environment": environment, "resumed_at": list(resumed_at)}

    runs = [run("first", 42, 0.0, 14000, "solved", "a", "2026-12-02T10:00"),
            run("first", 43, 0.2, 15000, "time_limit", "b", "2026-12-02T11:00"),
            run("all", 42, 0.4, 21662, "time_limit", "a", "2026-12-02T10:00"),
            run("last", 42, 1.0, 100000, "max_steps", "b", "2026-12-02T11:00", resumed_at=[84464])]
    lines = render.toy_table1(runs).splitlines()
    assert lines[6] == "| MTA (ours) | 0.4 (1 seed) | 0.1 ± 0.1 | 1.0 (1 seed) | — | — | — |"
    assert "| MTA | 21.7k⏱ | 14.0k✓ / 15.0k⏱ | 100.0k↻ | — | — | — |" in lines
    assert "commits aaaaaaaaaaaa, bbbbbbbbbbbb, 2026-12-02T10:00 to 2026-12-02T11:00" in lines[-1]


def test_kernel_ablation_sits_beside_the_table1_run_of_its_setting_and_seed():
    """render_docs's toy_kernel_ablation: each wider-kernel run under the Table 1 run of the same setting and seed
    (none for a seed Table 1 lacks), with its steps' marks and its error per target letter where recorded."""
    render = load_benchmark("render_docs")

    def run(variant, seed, kernel, error, steps, stopped, positions=None):
        environment = {"device": "NVIDIA H200", "torch": "2.11.0", "commit": "c" * 40, "date": "2026-12-03T07:00"}
        return {"arch": "mta", "n_block": 8, "variant": variant, "seed": seed, "steps": steps, "stopped": stopped,
                "final_sequence_error_pct": error, "final_position_error_pct": positions, "resumed_at": [],
                "model_config": {"pre_kernel": kernel}, "environment": environment}

    table1 = [run("all", 42, [2, 9], 59.1, 100000, "max_steps"), run("first", 43, [2, 9], 50.0, 40000, "time_limit")]
    wide = [run("first", 42, [2, 15], 0.0, 21000, "solved", [0.0]),
            run("all", 42, [2, 15], 1.0, 100000, "max_steps", [0.0, 0.7] + [0.0] * 6)]
    lines = render.toy_kernel_ablation(wide, table1).splitlines()
    assert lines[2:5] == ["| MTA | N=8 all | 42 | 2×9 (spec, Table 1) | 59.1 | 100.0k | — |",
                          "| MTA | N=8 all | 42 | 2×15 | 1.0 | 100.0k | 0 / 0.7 / 0 / 0 / 0 / 0 / 0 / 0 |",
                          "| MTA | N=8 first | 42 | 2×15 | 0.0 | 21.0k✓ | — |"]
    assert "2 runs with another kernel; NVIDIA H200, torch 2.11.0, commits cccccccccccc, 2026-12-03T07:00" in lines[-1]


def test_in_turn_runs_one_after_another_within_the_budget(tmp_path):
    done = subprocess.run(toy_command(tmp_path, "--in-turn", "--max-minutes", "30", variants=("all",)), check=True,
                          capture_output=True, text=True, timeout=300)
    assert "run 1/2: transformer-N3-all-s1" in done.stdout and "run 2/2: mta-N3-all-s1" in done.stdout
    assert done.stdout.index("transformer-N3-all-s1: max_steps") < done.stdout.index("run 2/2")  # collected at once
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mta-N3-all-s1.json", "transformer-N3-all-s1.json"]
    log = (tmp_path / "work" / "sweep-1-mta.log").read_text()
    assert '"stopped": "max_steps"' in log  # `mta toy train`: in turn means lone


def test_in_turn_starts_nothing_under_the_minimum_left(tmp_path):
    done = subprocess.run(toy_command(tmp_path, "--in-turn", "--max-minutes", "1", "--min-run-minutes", "2"),
                          check=True, capture_output=True, text=True, timeout=120)
    assert "4 runs not started: 1.0 minutes of --max-minutes left" in done.stdout
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    bad = subprocess.run(toy_command(tmp_path, "--in-turn", "--min-run-minutes", "-1"), capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--min-run-minutes: got -1.0" in bad.stderr


def test_a_capped_lone_run_goes_on_from_its_packed_state(tmp_path):
    """--max-minutes 0 cuts the run after one step; --state-to packs its state, the work directory goes (as a
    device machine's would), and the next call unpacks it with --state-from and finishes the run."""
    command = toy_command(tmp_path, "--lone", "--skip-done", variants=("last",))
    command.remove("transformer")
    first = command[:command.index("--")] + ["--max-minutes", "0", "--state-to", str(tmp_path / "state")]
    capped = subprocess.run(first + command[command.index("--"):], check=True, capture_output=True, text=True,
                            timeout=300)
    assert "--state-to: 1 pieces" in capped.stdout
    assert json.loads((tmp_path / "out" / "mta-N3-last-s1.json").read_text())["stopped"] == "time_limit"
    for path in sorted((tmp_path / "work").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    second = command[:command.index("--")] + ["--state-from", str(tmp_path / "state")]
    resumed = subprocess.run(second + command[command.index("--"):], check=True, capture_output=True, text=True,
                             timeout=300)
    assert "--state-from: training states of ['mta-N3-last-s1']" in resumed.stdout
    result = json.loads((tmp_path / "out" / "mta-N3-last-s1.json").read_text())
    assert result["stopped"] == "max_steps" and result["steps"] == 4 and result["resumed_at"] == [1]
    assert [point["step"] for point in result["curve"]] == [1, 2, 4]


def test_pack_and_unpack_states_in_pieces(tmp_path, monkeypatch):
    launcher = load_launcher()
    monkeypatch.setattr(launcher, "STATE_PIECE_BYTES", 4096)
    run = tmp_path / "work" / "mta-N5-all-s42"
    (run / "checkpoints" / "step-00000007").mkdir(parents=True)
    (run / "checkpoints" / "step-00000007" / "optimizer.pt").write_bytes(bytes(range(256)) * 40)
    (run / "metrics.jsonl").write_text('{"step": 7}\n')
    (tmp_path / "work" / "finished-run").mkdir()  # no state: left out
    pieces = launcher.pack_states(tmp_path / "work", ["mta-N5-all-s42", "finished-run"], tmp_path / "state")
    assert len(pieces) > 2 and all(p.stat().st_size <= 4096 for p in pieces)
    assert launcher.unpack_states(tmp_path / "state", tmp_path / "again") == ["mta-N5-all-s42"]
    copy = tmp_path / "again" / "mta-N5-all-s42"
    assert (copy / "checkpoints" / "step-00000007" / "optimizer.pt").read_bytes() == bytes(range(256)) * 40
    assert (copy / "metrics.jsonl").read_text() == '{"step": 7}\n'
    assert launcher.unpack_states(tmp_path / "nothing", tmp_path / "again") == []


def test_runs_with_a_state_go_first(tmp_path):
    launcher = load_launcher()
    settings = [("mta", 8, v, 42) for v in ("all", "first", "last")]
    (tmp_path / "mta-N8-last-s42" / "checkpoints" / "step-00000100").mkdir(parents=True)
    assert launcher.resumable_first(settings, tmp_path) == [settings[2], settings[0], settings[1]]
    assert launcher.resumable_first(settings, tmp_path / "empty") == settings


def test_reach_table_has_a_row_per_run_and_a_column_per_reach():
    """render_docs's toy_reach_table: each run's steps and final error at every reach any run has, "—" where it
    has none, runs in Table 1's order and the spec's kernel before a wider one."""
    render = load_benchmark("render_docs")

    def run(arch, seed, kernel, by_reach, steps=3000, stopped="max_steps"):
        environment = {"device": "NVIDIA H200", "torch": "2.11.0", "commit": "d" * 40, "date": "2026-12-04T07:00"}
        rows = [{"reach": r, "samples": n, "sequence_error_pct": e} for r, n, e in by_reach]
        error = sum(n * e for _, n, e in by_reach) / sum(n for _, n, _ in by_reach)
        return {"arch": arch, "n_block": 8, "variant": "last", "seed": seed, "steps": steps, "stopped": stopped,
                "final_sequence_error_pct": error, "final_sequence_error_pct_by_reach": rows,
                "model_config": {"pre_kernel": kernel}, "environment": environment}

    runs = [run("mta", 43, [2, 15], [(1, 10, 0.0), (5, 30, 10.0)]),
            run("mta", 43, [2, 9], [(1, 10, 0.0), (5, 30, 80.0)]),
            run("transformer", 44, None, [(2, 20, 50.0)], steps=42000, stopped="solved")]
    lines = render.toy_reach_table(runs, "results/toy/").splitlines()
    assert lines[0] == "| model | setting | seed | kernel | steps | sequence error % | reach 1 | reach 2 | reach 5 |"
    assert lines[2:5] == ["| MTA | N=8 last | 43 | 2×9 | 3.0k | 60.0 | 0.0 (10) | — | 80.0 (30) |",
                          "| MTA | N=8 last | 43 | 2×15 | 3.0k | 7.5 | 0.0 (10) | — | 10.0 (30) |",
                          "| Transformer | N=8 last | 44 | — | 42.0k✓ | 50.0 | — | 50.0 (20) | — |"]
    assert "3 runs; NVIDIA H200, torch 2.11.0, commits dddddddddddd, 2026-12-04T07:00; per-run JSON in results/toy/" \
        in lines[-1]
    assert "at each reach; 1 run; NVIDIA H200" in render.toy_reach_table(runs[:1], "results/toy/").splitlines()[-1]
