"""Render the results pages (docs/results/*.md), the README's headline tables and the plots beside them from the
committed results files under results/.

Each table lives between `<!-- NAME:start -->` and `<!-- NAME:end -->` in one or more of DOCUMENTS and is rewritten
in place; a table whose results file is missing is left as it is.

    python benchmarks/render_docs.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
PAGES = ROOT / "docs" / "results"
DOCUMENTS = (ROOT / "README.md", *(PAGES / f"{page}.md" for page in ("toy", "lm", "longctx", "performance")))
# Figures are linked from the pages in docs/results/, two levels below the repository root.
PAGE_ROOT = "../.."


def provenance_line(meta: dict) -> str:
    return (f"<sub>{meta['device']}, {meta['cpu_threads']} CPU threads, torch {meta['torch']}, triton {meta.get('triton') or 'not installed'}, "
            f"python {meta['python']}, commit {meta['commit'][:12]}, {meta['date']}</sub>")


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


# Table 1 of the paper (toy task error %, mean ± std over 3 seeds, L = 2), quoted from docs/spec.md §4.
PAPER_TABLE1 = {
    "transformer": {(5, "all"): "51.6 ± 43.1", (5, "first"): "78.2 ± 1.5", (5, "last"): "1.3 ± 0.4",
                    (8, "all"): "31.2 ± 50.3", (8, "first"): "28.9 ± 24.9", (8, "last"): "58.4 ± 46.8"},
    "mta": {(5, "all"): "0.1 ± 0.1", (5, "first"): "0.0 ± 0.0", (5, "last"): "0.0 ± 0.0",
            (8, "all"): "0.1 ± 0.0", (8, "first"): "0.0 ± 0.0", (8, "last"): "0.0 ± 0.0"},
}
TOY_VARIANTS = ("all", "first", "last")
TOY_SETTINGS = [(n, variant) for n in (5, 8) for variant in TOY_VARIANTS]
TOY_DIR = RESULTS / "toy"
TOY_KERNEL_DIR = RESULTS / "toy_kernel15"
TOY_ARCH_LABELS = {"transformer": "Transformer", "mta": "MTA"}


def mean_std(values: list[float], digits: int = 1, one: str = " (1 seed)") -> str:
    """"mean ± sample std" with `digits` decimals; a single value gets the suffix `one` instead of a std."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}{one}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def steps_cell(run: dict) -> str:
    """A toy run's steps with Table 1's marks: ✓ solved, ⏱ stopped by the time cap, ↻ resumed across calls."""
    marks = {"solved": "✓", "interrupted": "⏱", "time_limit": "⏱"}
    return f"{run['steps'] / 1000:.1f}k{marks.get(run['stopped'], '')}{'↻' if run.get('resumed_at') else ''}"


def toy_groups(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Toy runs by (arch, N, variant)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["arch"], run["n_block"], run["variant"]), []).append(run)
    return groups


def toy_errors(runs: list[dict]) -> list[str]:
    """Table 1's error rows: ours (mean ± sample std over seeds) beside the paper's."""
    groups = toy_groups(runs)
    lines = ["Sequence error % on 1,000 held-out samples (mean ± sample std over seeds; L = 2).", "",
             "| model | " + " | ".join(f"N={n} {v}" for n, v in TOY_SETTINGS) + " |", "|---|" + "---:|" * len(TOY_SETTINGS)]
    for arch, label in TOY_ARCH_LABELS.items():
        cells = []
        for n, variant in TOY_SETTINGS:
            group = groups.get((arch, n, variant), [])
            cells.append(mean_std([r["final_sequence_error_pct"] for r in group]) if group else "—")
        lines.append(f"| {label} (ours) | " + " | ".join(cells) + " |")
        lines.append(f"| {label} (paper) | " + " | ".join(PAPER_TABLE1[arch][s] for s in TOY_SETTINGS) + " |")
    return lines


def toy_table1_headline(runs: list[dict]) -> str:
    """The README's summary of Table 1: the error rows, the number of runs and their devices."""
    devices = ", ".join(sorted({run["environment"]["device"] for run in runs}))
    return "\n".join(toy_errors(runs) + ["", f"<sub>{run_count(runs)}; {devices}</sub>"])


def toy_table1(runs: list[dict]) -> str:
    """Table 1's layout: our error % (mean ± sample std over seeds) beside the paper's, then the steps used."""
    groups = toy_groups(runs)
    header = "| model | " + " | ".join(f"N={n} {v}" for n, v in TOY_SETTINGS) + " |"
    lines = toy_errors(runs) + [
        "", "Steps used per seed (✓: solved, i.e. 0% error at three consecutive evaluations; ⏱: stopped by a time "
        "cap; otherwise the step limit; ↻: resumed from a saved training state):", "",
        header, "|---|" + "---:|" * len(TOY_SETTINGS)]
    for arch, label in TOY_ARCH_LABELS.items():
        cells = []
        for n, variant in TOY_SETTINGS:
            group = sorted(groups.get((arch, n, variant), []), key=lambda r: r["seed"])
            cells.append(" / ".join(steps_cell(r) for r in group) or "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"![held-out error against the training step of every run]({PAGE_ROOT}/results/toy/table1_curves.png)",
              "", f"<sub>{run_count(runs)}; {toy_provenance(runs)}; per-run JSON in results/toy/</sub>"]
    return "\n".join(lines)


def run_count(runs: list) -> str:
    """'1 run' or 'K runs'."""
    return f"{len(runs)} run" + ("" if len(runs) == 1 else "s")


def toy_provenance(runs: list[dict]) -> str:
    """The devices, torch versions, commits and date range of toy runs, from each run's environment."""
    environments = [run["environment"] for run in runs]
    devices, torches = (", ".join(sorted({env[key] for env in environments})) for key in ("device", "torch"))
    commits = ", ".join(sorted({env["commit"][:12] for env in environments}))
    dates = sorted(env["date"] for env in environments)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    return f"{devices}, torch {torches}, commits {commits}, {when}"


def toy_run_key(run: dict) -> tuple:
    """(arch, N, variant, seed): what pairs a wider-kernel run with its Table 1 run."""
    return run["arch"], run["n_block"], run["variant"], run["seed"]


def toy_run_order(run: dict) -> tuple:
    """Sort key of toy runs: architecture, N, variant in Table 1's order, seed."""
    return run["arch"], run["n_block"], TOY_VARIANTS.index(run["variant"]), run["seed"]


def toy_kernel_label(run: dict) -> str:
    """A toy run's pre-softmax q–k kernel as "c_q×c_k"."""
    c_q, c_k = run["model_config"]["pre_kernel"]
    return f"{c_q}×{c_k}"


def toy_kernel_ablation(runs: list[dict], table1_runs: list[dict]) -> str:
    """Toy runs with another q–k kernel (results/toy_kernel15/) beside the Table 1 run (`table1_runs`) of the same
    setting and seed: final sequence error and steps of each, and the error per target letter where recorded."""
    table1 = {toy_run_key(r): r for r in table1_runs}
    lines = ["| model | setting | seed | kernel | sequence error % | steps | error % per target letter |",
             "|---|---|---:|---|---:|---:|---|"]
    for run in sorted(runs, key=toy_run_order):
        setting = f"N={run['n_block']} {run['variant']}"
        for row, source in ((table1.get(toy_run_key(run)), "spec, Table 1"), (run, "")):
            if row is None:
                continue
            positions = row.get("final_position_error_pct")
            per_letter = " / ".join(f"{e:g}" for e in positions) if positions and len(positions) > 1 else "—"
            kernel = toy_kernel_label(row) + (f" ({source})" if source else "")
            lines.append(f"| {TOY_ARCH_LABELS[row['arch']]} | {setting} | {row['seed']} | {kernel} | "
                         f"{row['final_sequence_error_pct']:.1f} | {steps_cell(row)} | {per_letter} |")
    lines += ["", f"![each wider-kernel run beside its Table 1 run]({PAGE_ROOT}/results/toy_kernel15/curves.png)", "",
              f"<sub>{run_count(runs)} with another kernel; {toy_provenance(runs)}; per-run JSON in "
              "results/toy_kernel15/</sub>"]
    return "\n".join(lines)


def toy_reach_table(runs: list[dict], where: str) -> str:
    """Final sequence error of toy runs by reach (mta.data.toy.answer_reach: how many letters the furthest query
    letter sits from the first target letter), one row per run with its steps (Table 1's marks); `where` names the
    runs' JSON directories."""
    reaches = sorted({row["reach"] for run in runs for row in run["final_sequence_error_pct_by_reach"]})
    lines = ["| model | setting | seed | kernel | steps | sequence error % | "
             + " | ".join(f"reach {r}" for r in reaches) + " |", "|---|---|---:|---|---:|---:|" + "---:|" * len(reaches)]
    for run in sorted(runs, key=lambda r: (*toy_run_order(r), r["model_config"].get("pre_kernel") or [])):
        by_reach = {row["reach"]: row for row in run["final_sequence_error_pct_by_reach"]}
        cells = [f"{by_reach[r]['sequence_error_pct']:.1f} ({by_reach[r]['samples']})" if r in by_reach else "—"
                 for r in reaches]
        kernel = toy_kernel_label(run) if run["arch"] == "mta" else "—"
        lines.append(f"| {TOY_ARCH_LABELS[run['arch']]} | N={run['n_block']} {run['variant']} | {run['seed']} | "
                     f"{kernel} | {steps_cell(run)} | {run['final_sequence_error_pct']:.1f} | " + " | ".join(cells) + " |")
    lines += ["", f"<sub>Error % (held-out samples) at each reach; {run_count(runs)}; {toy_provenance(runs)}; per-run "
              f"JSON in {where}</sub>"]
    return "\n".join(lines)


def toy_kernel_plot(runs: list[dict], table1_runs: list[dict], path: Path) -> None:
    """Held-out sequence error vs step of each wider-kernel run beside its Table 1 run, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table1 = {toy_run_key(r): r for r in table1_runs}
    runs = sorted(runs, key=toy_run_order)
    figure, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), sharey=True, squeeze=False)
    for ax, run in zip(axes[0], runs):
        for row, color in ((table1.get(toy_run_key(run)), "tab:gray"), (run, "tab:red")):
            if row is not None and row["curve"]:
                ax.plot([p["step"] for p in row["curve"]], [p["eval_sequence_error_pct"] for p in row["curve"]],
                        color=color, label=f"{TOY_ARCH_LABELS[row['arch']]} {toy_kernel_label(row)}")
        ax.set_title(f"N={run['n_block']} {run['variant']}, seed {run['seed']}")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0, 0].set_ylabel("sequence error %")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


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


def toy_stack_speed(results: dict) -> str:
    """ms per step of one stack (or, from --lone, of one run alone), eager and compiled, per architecture."""
    settings = results["settings"]
    lone = settings.get("lone", False)
    per_step = "ms per step" if lone else "ms per step (stack)"
    lines = [f"| model | torch.compile | {per_step} | ms per run-step | × eager | warm-up |", "|---|---|---:|---:|---:|---:|"]
    for row in results["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['arch']} | {row['compile']} | {row['status']}: {row['reason'][:60]} | | | |")
            continue
        lines.append(f"| {row['arch']} | {row['compile']} | {row['ms_per_step']:.1f} | {row['ms_per_run_step']:.2f} | "
                     f"{row['speedup_vs_eager']:.2f}× | {row['warmup_s']:.0f} s |")
    trained = "One run trained alone" if lone else f"A stack of {settings['runs']} runs"
    command = "python benchmarks/toy_stack_speed.py" + (" --lone" if lone else "")
    lines += ["", f"{trained}, {settings['steps']} timed steps after {settings['warmup']} (`{command}`).", "",
              provenance_line(results["meta"])]
    return "\n".join(lines)


def only_arch(results: dict, arch: str) -> dict:
    """`results` of toy_stack_speed.py with the rows of one architecture only."""
    return {**results, "rows": [row for row in results["rows"] if row["arch"] == arch]}


OP_SPEED_GPU_RESULTS = RESULTS / "perf" / "op_speed_gpu.json"
TFLOPS_CONVENTION = ("FlashAttention's count for plain causal attention of the same shape, forward 2·B·H·N²·d, "
                     "backward 2.5× that")
SPEED_SDPA_METHODS = ("sdpa", "sdpa_cudnn", "sdpa_flash")
SPEED_MTA_METHODS = ("triton", "reference", "chunked")
SPEED_CONFIGS = {"A": "pre-softmax 6×11 q–k conv", "B": "pre+post convs, pre+post head mixing in pairs",
                 "C": "pre+post convs, full 16-head pre+post mixing (the paper's MTA layer)",
                 "D": "full pre+post mixing, no conv (talking heads)"}
# The issue's targets for the triton backend at d = 128: kind -> (what is compared, N, field, baseline method).
SPEED_TARGET_KINDS = {
    "time": ("fwd+bwd time ÷ SDPA default's", 8192, "total_ms", "sdpa"),
    "memory_vs_sdpa": ("peak memory ÷ SDPA default's", 16384, "peak_mib", "sdpa"),
    "memory_vs_reference": ("peak memory ÷ reference backend's", 8192, "peak_mib", "reference"),
}
# The exact O(N)-memory backends a target may be met with.
SPEED_TARGET_METHODS = ("triton", "chunked")
SPEED_TARGETS = (("A", "time", 6), ("B", "time", 16), ("C", "time", 60), ("D", "time", 10),
                 ("A", "memory_vs_sdpa", 3), ("B", "memory_vs_sdpa", 3),
                 ("C", "memory_vs_reference", 1 / 8), ("D", "memory_vs_reference", 1 / 8))


def speed_rows(results: dict) -> dict:
    """Rows keyed by (config, head_dim, seq_len, method); SDPA rows have config None."""
    return {(row["config"], row["head_dim"], row["seq_len"], row["method"]): row for row in results["rows"]}


def speed_targets(results: dict) -> list[dict]:
    """The issue's targets, each with the backend measured closest to it among SPEED_TARGET_METHODS (the issue lets
    full mixing take whichever exact method measures best), its ratio (None if not measured) and whether it is met."""
    rows = speed_rows(results)

    def value(config: str | None, seq_len: int, method: str, field: str) -> float | None:
        row = rows.get((config, 128, seq_len, method), {})
        return row.get(field) if row.get("status") == "ok" else None

    checks = []
    for config, kind, limit in SPEED_TARGETS:
        _, seq_len, field, baseline = SPEED_TARGET_KINDS[kind]
        base = value(None if baseline in SPEED_SDPA_METHODS else config, seq_len, baseline, field)
        measured = [(ours / base, method) for method in SPEED_TARGET_METHODS
                    if (ours := value(config, seq_len, method, field)) is not None and base]
        ratio, method = min(measured, default=(None, None))
        checks.append({"config": config, "kind": kind, "limit": limit, "ratio": ratio, "method": method,
                       "met": None if ratio is None else ratio <= limit})
    return checks


def short_n(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def speed_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}" if value >= 10 else f"{value:.2f} {unit}"


def speed_table(results: dict, head_dim: int, field: str, unit: str) -> list[str]:
    """Rows: SDPA backends, then (config, backend); columns: N. Cells: value and ratio to SDPA default."""
    rows = speed_rows(results)
    lengths = sorted({row["seq_len"] for row in results["rows"] if row["head_dim"] == head_dim})
    configs = sorted({row["config"] for row in results["rows"] if row["config"] is not None})
    lines = ["| method | " + " | ".join(f"N={short_n(n)}" for n in lengths) + " |", "|---|" + "---:|" * len(lengths)]
    labels = {"sdpa": f"SDPA default ({results.get('sdpa_default_backend') or '?'})",
              "sdpa_cudnn": "SDPA cuDNN", "sdpa_flash": "SDPA FlashAttention"}
    for config, method in [(None, m) for m in SPEED_SDPA_METHODS] + [(c, m) for c in configs for m in SPEED_MTA_METHODS]:
        cells = []
        for n in lengths:
            row, base = rows.get((config, head_dim, n, method)), rows.get((None, head_dim, n, "sdpa"), {})
            if row is None:
                cells.append("")
                continue
            if row["status"] != "ok":
                cells.append({"skipped": "—", "oom": "OOM", "error": "error"}[row["status"]])
                continue
            cell = speed_value(row[field], unit)
            if method != "sdpa" and row[field] is not None and base.get("status") == "ok" and base.get(field):
                cell += f" ({row[field] / base[field]:.3g}×)"
            cells.append(cell)
        if any(cell not in ("", "—") for cell in cells):
            lines.append(f"| {labels.get(method, f'{config} {method}')} | " + " | ".join(cells) + " |")
    return lines


def target_lines(results: dict, configs: tuple[str, ...] = tuple(SPEED_CONFIGS)) -> list[str]:
    """The issue's targets of `configs` as a table: each measured ratio (with the backend), met, missed or not
    measured."""
    lines = ["Targets (d = 128; the faster of the triton and chunked backends where both were measured):", "",
             "| config | compared | N | backend | measured | target | |", "|---|---|---:|---|---:|---:|---|"]
    for check in (c for c in speed_targets(results) if c["config"] in configs):
        what, seq_len, _, _ = SPEED_TARGET_KINDS[check["kind"]]
        measured = "—" if check["ratio"] is None else f"{check['ratio']:.3g}×"
        status = {None: "not measured", True: "met", False: "missed"}[check["met"]]
        lines.append(f"| {check['config']} | {what} | {short_n(seq_len)} | {check['method'] or '—'} | {measured} | "
                     f"≤ {check['limit']:g}× | {status} |")
    return lines


def op_speed_gpu(results: dict) -> str:
    """A full sweep of the op benchmark (results/perf/op_speed_gpu.json): the targets (met or missed), fwd+bwd time
    per d, peak memory and TFLOP/s at the largest d, per config and N, and the plot."""
    settings = results["settings"]
    lines = [f"bf16 q/k/v, float32 kernels and mixers (identity + noise), causal, H = {settings['heads']}, "
             f"B·N = {settings['tokens']:,} tokens (B = {settings['tokens']:,} // N, at least 1), on {settings['device']}. "
             "Configurations: " + "; ".join(f"**{c}** {text}" for c, text in SPEED_CONFIGS.items()) + ".",
             "", *target_lines(results)]
    head_dims = sorted({row["head_dim"] for row in results["rows"]}, reverse=True)
    for head_dim in head_dims:
        lines += ["", f"Forward + backward time, d = {head_dim} (× SDPA default):", ""]
        lines += speed_table(results, head_dim, "total_ms", "ms")
    lines += ["", f"Peak memory above the inputs, d = {head_dims[0]} (× SDPA default):", ""]
    lines += speed_table(results, head_dims[0], "peak_mib", "MiB")
    lines += ["", f"TFLOP/s, d = {head_dims[0]} ({TFLOPS_CONVENTION}), forward / backward / forward+backward:", ""]
    lines += tflops_table(results, head_dims[0])
    lines += ["", f"TFLOP/s of each configuration's own work, forward+backward, d = {head_dims[0]} (the count above "
              "times the configuration's work factor: the FLOPs an exact fused kernel needs, docs/design.md, the "
              "kernel algebra (e)), beside SDPA's:", ""]
    lines += own_work_table(results, head_dims[0])
    lines += ["", "— skipped (reason in the results JSON), OOM: out of memory. Forward and backward times separately, "
              "TFLOP/s at every d and the reasons: results/perf/op_speed_gpu.json.", "",
              f"![forward+backward time against N per configuration and backend]({PAGE_ROOT}/results/perf/op_speed_gpu.png)",
              "", provenance_line(results["meta"])]
    return "\n".join(lines)


def tflops_table(results: dict, head_dim: int) -> list[str]:
    """Rows: SDPA default and the triton backend per config; columns: N; cells: forward / backward / total TFLOP/s."""
    rows = speed_rows(results)
    lengths = sorted({row["seq_len"] for row in results["rows"] if row["head_dim"] == head_dim})
    configs = sorted({row["config"] for row in results["rows"] if row["config"] is not None})
    lines = ["| method | " + " | ".join(f"N={short_n(n)}" for n in lengths) + " |", "|---|" + "---:|" * len(lengths)]
    for config, method in [(None, "sdpa")] + [(c, "triton") for c in configs]:
        cells = []
        for n in lengths:
            row = rows.get((config, head_dim, n, method))
            ok = row is not None and row["status"] == "ok" and row.get("tflops")
            cells.append(" / ".join(f"{row['tflops'][part]:.0f}" for part in ("forward", "backward", "total"))
                         if ok else "—")
        if config is None or any(rows.get((config, head_dim, n, method)) for n in lengths):
            label = "SDPA default" if config is None else f"{config} triton"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def own_work_table(results: dict, head_dim: int) -> list[str]:
    """Rows: SDPA default, then the triton backend per config with its work factor; columns: N; cells: total
    TFLOP/s of the config's own work (plain count × op_speed_gpu.work_factor)."""
    from op_speed_gpu import work_factor  # a sibling script; imports torch and mta only when this table renders

    rows = speed_rows(results)
    lengths = sorted({row["seq_len"] for row in results["rows"] if row["head_dim"] == head_dim})
    configs = sorted({row["config"] for row in results["rows"] if row["config"] is not None})
    lines = ["| method | work | " + " | ".join(f"N={short_n(n)}" for n in lengths) + " |",
             "|---|---:|" + "---:|" * len(lengths)]
    for config, method in [(None, "sdpa")] + [(c, "triton") for c in configs]:
        factor = 1.0 if config is None else work_factor(config, head_dim)
        cells = []
        for n in lengths:
            row = rows.get((config, head_dim, n, method))
            ok = row is not None and row["status"] == "ok" and row.get("tflops")
            cells.append(f"{row['tflops']['total'] * factor:.0f}" if ok else "—")
        if config is None or any(rows.get((config, head_dim, n, method)) for n in lengths):
            label = "SDPA default" if config is None else f"{config} triton"
            lines.append(f"| {label} | {factor:.2f}× | " + " | ".join(cells) + " |")
    return lines


def kernel_label(name: str) -> str:
    """A profiler kernel name made short: Triton kernels as named, cuBLAS GEMMs and ATen's elementwise, copy and
    reduction kernels by kind."""
    if name.startswith("_"):
        return f"`{name}`"
    kinds = (("nvjet", "cuBLAS GEMM"), ("gemm", "cuBLAS GEMM"), ("gemv", "cuBLAS GEMV"), ("copy", "copy / cast"),
             ("Memcpy", "copy / cast"), ("reduce_kernel", "sum"), ("Mul", "multiply"), ("add", "add"),
             ("Fill", "fill"))
    return next((label for key, label in kinds if key in name), "other")


def triton_profile(results: dict) -> str:
    """GPU time of one forward+backward through the triton backend per configuration, by kind of kernel."""
    settings = results["settings"]
    lines = ["| config | GPU time | by kernel (ms, calls) |", "|---|---:|---|"]
    for profile in results["profiles"]:
        by_kind: dict[str, list[float]] = {}
        for kernel in profile["kernels"]:
            total = by_kind.setdefault(kernel_label(kernel["name"]), [0.0, 0])
            total[0] += kernel["ms"]
            total[1] += kernel["calls"]
        listed = sum(ms for ms, _ in by_kind.values())
        parts = [f"{label} {ms:.1f} ({calls})" for label, (ms, calls) in sorted(by_kind.items(), key=lambda kv: -kv[1][0])]
        parts.append(f"the rest {profile['gpu_ms'] - listed:.1f}")
        lines.append(f"| {profile['config']} | {profile['gpu_ms']:.1f} ms | " + "; ".join(parts) + " |")
    lines += ["", f"bf16, N = {settings['seq_len']:,}, d = {settings['head_dim']}, B = {settings['batch']}, "
              f"H = {settings['heads']}; the {len(results['profiles'][0]['kernels'])} longest kernels of each profile "
              "(results/perf/triton_profile.json, which also holds the tile sweep).", "",
              provenance_line(results["meta"])]
    return "\n".join(lines)


def map_kernels_sweep(results: dict) -> str:
    """The map-block kernels' tl.dot precision: C and D's forward+backward time (D also through the talking-heads
    kernels that the run at 7255edf compared, since removed) and the accuracy of each precision."""
    sdpa_ms = results["sdpa"]["total_ms"]
    worst = {(row["config"], row["precision"]): row["worst_relative_rms"] for row in results["accuracy"]}
    moved = results["deviation_from_ieee"]
    fused_d = any(row.get("talking_heads") for row in results["timings"])
    lines = ["| precision | C | D | " + ("D, talking-heads kernels | " if fused_d else "")
             + "worst rel. RMS vs fp32 reference (C, D) | output moved vs ieee (C, D) |",
             "|---|---:|---:|" + ("---:|" if fused_d else "") + "---:|---:|"]

    def cell(config: str, precision: str, fused: bool) -> str:
        rows = [row for row in results["timings"] if row["config"] == config and row["precision"] == precision
                and row.get("row_tiles", [16, 16]) == [16, 16] and (config == "C" or row.get("talking_heads", False) == fused)]
        return f"{rows[0]['total_ms']:.1f} ms ({rows[0]['total_ms'] / sdpa_ms:.1f}×)" if rows else "—"

    for precision in dict.fromkeys(row["precision"] for row in results["timings"]):
        shift = "—" if precision not in moved["C"] else \
            f"{moved['C'][precision]['output']:.1e}, {moved['D'][precision]['output']:.1e}"
        timings = [cell("C", precision, False), cell("D", precision, False)] + ([cell("D", precision, True)] if fused_d else [])
        lines.append(f"| {precision} | " + " | ".join(timings) + f" | {worst[('C', precision)]:.4f}, "
                     f"{worst[('D', precision)]:.4f} | {shift} |")
    settings = results["settings"]
    lines += ["", f"Forward+backward, bf16, N = {settings['seq_len']:,}, d = {settings['head_dim']}, "
              f"B = {settings['batch']}, H = {settings['heads']}; × SDPA default's {sdpa_ms:.2f} ms in the same run. "
              f"Accuracy at N = {settings['accuracy_seq_len']:,}; \"output moved\": relative RMS between the bf16 "
              f"outputs in this precision and in ieee, queries scaled {settings['sharpness']:g}×. Rows: "
              "results/perf/map_kernels_sweep.json.", "", provenance_line(results["meta"])]
    return "\n".join(lines)


def map_block_sweep(results: dict) -> str:
    """C and D's forward+backward time and peak memory for each map-block size (map_kernels_sweep.py
    --block-elements)."""
    sdpa_ms, settings = results["sdpa"]["total_ms"], results["settings"]
    lines = ["| block elements | query rows per block | C fwd+bwd | C peak memory | D fwd+bwd | D peak memory |",
             "|---|---:|---:|---:|---:|---:|"]
    exponents = dict.fromkeys(row["block_elements_log2"] for row in results["timings"])
    for exponent in exponents:
        rows = {row["config"]: row for row in results["timings"] if row["block_elements_log2"] == exponent}
        per_block = (1 << exponent) // (settings["batch"] * settings["heads"] * settings["seq_len"])
        cells = [f"{rows[c]['total_ms']:.1f} ms ({rows[c]['total_ms'] / sdpa_ms:.1f}×) | "
                 f"{rows[c]['peak_mib'] / 1024:.1f} GiB" for c in ("C", "D")]
        lines.append(f"| 2^{exponent} | {per_block} | " + " | ".join(cells) + " |")
    return "\n".join(lines + sweep_caption(results, "map_block_sweep.json", "; peak memory above the inputs"))


def map_tap_rows_sweep(results: dict) -> str:
    """C's forward, backward and forward+backward time for each number of tap rows per program of the q–k
    convolution's kernel gradient (map_kernels_sweep.py --tap-rows)."""
    sdpa_ms = results["sdpa"]["total_ms"]
    lines = ["| tap rows per program | C forward | C backward | C fwd+bwd |", "|---:|---:|---:|---:|"]
    for row in results["timings"]:
        lines.append(f"| {row['tap_rows']} | {row['forward_ms']:.1f} ms | {row['backward_ms']:.1f} ms | "
                     f"{row['total_ms']:.1f} ms ({row['total_ms'] / sdpa_ms:.1f}×) |")
    return "\n".join(lines + sweep_caption(results, "map_tap_rows_sweep.json"))


def sweep_caption(results: dict, file_name: str, note: str = "") -> list[str]:
    """The closing lines of a table of map_kernels_sweep.py --block-elements / --tap-rows: the shape, SDPA's time
    in the same run, `note`, the rows' file (results/perf/`file_name`) and the provenance."""
    settings = results["settings"]
    return ["", f"bf16, N = {settings['seq_len']:,}, d = {settings['head_dim']}, B = {settings['batch']}, "
            f"H = {settings['heads']}; × SDPA default's {results['sdpa']['total_ms']:.2f} ms in the same run{note}. "
            f"Rows: results/perf/{file_name}.", "", provenance_line(results["meta"])]


def op_speed_gpu_plot(results: dict, path: Path) -> None:
    """Forward+backward time vs N, log-log: one panel per (head dim, config), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    rows = speed_rows(results)
    head_dims = sorted({row["head_dim"] for row in results["rows"]}, reverse=True)
    configs = sorted({row["config"] for row in results["rows"] if row["config"] is not None})
    lengths = sorted({row["seq_len"] for row in results["rows"]})
    methods = SPEED_SDPA_METHODS + SPEED_MTA_METHODS
    colors = dict(zip(methods, plt.get_cmap("tab10").colors))
    figure, axes = plt.subplots(len(head_dims), len(configs), figsize=(4 * len(configs), 3.5 * len(head_dims)),
                                squeeze=False, sharex=True)
    for head_dim, ax_row in zip(head_dims, axes):
        for config, ax in zip(configs, ax_row):
            for method in methods:
                key = None if method in SPEED_SDPA_METHODS else config
                points = [(n, rows[key, head_dim, n, method]["total_ms"]) for n in lengths
                          if rows.get((key, head_dim, n, method), {}).get("status") == "ok"]
                if points:
                    ax.loglog(*zip(*points), marker="o", linestyle="--" if key is None else "-", label=method,
                              color=colors[method])
            ax.set_xticks(lengths, [short_n(n) for n in lengths], minor=False)
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_title(f"{config}, d = {head_dim}")
            ax.set_xlabel("N")
            ax.grid(alpha=0.3, which="both")
        ax_row[0].set_ylabel("forward + backward ms")
    axes[0, 0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


MODEL_THROUGHPUT_RESULTS = RESULTS / "perf" / "model_throughput.json"
THROUGHPUT_LABELS = {"transformer": "Transformer", "mta": "MTA", "talking_heads": "Talking heads", "diff": "DIFF"}
# The issue's targets for MTA with the triton backend: field -> (comparison, limit), ratios to the Transformer.
THROUGHPUT_TARGETS = {"tokens_per_s": ("≥", 0.5), "peak_gib": ("≤", 1.5)}


def throughput_ratios(results: dict) -> dict:
    """(model, backend, batch) -> {field: ratio to the Transformer (sdpa) at the same batch, or None}."""
    rows = [row for row in results["rows"] if row["status"] == "ok"]
    bases = {row["batch"]: row for row in rows if (row["model"], row["backend"]) == ("transformer", "sdpa")}
    ratios = {}
    for row in rows:
        base = bases.get(row["batch"], {})
        ratios[row["model"], row["backend"], row["batch"]] = {
            field: row[field] / base[field] if row.get(field) is not None and base.get(field) else None
            for field in THROUGHPUT_TARGETS}
    return ratios


def throughput_targets(results: dict) -> list[dict]:
    """MTA (triton) against the targets: each {"field", "sign", "limit", "ratio", "met"}; met None if not measured."""
    ratios = throughput_ratios(results)
    mta = next((value for (model, backend, _), value in ratios.items() if (model, backend) == ("mta", "triton")), {})
    checks = []
    for field, (sign, limit) in THROUGHPUT_TARGETS.items():
        value = mta.get(field)
        met = None if value is None else (value >= limit if sign == "≥" else value <= limit)
        checks.append({"field": field, "sign": sign, "limit": limit, "ratio": value, "met": met})
    return checks


def paper_table9_ratio(paper: dict, model: str, field: str) -> str:
    """Table 9's ratio of `model` to its Transformer for `field` (tokens_per_s or peak_gib), or — (DIFF)."""
    key = {"tokens_per_s": "tokens_per_s", "peak_gib": "peak_gb"}[field]
    ours, base = paper.get(model), paper.get("transformer")
    return "—" if not ours or not base else f"{ours[key] / base[key]:.3g}×"


def model_throughput(results: dict, source: str = "results/perf/model_throughput.json") -> str:
    """Training-step tokens/s and peak memory per (model, backend), as ratios to the Transformer, beside Table 9."""
    settings, paper = results["settings"], results["paper"]
    ratios = throughput_ratios(results)
    lines = [f"One training step (forward + backward under bf16 autocast, gradient clipping 1.0, AdamW), "
             f"{settings['size']} models, N = {settings['seq_len']:,}, median of {settings['steps']} timed steps after "
             f"{settings['warmup']} warm-up, on {settings['device']}{', torch.compile' if settings.get('compile') else ''}. "
             "Ratios are to the Transformer at the same batch; the paper's (Table 9, official code, H200) beside them.",
             "", "| model | backend | batch | tokens/s | × Transformer | peak memory | × Transformer "
             "| paper tokens/s × | paper memory × |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        label = THROUGHPUT_LABELS.get(row["model"], row["model"])
        paper_cells = f"{paper_table9_ratio(paper, row['model'], 'tokens_per_s')} | {paper_table9_ratio(paper, row['model'], 'peak_gib')}"
        if row["status"] != "ok":
            status = {"skipped": "skipped", "oom": "OOM", "error": "error"}.get(row["status"], row["status"])
            lines.append(f"| {label} | {row['backend']} | {row['batch']} | {status} | | | | {paper_cells} |")
            continue
        ratio = ratios[row["model"], row["backend"], row["batch"]]
        tokens = f"{row['tokens_per_s'] / 1e3:.1f}k" if row["tokens_per_s"] >= 1e3 else f"{row['tokens_per_s']:.0f}"
        memory = "n/a" if row.get("peak_gib") is None else f"{row['peak_gib']:.1f} GiB"
        cells = ["—" if ratio[field] is None else f"{ratio[field]:.3g}×" for field in ("tokens_per_s", "peak_gib")]
        lines.append(f"| {label} | {row['backend']} | {row['batch']} | {tokens} | {cells[0]} | {memory} | {cells[1]} "
                     f"| {paper_cells} |")
    lines += ["", "Targets (MTA, triton backend, to the Transformer):", ""]
    names = {"tokens_per_s": "tokens/s", "peak_gib": "peak memory"}
    for check in throughput_targets(results):
        measured = "—" if check["ratio"] is None else f"{check['ratio']:.3g}×"
        status = {None: "not measured", True: "met", False: "missed"}[check["met"]]
        lines.append(f"- {names[check['field']]} {check['sign']} {check['limit']:g}×: {measured} — **{status}**")
    lines += ["", "reference: the materialised PyTorch op, the analogue of the official code; OOM: out of memory; "
              f"skipped/error reasons and per-step times in {source}.", "", provenance_line(results["meta"])]
    return "\n".join(lines)


DECODE_GPU_RESULTS = RESULTS / "perf" / "decode_gpu.json"


def decode_cell(row: dict | None, field: str, spec: str, unit: str = "") -> str:
    """A measured value, or why there is none (OOM, skipped, error, — not measured)."""
    if row is None:
        return "—"
    if row["status"] != "ok":
        return {"oom": "OOM", "skipped": "skipped", "error": "error"}.get(row["status"], row["status"])
    value = row.get(field)
    return "—" if value is None else f"{format(value, spec)}{unit}"


def decode_gpu(results: dict) -> str:
    """Per context N: tokens/s and peak memory of the cached Transformer, cached MTA and MTA recomputing the map."""
    settings = results["settings"]
    rows = {(row["method"], row["context"]): row for row in results["rows"]}
    contexts = sorted({context for _, context in rows})
    lines = [f"Greedy decoding, {settings['size']} models, batch {settings['batch']}, {settings['weights']} weights, "
             f"on {settings['device']}: {settings['steps']} timed steps after {settings['warmup']} warm-up "
             f"({settings['recompute_steps']} when recomputing), the cache of N positions "
             f"{'filled by running the prompt' if settings['prefill'] == 'real' else 'filled with random values of the shapes a prefill leaves'}. "
             "Peak memory includes the weights.", "",
             "| N | Transformer (KV cache) tokens/s | MTA (cache) tokens/s | × Transformer | MTA recomputing tokens/s "
             "| cache speed-up | Transformer peak | MTA peak | recomputing peak |", "|---:|" + "---:|" * 8]
    for n in contexts:
        base, mta, recompute = (rows.get((method, n)) for method in ("transformer_cached", "mta_cached", "mta_recompute"))
        lines.append(f"| {short_n(n)} | {decode_cell(base, 'tokens_per_s', '.1f')} | {decode_cell(mta, 'tokens_per_s', '.1f')} "
                     f"| {decode_cell(mta, 'tokens_per_s_vs_transformer', '.2f', '×')} "
                     f"| {decode_cell(recompute, 'tokens_per_s', '.2f')} | {decode_cell(mta, 'speedup_vs_recompute', '.3g', '×')} "
                     f"| {decode_cell(base, 'peak_gib', '.1f', ' GiB')} | {decode_cell(mta, 'peak_gib', '.1f', ' GiB')} "
                     f"| {decode_cell(recompute, 'peak_gib', '.1f', ' GiB')} |")
    lines += ["", "MTA recomputing: no cache, the whole sequence through the reference (materialised) op every step, "
              "as the official generator; skipped where its maps exceed the GPU (reasons, ms/token and cache sizes in "
              "results/perf/decode_gpu.json).", ""]
    earlier = results.get("earlier_meta", [])
    if earlier:  # rows kept by --resume were measured by those runs
        lines += ["Rows measured by earlier runs (`--resume`): " + "; ".join(
            f"commit {meta['commit'][:12]}, {meta['date']}" for meta in earlier) + "; the rest by:", ""]
    lines.append(provenance_line(results["meta"]))
    return "\n".join(lines)


def load_performance() -> dict | None:
    """The op sweep and the training-step benchmark, for the README's summary; None unless both are there."""
    op, train = load_json(OP_SPEED_GPU_RESULTS), load_json(MODEL_THROUGHPUT_RESULTS)
    return {"op": op, "train": train} if op and train else None


def performance_headline(results: dict) -> str:
    """The README's summary: per configuration at N = 8k, d = 128, the triton backend's forward+backward time and
    peak memory beside SDPA's and the reference's; then the 880M training step against the Transformer."""
    op, seq_len = results["op"], 8192
    rows = speed_rows(op)

    def ok(config: str | None, method: str) -> dict:
        row = rows.get((config, 128, seq_len, method), {})
        return row if row.get("status") == "ok" else {}

    sdpa = ok(None, "sdpa")
    lines = [f"| configuration | triton fwd+bwd (× SDPA) | triton peak memory (× SDPA) | reference peak memory |",
             "|---|---:|---:|---:|"]
    for config, text in SPEED_CONFIGS.items():
        triton, reference = ok(config, "triton"), ok(config, "reference")
        if not triton:
            continue
        memory = f"{reference['peak_mib'] / 1024:.1f} GiB" if reference else "—"
        lines.append(f"| {config}: {text} | {triton['total_ms']:.1f} ms ({triton['total_ms'] / sdpa['total_ms']:.3g}×) | "
                     f"{triton['peak_mib'] / 1024:.1f} GiB ({triton['peak_mib'] / sdpa['peak_mib']:.3g}×) | {memory} |")
    train = results["train"]
    ratio = next(value for (model, backend, _), value in throughput_ratios(train).items()
                 if (model, backend) == ("mta", "triton"))
    paper = train["paper"]
    lines += ["", f"bf16, N = {seq_len:,}, d = 128, H = {op['settings']['heads']}, on {op['meta']['device']}. "
              f"Training the {train['settings']['size']} MTA model (N = {train['settings']['seq_len']:,}): "
              f"{ratio['tokens_per_s']:.2f}× the Transformer's tokens/s at {ratio['peak_gib']:.2f}× its peak memory "
              f"(the paper's official code: {paper_table9_ratio(paper, 'mta', 'tokens_per_s')} and "
              f"{paper_table9_ratio(paper, 'mta', 'peak_gib')})."]
    return "\n".join(lines)


def load_json_files(directory: Path, pattern: str) -> list[dict] | None:
    """The JSON files in `directory` matching `pattern`, in name order; None when there are none."""
    return [json.loads(f.read_text()) for f in sorted(directory.glob(pattern))] or None


def load_toy_runs() -> list[dict] | None:
    return load_json_files(TOY_DIR, "*-N*-*-s*.json")


def load_toy_kernel_runs() -> list[dict] | None:
    return load_json_files(TOY_KERNEL_DIR, "*-N*-*-s*.json")


def load_toy_reach_runs() -> list[dict] | None:
    """The N = 8 toy runs (Table 1's and the wider-kernel ones) whose result has the error by reach."""
    runs = (load_toy_runs() or []) + (load_toy_kernel_runs() or [])
    return [run for run in runs if run["n_block"] == 8 and run.get("final_sequence_error_pct_by_reach")] or None


def triton_accuracy(results: dict) -> str:
    """Worst relative RMS and max error over the output and every gradient, per configuration and N."""
    lines = ["| config | N | output rel. RMS | worst gradient rel. RMS (which) | largest max error |", "|---|---:|---:|---:|---:|"]
    for row in results["rows"]:
        errors = row["errors"]
        worst_name = max((name for name in errors if name != "output"), key=lambda name: errors[name]["relative_rms"])
        largest = max(e["max_abs"] for e in errors.values())
        lines.append(f"| {row['config']} | {row['seq_len']:,} | {errors['output']['relative_rms']:.4f} | "
                     f"{errors[worst_name]['relative_rms']:.4f} ({worst_name}) | {largest:.3g} |")
    lines += ["", f"Bound checked by `--check`: relative RMS ≤ {results['bound_relative_rms']}; worst measured "
              f"{results['worst_relative_rms']:.4f}. H={results['rows'][0]['heads']}, d={results['rows'][0]['head_dim']}.",
              "", provenance_line(results["meta"])]
    return "\n".join(lines)


def toy_demo(runs: list[dict]) -> str:
    """The demo's two runs: held-out errors, steps and wall time per architecture."""
    lines = ["| model | sequence error % | token error % | steps | wall time |", "|---|---:|---:|---:|---:|"]
    for run in sorted(runs, key=lambda r: r["arch"] != "transformer"):
        lines.append(f"| {run['arch']} | {run['final_sequence_error_pct']:.1f} | {run['final_token_error_pct']:.1f} | "
                     f"{run['steps']:,} | {run['elapsed_s'] / 60:.1f} min |")
    config = runs[0]["train_config"]
    lines += ["", f"Task: {config['num_blocks']} blocks of {config['n_block']} letters, {config['n_query']} query letters, "
              f"label '{config['variant']}', seed {config['seed']}, {config['eval_samples']} held-out samples.",
              "", provenance_line(runs[0]["environment"])]
    return "\n".join(lines)


LONGCTX_DIR = RESULTS / "longctx"
LONGCTX_ORDER = ("transformer", "diff", "talking_heads", "mta")  # the paper's order; other names follow


def load_longctx() -> dict | None:
    """{model name: {"needle": report, "babi": report}} from results/longctx/<name>.<evaluation>.json; None if none."""
    models: dict[str, dict] = {}
    for path in sorted(LONGCTX_DIR.glob("*.json")):
        name, _, evaluation = path.stem.rpartition(".")
        if evaluation in ("needle", "babi"):
            models.setdefault(name, {})[evaluation] = json.loads(path.read_text())
    return dict(sorted(models.items(), key=lambda item: (LONGCTX_ORDER.index(item[0]) if item[0] in LONGCTX_ORDER
                                                         else len(LONGCTX_ORDER), item[0]))) or None


def longctx_label(name: str) -> str:
    return THROUGHPUT_LABELS.get(name, name)


def longctx(models: dict) -> str:
    """Needle accuracy per (needle count, length) and bAbI accuracy per (task, length), one row per model."""
    reports = [r for evaluations in models.values() for r in evaluations.values()]
    needle = [(name, e["needle"]) for name, e in models.items() if "needle" in e]
    babi = [(name, e["babi"]) for name, e in models.items() if "babi" in e]
    lines = [f"Choice accuracy % ({reports[0]['metric'].partition(': ')[2]}); chance in brackets.", ""]
    if needle:
        settings = needle[0][1]["settings"]
        columns = sorted({(r["needles"], r["length"]) for _, report in needle for r in report["rows"]})
        lines += [f"**Multi-needle retrieval**: mean over the asked needle's depths "
                  f"{', '.join(f'{d:g}' for d in settings['depths'])}; {settings['samples']} samples per depth.", "",
                  "| model | " + " | ".join(f"{k} needles, {n:,} tokens ({100 / k:.0f})" for k, n in columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for name, report in needle:
            cells = []
            for k, n in columns:
                values = [r["accuracy_pct"] for r in report["rows"] if (r["needles"], r["length"]) == (k, n)]
                cells.append(f"{sum(values) / len(values):.1f}" if values else "—")
            lines.append(f"| {longctx_label(name)} | " + " | ".join(cells) + " |")
        lines.append("")
    if babi:
        settings = babi[0][1]["settings"]
        lengths = sorted({r["length"] for _, report in babi for r in report["rows"]})
        lines += [f"**bAbI QA1–QA5 in distractor text**, by context length (story + distractor + question): "
                  f"{settings['samples']} stories per cell.", "",
                  "| model | task | (chance) | " + " | ".join(f"{n:,} tokens" if n else "story only" for n in lengths)
                  + " |", "|---|---|---:|" + "---:|" * len(lengths)]
        for name, report in babi:
            for task in report["settings"]["tasks"]:
                rows = {r["length"]: r for r in report["rows"] if r["task"] == task}
                chance = next(iter(rows.values()))["chance_pct"]
                cells = [f"{rows[n]['accuracy_pct']:.1f}" if n in rows else "—" for n in lengths]
                lines.append(f"| {longctx_label(name)} | {task.upper()} | ({chance:.0f}) | {' | '.join(cells)} |")
        lines.append("")
    described = []
    for name, evaluations in models.items():
        model = next(iter(evaluations.values()))["model"]
        trained = f"trained at {model['training_seq_len']:,} tokens, " if model.get("training_seq_len") else ""
        described.append(f"{longctx_label(name)} ({trained}max_seq_len {model['max_seq_len']:,}, "
                         f"RoPE θ {model['rope_theta']:g}, {model['parameters']:,} parameters)")
    lines += ["Models: " + "; ".join(described) + ".", "",
              f"![long-context accuracy per model]({PAGE_ROOT}/results/longctx/comparison.png)", "",
              "Per model: `results/longctx/<model>.needle.png` (depth × length heat-map per needle count) and "
              "`<model>.babi.png` (accuracy vs context length per task).", "", provenance_line(reports[0]["environment"])]
    return "\n".join(lines)


def longctx_plot(models: dict, path: Path) -> None:
    """Needle accuracy vs depth (mean over needle counts and lengths) and bAbI accuracy vs context length (mean
    over tasks), one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, evaluations in models.items():
        for ax, evaluation, key in ((left, "needle", "depth"), (right, "babi", "length")):
            if evaluation not in evaluations:
                continue
            rows = evaluations[evaluation]["rows"]
            xs = sorted({r[key] for r in rows})
            ax.plot(xs, [sum(r["accuracy_pct"] for r in rows if r[key] == x) / sum(r[key] == x for r in rows)
                         for x in xs], marker="o", label=longctx_label(name))
    left.set_xlabel("depth of the asked needle")
    left.set_title("multi-needle retrieval (mean over needle counts, lengths)")
    right.set_xlabel("context length (tokens; 0: the story alone)")
    right.set_title("bAbI QA1–QA5 (mean over tasks)")
    for ax in (left, right):
        ax.set_ylabel("accuracy %")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


LM_DIR = RESULTS / "lm"


def load_lm_runs() -> list[dict] | None:
    """The small-scale comparison's runs (experiments/lm_small.py), each with its metrics lines as "metrics"."""
    runs = load_json_files(LM_DIR, "*-s*.json")
    for run in runs or []:
        lines = (LM_DIR / f"{run['arch']}-s{run['seed']}.metrics.jsonl").read_text().splitlines()
        run["metrics"] = [json.loads(line) for line in lines if line]
    return sorted(runs, key=lambda r: (LONGCTX_ORDER.index(r["arch"]), r["seed"])) if runs else None


def lm_small(runs: list[dict]) -> str:
    """Table 2's layout: validation perplexity per domain and their mean, mean ± sample std over seeds."""
    domains = list(runs[0]["ppl"]["domains"])
    by_arch: dict[str, list[dict]] = {}
    for run in runs:
        by_arch.setdefault(run["arch"], []).append(run)

    def cell(values: list[float]) -> str:
        return mean_std(values, digits=2, one="")

    lines = ["| model | parameters | seeds | " + " | ".join(domains) + " | mean |", "|---|---:|---:|" + "---:|" * (len(domains) + 1)]
    for arch, group in by_arch.items():
        cells = [cell([r["ppl"]["domains"][d]["ppl"] for r in group]) for d in domains]
        cells.append(cell([r["ppl"]["mean_ppl"] for r in group]))
        lines.append(f"| {longctx_label(arch)} | {group[0]['config']['parameters']:,} | "
                     f"{', '.join(str(r['seed']) for r in group)} | " + " | ".join(cells) + " |")
    train, model = runs[0]["config"]["train"], runs[0]["config"]["model"]
    tokens = train["steps"] * train["batch_size"] * train["grad_accum"] * train["seq_len"]
    validation = ", ".join(f"{d} {v['tokens']:,}" for d, v in runs[0]["ppl"]["domains"].items())
    lines += ["", f"Every run: the `small-*` preset (D {model['dim']}, {model['n_layers']} layers, {model['n_heads']} heads, "
              f"vocabulary {model['vocab_size']:,}), {train['steps']:,} steps of {train['batch_size']}×{train['seq_len']} "
              f"tokens ({tokens / 1e6:.1f}M tokens), AdamW lr {train['lr']:g} with {train['warmup']} warm-up steps then "
              f"linear decay, bf16 autocast; perplexity of the final checkpoint on every validation window "
              f"({runs[0]['ppl']['seq_len']} tokens; validation tokens: {validation}). The mean is over domains, as the "
              "paper's Table 2.", "",
              f"![training loss and validation perplexity]({PAGE_ROOT}/results/lm/curves.png)", "",
              provenance_line(runs[0]["config"]["environment"])]
    return "\n".join(lines)


def lm_headline(runs: list[dict]) -> str:
    """The README's summary of the small-scale comparison: mean validation perplexity per model."""
    by_arch: dict[str, list[dict]] = {}
    for run in runs:
        by_arch.setdefault(run["arch"], []).append(run)
    lines = ["| model | parameters | mean validation perplexity |", "|---|---:|---:|"]
    for arch, group in by_arch.items():
        lines.append(f"| {longctx_label(arch)} | {group[0]['config']['parameters']:,} | "
                     f"{mean_std([r['ppl']['mean_ppl'] for r in group], digits=2, one='')} |")
    train = runs[0]["config"]["train"]
    tokens = train["steps"] * train["batch_size"] * train["grad_accum"] * train["seq_len"]
    seeds = ", ".join(str(seed) for seed in sorted({r["seed"] for r in runs}))
    lines += ["", f"<sub>Mean ± sample std over seeds {seeds}; {tokens / 1e6:.1f}M training tokens per run; "
              f"{runs[0]['config']['environment']['device']}</sub>"]
    return "\n".join(lines)


def lm_scaling(results: dict) -> str:
    """Per world size: processes, batch per process, steady tokens/s and its scaling, final loss and perplexity."""
    lines = ["| processes | parallel | sequences per process | tokens/s | × fewest processes | efficiency | "
             "final training loss | validation perplexity |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda value, spec: "—" if value is None else format(value, spec)  # noqa: E731
    for run in results["runs"]:
        lines.append(f"| {run['world_size']} | {run['parallel']} | {run['per_rank_batch']} | "
                     f"{fmt(run['tokens_per_s'], ',.0f')} | {fmt(run['speedup'], '.2f')}× | "
                     f"{fmt(run['efficiency'], '.0%')} | {fmt(run['final_loss'], '.3f')} | "
                     f"{fmt(run['val_mean_ppl'], '.2f')} |")
    lines += ["", f"`{results['preset']}`, {results['global_batch']} sequences per step in all; tokens/s after "
              f"step {results['skip_steps']}; training arguments `{' '.join(results['train_args'])}`.", "",
              f"![training loss against the step per world size]({PAGE_ROOT}/results/lm/scaling.png)", "",
              provenance_line(results["meta"])]
    return "\n".join(lines)


def lm_scaling_plot(results: dict, path: Path) -> None:
    """Training loss against the step, one line per world size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 4))
    for run in results["runs"]:
        steps, losses = zip(*run["curve"]) if run["curve"] else ((), ())
        ax.plot(steps, losses, label=f"{run['world_size']} process{'es' if run['world_size'] > 1 else ''}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def lm_curves_plot(runs: list[dict], path: Path) -> None:
    """Training loss (left) and mean validation perplexity (right) against the step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"transformer": "tab:blue", "diff": "tab:green", "talking_heads": "tab:orange", "mta": "tab:red"}
    for run in runs:
        style = dict(color=colors.get(run["arch"]), linestyle="-" if run["seed"] == runs[0]["seed"] else "--",
                     label=f"{longctx_label(run['arch'])} s{run['seed']}")
        train = [m for m in run["metrics"] if "loss" in m]
        val = [m for m in run["metrics"] if "val_mean_ppl" in m]
        left.plot([m["step"] for m in train], [m["loss"] for m in train], linewidth=0.8, **style)
        right.plot([m["step"] for m in val], [m["val_mean_ppl"] for m in val], marker="o", **style)
    left.set_ylim(top=6)
    left.set_ylabel("training loss")
    right.set_ylabel("mean validation perplexity (eval windows)")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    right.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def bench_table(file_name: str, make_table) -> tuple:
    """TABLES entry rendering results/perf/`file_name` with make_table(results)."""
    return (lambda: load_json(RESULTS / "perf" / file_name), make_table)


def toy_reach_dir_table(folder: str) -> tuple:
    """TABLES entry of experiments/toy_reach.py's runs in results/`folder`: their error by reach."""
    return (lambda: load_json_files(RESULTS / folder, "*-s*.json"),
            lambda runs: toy_reach_table(runs, f"results/{folder}/"))


TABLES = {
    "toy_demo": (lambda: load_json_files(RESULTS / "toy_demo", "*/result.json"), toy_demo),
    "toy_table1_headline": (load_toy_runs, toy_table1_headline),
    "toy_table1": (load_toy_runs, toy_table1),
    "toy_kernel15": (load_toy_kernel_runs, lambda runs: toy_kernel_ablation(runs, load_toy_runs() or [])),
    "toy_reach": (load_toy_reach_runs, lambda runs: toy_reach_table(runs, "results/toy/ and results/toy_kernel15/")),
    "toy_reach_cpu": toy_reach_dir_table("toy_reach"),
    "toy_reach_cpu_24k": toy_reach_dir_table("toy_reach_24k"),
    "lm_headline": (load_lm_runs, lm_headline),
    "lm_small": (load_lm_runs, lm_small),
    "lm_scaling": (lambda: load_json(LM_DIR / "scaling.json"), lm_scaling),
    "longctx": (load_longctx, longctx),
    "performance_headline": (load_performance, performance_headline),
    "op_cost_cpu": bench_table("op_cost_cpu.json", op_cost_cpu),
    "op_speed_gpu": (lambda: load_json(OP_SPEED_GPU_RESULTS), op_speed_gpu),
    "triton_accuracy": bench_table("triton_accuracy_gpu.json", triton_accuracy),
    "triton_accuracy_heads16": bench_table("triton_accuracy_heads16.json", triton_accuracy),
    "triton_accuracy_taprows2": bench_table("triton_accuracy_taprows2.json", triton_accuracy),
    "triton_profile": bench_table("triton_profile.json", triton_profile),
    "map_kernels_sweep": bench_table("map_kernels_sweep.json", map_kernels_sweep),
    "map_block_sweep": bench_table("map_block_sweep.json", map_block_sweep),
    "map_tap_rows_sweep": bench_table("map_tap_rows_sweep.json", map_tap_rows_sweep),
    "model_throughput": (lambda: load_json(MODEL_THROUGHPUT_RESULTS), model_throughput),
    "decode_gpu": (lambda: load_json(DECODE_GPU_RESULTS), decode_gpu),
    "toy_stack_speed": bench_table("toy_stack_speed.json", toy_stack_speed),
    "toy_stack_speed_transformer": bench_table("toy_stack_speed_transformer.json",
                                               lambda results: toy_stack_speed(only_arch(results, "transformer"))),
    "toy_lone_speed": bench_table("toy_lone_speed.json", toy_stack_speed),
}


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def render(texts: dict[str, str]) -> dict[str, str]:
    """Rewrite each table of TABLES between its markers in whichever of `texts` (document name → text) holds them;
    a table whose markers are in none of them is an error."""
    texts = dict(texts)
    for name, (load, make_table) in TABLES.items():
        results = load()
        if results is None:
            continue
        table = make_table(results)
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)", re.S)
        holders = [document for document, text in texts.items() if pattern.search(text)]
        if not holders:
            raise ValueError(f"no document among {', '.join(texts)} has <!-- {name}:start --> … <!-- {name}:end --> markers")
        for document in holders:
            texts[document] = pattern.sub(lambda m: m.group(1) + table + m.group(2), texts[document])
    return texts


def main() -> None:
    rendered = render({path.relative_to(ROOT).as_posix(): path.read_text() for path in DOCUMENTS})
    for path in DOCUMENTS:
        path.write_text(rendered[path.relative_to(ROOT).as_posix()])
    runs = load_toy_runs()
    if runs:
        toy_curves_plot(runs, TOY_DIR / "table1_curves.png")
    wide_kernel_runs = load_toy_kernel_runs()
    if wide_kernel_runs:
        toy_kernel_plot(wide_kernel_runs, runs or [], TOY_KERNEL_DIR / "curves.png")
    speed = load_json(OP_SPEED_GPU_RESULTS)
    if speed:
        op_speed_gpu_plot(speed, OP_SPEED_GPU_RESULTS.with_suffix(".png"))
    scaling = load_json(LM_DIR / "scaling.json")
    if scaling:
        lm_scaling_plot(scaling, LM_DIR / "scaling.png")
    lm_runs = load_lm_runs()
    if lm_runs:
        lm_curves_plot(lm_runs, LM_DIR / "curves.png")
    longctx_models = load_longctx()
    if longctx_models:
        longctx_plot(longctx_models, LONGCTX_DIR / "comparison.png")
    print(f"rendered {', '.join(TABLES)} into {', '.join(path.relative_to(ROOT).as_posix() for path in DOCUMENTS)}")


if __name__ == "__main__":
    main()
