"""How visible each true microbleed is, and what the product keeps of each visibility.

The quality floors of issue 5 count every CMB the synthetic engine labels.  The
engine's rater rule (docs/synthetic-data.md, "Truth mask") labels a lesion when
its signal loss is at least 40 % of the background *before* noise, so a faint or
tiny lesion in a noisy scan is labelled whether a reader could see it or not.
This tool measures, on the image as acquired (noise, texture and neighbours
included), each true CMB's local contrast-to-noise ratio and Rose's number
(:mod:`evaluation.conspicuity`; ``cmb evaluate`` reports recall by the same
CNR bins as its ``local_cnr`` stratum),
and, from a ``filter_effect`` run over the same folder, whether the U-Net's
candidates hold it and whether the product (``--configuration``'s rules at
``--threshold``) keeps it.  Recall is then tabulated per visibility bin and per
apparent size within it; ``--gallery`` draws examples of each bin (the slice
through the CMB's darkest voxel, the mask's outline beside it) so that a reader
can judge the bins by eye.  Measurement only: no product code reads it.

    python -m training.conspicuity --data runs/data/val --effect runs/fe/val \\
        --threshold 0.68 --out runs/conspicuity/val --gallery docs/model-card/conspicuity-val.png
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.cases import PredCMB, parse_cmbs
from evaluation.conspicuity import CNR_BINS, ROSE_BINS, measure_lesion
from evaluation.matching import match_case
from evaluation.stratify import bin_label, size_bin, stratum_sort_key
from training.data import list_cases, load_volumes
from training.parcellation.filter_effect import kept, read_cases

#: Examples per bin in the gallery, and the half-width of each tile in millimetres.
GALLERY_PER_BIN = 6
GALLERY_HALF_MM = 12.0


def bin_of(value: float | None, edges: Sequence[float]) -> str:
    """``value``'s bin as the evaluation's reports name bins ("<1", "1-2", ">=5")."""
    if value is None or not np.isfinite(value):
        return "unknown"
    return bin_label(value, edges) or "unknown"


def outcomes(record: dict[str, Any], configuration: str, threshold: float) -> dict[int, str]:
    """Per truth index of a ``filter_effect`` record: "kept" (the product reports it),
    "candidate" (among the U-Net's candidates, lost by the classifier or the rules) or
    "missed" (not among the candidates)."""
    case_id = record["case_id"]
    truth = parse_cmbs(case_id, record["truth"])
    candidates = [
        (PredCMB.from_json(c["detection"], f"{case_id} candidate {i}"), c)
        for i, c in enumerate(record["candidates"])
    ]
    known = {name for _, c in candidates for name in c["rejected_by"]}
    if candidates and configuration not in known:
        raise ValueError(
            f"{case_id}: no configuration {configuration!r} in the record (it has "
            f"{', '.join(sorted(known))})"
        )
    found = set((record.get("unet_candidates") or {}).get("truth_found") or [])
    match = match_case(truth, kept(candidates, configuration, threshold), case_id=case_id)
    hits = {p.truth_index for p in match.pairs}
    return {
        i: "kept" if i in hits else ("candidate" if i in found else "missed")
        for i in range(len(truth))
    }


def measure_folder(
    data: Path, effect: Path, configuration: str, threshold: float
) -> list[dict[str, Any]]:
    """One row per true CMB of the cases ``effect``'s run measured: its record's numbers,
    its visibility and its outcome."""
    records = {r["case_id"]: r for r in read_cases(effect / "cases.jsonl")}
    rows: list[dict[str, Any]] = []
    for ref in list_cases([data]):
        record = records.get(ref.case_id)
        if record is None or not ref.record.get("cmbs"):
            continue
        status = outcomes(record, configuration, threshold)
        if len(status) != len(ref.record["cmbs"]):
            raise ValueError(
                f"{ref.case_id}: {len(ref.record['cmbs'])} CMBs in {data} but "
                f"{len(status)} in {effect}: not the same cases"
            )
        image, labels = load_volumes(ref)
        label_array = np.rint(labels.array).astype(np.int32)
        acquisition = ref.record.get("acquisition") or {}
        for i, cmb in enumerate(ref.record["cmbs"]):
            row = {
                "case_id": ref.case_id,
                "index": i,
                "label": cmb.get("label"),
                "diameter_apparent_mm": cmb.get("diameter_apparent_mm"),
                "contrast": cmb.get("contrast"),
                "snr": acquisition.get("snr"),
                "sequence": acquisition.get("sequence"),
                "slice_thickness_mm": acquisition.get("slice_thickness_mm"),
                "outcome": status[i],
            }
            if cmb.get("label") is not None:
                row |= measure_lesion(image.array, label_array, int(cmb["label"]))
            rows.append(row)
    return rows


def _cell() -> dict[str, int]:
    return {"n": 0, "candidate": 0, "kept": 0}


def _count(cell: dict[str, int], outcome: str) -> None:
    cell["n"] += 1
    cell["candidate"] += int(outcome != "missed")
    cell["kept"] += int(outcome == "kept")


def tabulate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per CNR bin, per Rose bin, and per apparent size within each CNR bin;
    each cell: n, among the candidates, kept (recall = kept / n)."""
    total = _cell()
    by: dict[str, dict[str, dict[str, int]]] = {"cnr": {}, "rose": {}}
    by_size: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        cnr = bin_of(row.get("cnr"), CNR_BINS)
        rose = bin_of(row.get("rose"), ROSE_BINS)
        size = size_bin(row.get("diameter_apparent_mm")) or "unknown"
        _count(total, row["outcome"])
        _count(by["cnr"].setdefault(cnr, _cell()), row["outcome"])
        _count(by["rose"].setdefault(rose, _cell()), row["outcome"])
        _count(by_size.setdefault(cnr, {}).setdefault(size, _cell()), row["outcome"])

    def ordered(table: dict[str, Any]) -> dict[str, Any]:
        return {k: table[k] for k in sorted(table, key=stratum_sort_key)}

    return {
        "total": total,
        "by_cnr": ordered(by["cnr"]),
        "by_rose": ordered(by["rose"]),
        "by_cnr_and_apparent_size": {k: ordered(v) for k, v in ordered(by_size).items()},
    }


def markdown(summary: dict[str, Any]) -> str:
    """The tables as the model card prints them."""

    def line(name: str, c: dict[str, int]) -> str:
        recall = c["kept"] / c["n"] if c["n"] else 0.0
        return f"| {name} | {c['n']} | {c['candidate']} | {c['kept']} | {recall:.3f} |"

    head = "| {} | CMBs | among the candidates | kept | recall |\n|---|---|---|---|---|"
    parts = [head.format("local CNR")]
    parts += [line(k, v) for k, v in summary["by_cnr"].items()]
    parts.append(line("all", summary["total"]))
    parts += ["", head.format("Rose number")]
    parts += [line(k, v) for k, v in summary["by_rose"].items()]
    parts += ["", head.format("local CNR, apparent size")]
    for cnr, sizes in summary["by_cnr_and_apparent_size"].items():
        parts += [line(f"{cnr}, {size}", c) for size, c in sizes.items()]
    return "\n".join(parts) + "\n"


def gallery(data: Path, rows: Sequence[dict[str, Any]], out: Path, seed: int = 0) -> None:
    """A PNG: per CNR bin, up to ``GALLERY_PER_BIN`` CMBs drawn at random, each the in-plane
    slice through its darkest voxel (window: the tile's 1st-99th percentile) with its mask's
    outline in the tile beside it; titles give CNR, apparent size and outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    bins: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("cnr") is not None:
            bins.setdefault(bin_of(row["cnr"], CNR_BINS), []).append(row)
    names = sorted(bins, key=stratum_sort_key)
    refs = {ref.case_id: ref for ref in list_cases([data])}
    fig, axes = plt.subplots(
        len(names), 2 * GALLERY_PER_BIN, figsize=(2 * GALLERY_PER_BIN * 1.1, len(names) * 1.35)
    )
    axes = np.atleast_2d(axes)
    for r, name in enumerate(names):
        chosen = rng.choice(len(bins[name]), min(GALLERY_PER_BIN, len(bins[name])), replace=False)
        for c in range(GALLERY_PER_BIN):
            for ax in axes[r, 2 * c : 2 * c + 2]:
                ax.axis("off")
            if c >= len(chosen):
                continue
            row = bins[name][int(chosen[c])]
            image, labels = load_volumes(refs[row["case_id"]])
            mask = np.rint(labels.array).astype(np.int32) == int(row["label"])
            masked = np.where(mask, image.array, np.inf)
            k, j, i = np.unravel_index(int(np.argmin(masked)), mask.shape)
            spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
            hj = max(3, round(GALLERY_HALF_MM / spacing[1]))
            hi = max(3, round(GALLERY_HALF_MM / spacing[2]))
            window = (k, slice(max(j - hj, 0), j + hj + 1), slice(max(i - hi, 0), i + hi + 1))
            tile = image.array[window]
            lo, top = np.percentile(tile, [1, 99])
            extent = (0, tile.shape[1] * spacing[2], 0, tile.shape[0] * spacing[1])
            for ax in axes[r, 2 * c : 2 * c + 2]:
                ax.imshow(tile, cmap="gray", vmin=lo, vmax=top, extent=extent)
            axes[r, 2 * c + 1].contour(
                mask[window].astype(float),
                levels=[0.5],
                colors="r",
                linewidths=0.6,
                extent=extent,
                origin="upper",
            )
            axes[r, 2 * c].set_title(
                f"CNR {row['cnr']:.1f}, {row['diameter_apparent_mm']:.1f} mm\n{row['outcome']}",
                fontsize=6,
            )
        axes[r, 0].text(
            -0.15,
            0.5,
            f"CNR {name}",
            transform=axes[r, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=8,
        )
    fig.tight_layout(pad=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the synthetic folder (cases.jsonl)")
    ap.add_argument(
        "--effect", type=Path, required=True, help="a filter_effect --out folder over --data"
    )
    ap.add_argument("--threshold", type=float, required=True, help="classifier threshold")
    ap.add_argument("--configuration", default="defaults", help="the rules' configuration")
    ap.add_argument("--out", type=Path, required=True, help="folder for cmbs.jsonl, summary")
    ap.add_argument("--gallery", type=Path, help="PNG of example CMBs per CNR bin")
    args = ap.parse_args(argv)

    rows = measure_folder(args.data, args.effect, args.configuration, args.threshold)
    if not rows:
        ap.error(f"no true CMB of {args.data} is in {args.effect}'s records")
    summary = {
        "n_cases": len({row["case_id"] for row in rows}),
        "data": str(args.data),
        "effect": str(args.effect),
        "configuration": args.configuration,
        "threshold": args.threshold,
        **tabulate(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "cmbs.jsonl").open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary)
    (args.out / "summary.md").write_text(table)
    print(
        f"{len(rows)} true CMBs of {summary['n_cases']} cases with CMBs measured by {args.effect}"
    )
    print(table, end="")
    if args.gallery:
        gallery(args.data, rows, args.gallery)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
