"""The kernel-width experiment on the CPU (experiments/toy_reach.py): one results file per run, with the error by
reach (tiny settings)."""

import json

import pytest
from benchmark_scripts import load_benchmark

TINY = ["--", "--steps", "2", "--eval-every", "2", "--eval-samples", "8", "--dim", "16", "--layers", "1",
        "--num-blocks", "3", "--no-progress"]


def load_script():
    return load_benchmark("toy_reach", folder="experiments")


def test_every_run_writes_its_error_by_reach_and_skip_done_leaves_it(tmp_path, capsys):
    script = load_script()
    out = ["--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    with pytest.warns(UserWarning, match="c_k = 5 < 2·n_block − 1 = 15"):
        script.main(["--kernels", "2x5", "2x15", *out, *TINY])
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["mta-k2x15-s42.json", "mta-k2x5-s42.json", "transformer-s42.json"]
    for name in names:
        result = json.loads((tmp_path / "out" / name).read_text())
        assert (result["n_block"], result["variant"], result["num_blocks"], result["steps"]) == (8, "first", 3, 2)
        assert sum(row["samples"] for row in result["final_sequence_error_pct_by_reach"]) == 8
        assert [point["step"] for point in result["curve"]] == [2]
        if result["arch"] == "mta":
            assert f"k{result['model_config']['pre_kernel'][0]}x{result['model_config']['pre_kernel'][1]}" in name
    capsys.readouterr()
    script.main(["--kernels", "2x5", "--skip-done", *out, *TINY])
    assert capsys.readouterr().out.splitlines() == ["transformer-s42: done, skipped", "mta-k2x5-s42: done, skipped"]


@pytest.mark.parametrize("text", ["2x8", "2", "axb", "0x9"])
def test_a_bad_kernel_names_the_flag(text, capsys):
    with pytest.raises(SystemExit):
        load_script().main(["--kernels", text])
    assert "argument --kernels" in capsys.readouterr().err
