"""Plot the recovery times of a reliability run (figures JSON written by the suite).

Usage: ``python -m tests.reliability.plot_figures F.json``; writes docs/reliability/recovery.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OUT = Path(__file__).resolve().parents[2] / "docs" / "reliability" / "recovery.png"


def main(path: str) -> int:
    faults = json.loads(Path(path).read_text())["faults"]
    rows = [(k, v["recovery_s"]) for k, v in faults.items() if v.get("recovery_s") is not None]
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.2))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="#4477aa")
    for i, (_, v) in enumerate(rows):
        ax.text(v, i, f" {v:.1f} s", va="center", fontsize=8)
    ax.set_xlabel("seconds to recovery (definitions: docs/reliability.md)")
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title("Recovery times, tests/reliability", fontsize=10)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
