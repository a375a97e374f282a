"""Render the README's result tables from the committed results files.

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


TABLES = {"op_cost_cpu": (ROOT / "benchmarks" / "results" / "op_cost_cpu.json", op_cost_cpu)}


def render(text: str) -> str:
    for name, (path, make_table) in TABLES.items():
        if not path.exists():
            continue
        table = make_table(json.loads(path.read_text()))
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README.md has no <!-- {name}:start --> … <!-- {name}:end --> markers")
        text = pattern.sub(lambda m: m.group(1) + table + m.group(2), text)
    return text


def main() -> None:
    README.write_text(render(README.read_text()))
    print(f"rendered {', '.join(TABLES)} into {README}")


if __name__ == "__main__":
    main()
