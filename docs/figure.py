"""Draw docs/mta-conv.png, the README's picture of MTA's q–k convolution (docs/spec.md §1).

    python docs/figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

N, QUERY, KEY, C_Q, C_K = 12, 8, 4, 2, 3


def main() -> None:
    logits = np.random.default_rng(0).normal(size=(N, N))
    logits[np.triu_indices(N, 1)] = np.nan  # future keys: zero at the convolution's input, -inf at the softmax
    figure, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(logits, cmap="Blues", vmin=-3, vmax=3)
    ax.add_patch(Rectangle((KEY - (C_K - 1) / 2 - 0.5, QUERY - (C_Q - 1) - 0.5), C_K, C_Q, fill=False,
                           edgecolor="tab:red", linewidth=2.5, label=f"{C_Q}×{C_K} kernel window"))
    ax.add_patch(Rectangle((KEY - 0.5, QUERY - 0.5), 1, 1, color="tab:red", alpha=0.6,
                           label=f"the logit of (i, j) = ({QUERY}, {KEY})"))
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    ax.set_title("The new logit of (i, j) mixes the logits of\nthe last c_q queries and the c_k keys around j")
    ax.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(Path(__file__).parent / "mta-conv.png", dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
