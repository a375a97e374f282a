"""Render the README's result tables (and the plots beside them) from the committed results files.

Each table lives between `<!-- NAME:start -->` and `<!-- NAME:end -->` in README.md and is rewritten in place;
a table whose results file is missing is left as it is.

    python benchmarks/render_readme.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def provenance_line(meta: dict) -> str:
    return (f"<sub>{meta['device']}, {meta['cpu_threads']} threads, torch {meta['torch']}, python {meta['python']}, "
            f"commit {meta['commit'][:12]}, {meta['date']}</sub>")


def op_cost_cpu(results: dict) -> str:
    """Table: per N, time and peak memory of each backend, and the ratios to SDPA."""
    rows = {(row["method"], row["seq_len"]): row for row in results["rows"]}
    lengths = sorted({n for _, n in rows})
    methods = ("sdpa", "reference", "chunked")
    config = results["config"]
    lines = [
        f"Forward + backward, float32, B={config['batch']}, H={config['heads']}, d={config['head_dim']}, "
        f"{config['mta_options']} (SDPA: plain causal attention, the baseline).",
        "",
        "| N | " + " | ".join(f"{m} time" for m in methods) + " | " + " | ".join(f"{m} peak memory" for m in methods) + " |",
        "|---|" + "---:|" * (2 * len(methods)),
    ]
    for n in lengths:
        base = rows.get(("sdpa", n), {})
        times, memories = [], []
        for method in methods:
            row = rows.get((method, n), {})
            if "total_s" in row:
                ratio = f" ({row['total_s'] / base['total_s']:.0f}×)" if method != "sdpa" and "total_s" in base else ""
                times.append(f"{row['total_s']:.2f} s{ratio}")
                memories.append(f"{row['peak_mib']:.0f} MiB")
            else:
                times.append("—")
                memories.append(row.get("skipped") or row.get("error") or "—")
        lines.append(f"| {n:,} | " + " | ".join(times) + " | " + " | ".join(memories) + " |")
    lines += ["", provenance_line(results["meta"])]
    return "\n".join(lines)


# Table 1 of the paper (toy task error %, mean ± std over 3 seeds, L = 2), quoted from shared/mta-spec.md §4.
PAPER_TABLE1 = {
    "transformer": {(5, "all"): "51.6 ± 43.1", (5, "first"): "78.2 ± 1.5", (5, "last"): "1.3 ± 0.4",
                    (8, "all"): "31.2 ± 50.3", (8, "first"): "28.9 ± 24.9", (8, "last"): "58.4 ± 46.8"},
    "mta": {(5, "all"): "0.1 ± 0.1", (5, "first"): "0.0 ± 0.0", (5, "last"): "0.0 ± 0.0",
            (8, "all"): "0.1 ± 0.0", (8, "first"): "0.0 ± 0.0", (8, "last"): "0.0 ± 0.0"},
}
TOY_SETTINGS = [(n, variant) for n in (5, 8) for variant in ("all", "first", "last")]
TOY_DIR = ROOT / "results" / "toy"


def mean_std(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.1f} (1 seed)"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.1f} ± {std:.1f}"


def toy_table1(runs: list[dict]) -> str:
    """Table 1's layout: our error % (mean ± sample std over seeds) beside the paper's, then the steps used."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["arch"], run["n_block"], run["variant"]), []).append(run)
    header = "| model | " + " | ".join(f"N={n} {v}" for n, v in TOY_SETTINGS) + " |"
    lines = ["Sequence error % on 1,000 held-out samples (mean ± sample std over seeds; L = 2).", "",
             header, "|---|" + "---:|" * len(TOY_SETTINGS)]
    for arch, label in (("transformer", "Transformer"), ("mta", "MTA")):
        cells = []
        for n, variant in TOY_SETTINGS:
            group = groups.get((arch, n, variant), [])
            cells.append(mean_std([r["final_sequence_error_pct"] for r in group]) if group else "—")
        lines.append(f"| {label} (ours) | " + " | ".join(cells) + " |")
        lines.append(f"| {label} (paper) | " + " | ".join(PAPER_TABLE1[arch][s] for s in TOY_SETTINGS) + " |")
    lines += ["", "Steps used per seed (✓: solved, i.e. 0% error at three consecutive evaluations; ⏱: stopped by the "
              "time cap; otherwise the step limit):", "", header, "|---|" + "---:|" * len(TOY_SETTINGS)]
    marks = {"solved": "✓", "interrupted": "⏱"}
    for arch, label in (("transformer", "Transformer"), ("mta", "MTA")):
        cells = []
        for n, variant in TOY_SETTINGS:
            group = sorted(groups.get((arch, n, variant), []), key=lambda r: r["seed"])
            cells.append(" / ".join(f"{r['steps'] / 1000:.1f}k{marks.get(r['stopped'], '')}" for r in group) or "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    meta = runs[0]["environment"]
    lines += ["", f"<sub>{len(runs)} runs; {meta['device']}, torch {meta['torch']}, commit {meta['commit'][:12]}, "
              f"{meta['date']}; per-run JSON in results/toy/, curves in results/toy/table1_curves.png</sub>"]
    return "\n".join(lines)


def toy_curves_plot(runs: list[dict], path: Path) -> None:
    """Held-out sequence error vs training step, one panel per (N, variant), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharey=True)
    colors = {"transformer": "tab:blue", "mta": "tab:red"}
    for ax, (n, variant) in zip(axes.flat, TOY_SETTINGS):
        for run in runs:
            if (run["n_block"], run["variant"]) == (n, variant) and run["curve"]:
                steps = [point["step"] for point in run["curve"]]
                errors = [point["eval_sequence_error_pct"] for point in run["curve"]]
                ax.plot(steps, errors, color=colors[run["arch"]], alpha=0.8, label=f"{run['arch']} s{run['seed']}")
        ax.set_title(f"N={n}, {variant}")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("sequence error %")
    handles = [plt.Line2D([], [], color=c, label=a) for a, c in colors.items()]
    figure.legend(handles=handles, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def load_toy_runs() -> list[dict] | None:
    files = sorted(TOY_DIR.glob("*-N*-*-s*.json"))
    return [json.loads(f.read_text()) for f in files] or None


TABLES = {
    "op_cost_cpu": (lambda: load_json(ROOT / "benchmarks" / "results" / "op_cost_cpu.json"), op_cost_cpu),
    "toy_table1": (load_toy_runs, toy_table1),
}


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def render(text: str) -> str:
    for name, (load, make_table) in TABLES.items():
        results = load()
        if results is None:
            continue
        table = make_table(results)
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README.md has no <!-- {name}:start --> … <!-- {name}:end --> markers")
        text = pattern.sub(lambda m: m.group(1) + table + m.group(2), text)
    return text


def main() -> None:
    README.write_text(render(README.read_text()))
    runs = load_toy_runs()
    if runs:
        toy_curves_plot(runs, TOY_DIR / "table1_curves.png")
    print(f"rendered {', '.join(TABLES)} into {README}")


if __name__ == "__main__":
    main()
