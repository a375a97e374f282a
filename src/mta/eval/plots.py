"""PNG plots of the long-context evaluations (matplotlib, Agg backend): the needle heat-map and bAbI's curves."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend, or an ImportError that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install matplotlib (or 'multi-token-attention[dev]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_needle(report: dict, path: str | Path, title: str = "") -> None:
    """One heat-map per needle count: choice accuracy % by depth (rows) and context length (columns)."""
    plt = pyplot()
    settings = report["settings"]
    lengths, depths = settings["lengths"], settings["depths"]
    cells = {(r["needles"], r["length"], r["depth"]): r["accuracy_pct"] for r in report["rows"]}
    width = 1.2 + 1.4 * len(lengths) * len(settings["needles"])
    figure, axes = plt.subplots(1, len(settings["needles"]), figsize=(width, 1.2 + 0.55 * len(depths)), squeeze=False)
    for ax, k in zip(axes[0], settings["needles"]):
        grid = [[cells[k, length, depth] for length in lengths] for depth in depths]
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(lengths)), [f"{n:,}" for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_xlabel("context length (tokens)")
        ax.set_title(f"{k} needles (chance {100 / k:.0f}%)")
    axes[0, 0].set_ylabel("depth of the asked needle")
    figure.colorbar(image, ax=list(axes[0]), label="accuracy %")
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_babi(report: dict, path: str | Path, title: str = "") -> None:
    """Choice accuracy % against context length (0: the plain story), one line per task, chance dotted."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6, 4))
    lengths = report["settings"]["lengths"]
    for color, task in zip(plt.get_cmap("tab10").colors, report["settings"]["tasks"]):
        rows = {r["length"]: r for r in report["rows"] if r["task"] == task}
        ax.plot(range(len(lengths)), [rows[n]["accuracy_pct"] for n in lengths], marker="o", color=color,
                label=task.upper())
        ax.plot(range(len(lengths)), [rows[n]["chance_pct"] for n in lengths], linestyle=":", color=color,
                alpha=0.6)
    ax.set_xticks(range(len(lengths)), [f"{n:,}" if n else "story only" for n in lengths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("accuracy % (dotted: chance)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "bAbI QA1–QA5 in distractor text")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
