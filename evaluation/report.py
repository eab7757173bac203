"""Writing an evaluation: metrics.json, per_cmb.csv, report.md / report.html and PNG plots.

Tables are built once (``Table``) and rendered as plain text (the printed
summary), Markdown and HTML, so the three never disagree.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.api import EvaluationResult

PLOTS = {
    "froc": "froc.png",
    "size": "recall_by_size.png",
    "apparent_size": "recall_by_apparent_size.png",
    "local_cnr": "recall_by_local_cnr.png",
    "slice_thickness": "recall_by_slice_thickness.png",
    "region": "recall_by_region.png",
}


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def text(self) -> str:
        widths = [
            max(len(h), *(len(r[n]) for r in self.rows)) if self.rows else len(h)
            for n, h in enumerate(self.headers)
        ]
        line = "  ".join("-" * w for w in widths)
        out = [
            self.title,
            line,
            "  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True)),
            line,
        ]
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in self.rows]
        out.append(line)
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |"]
        out.append("|" + "|".join("---" for _ in self.headers) + "|")
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self.rows]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows
        )
        return (
            f"<h3>{html.escape(self.title)}</h3>\n<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>\n"
        )


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"


def _global(est: dict[str, Any], digits: int = 3) -> str:
    v, ci = est["value"], est["ci95"]
    if v is None:
        return "n/a"
    return f"{v:.{digits}f} ({ci[0]:.{digits}f}-{ci[1]:.{digits}f})" if ci else f"{v:.{digits}f}"


def _mean_sd(d: dict[str, Any] | None, digits: int = 3) -> str:
    if not d or d["mean"] is None:
        return "n/a"
    sd = f" ± {d['sd']:.{digits}f}" if d["sd"] is not None else ""
    return f"{d['mean']:.{digits}f}{sd} [n={d['n']}, excl. {d['n_excluded']}]"


def summary_table(result: EvaluationResult) -> Table:
    """The one-table summary, in the style of a paper's results table."""
    m = result.metrics
    g, ps = m["detection"]["global"], m["detection"]["per_scan"]
    seg, cls = m["segmentation"], m["classification"]
    counts = g["counts"]
    rows = [
        ("Sensitivity (recall)", _global(g["recall"]), _mean_sd(ps["recall"])),
        ("Precision (PPV)", _global(g["precision"]), _mean_sd(ps["precision"])),
        ("F1", _global(g["f1"]), _mean_sd(ps["f1"])),
        ("FP per scan", _global(g["fp_per_scan"], 2), _mean_sd(ps["fp_per_scan"], 2)),
        ("Dice per matched CMB", "", _mean_sd(seg["dice_per_cmb"])),
        ("Dice per scan", "", _mean_sd(seg["dice_per_scan"])),
        ("Abs. volume difference (mm3)", "", _mean_sd(seg["abs_volume_difference_mm3"], 1)),
        ("Abs. count difference", "", _mean_sd(seg["abs_count_difference"], 2)),
        (
            "Scan level: sens / spec / AUC",
            f"{fmt(cls['sensitivity'])} / {fmt(cls['specificity'])} / {fmt(cls['auc'])}",
            f"{cls['n_positive']} scans with CMB, {cls['n_negative']} without",
        ),
        ("FROC CPM (1/8..8 FP/scan)", fmt(m["froc"]["cpm"]), ""),
    ]
    cfg = m["config"]
    thr = cfg["threshold"] if cfg["threshold"] is not None else "as shipped (kept detections)"
    title = (
        f"CMB detection: {counts['n_scans']} scans, {counts['n_truth']} true CMBs, "
        f"{counts['n_pred']} predictions; match {cfg['match']}; threshold {thr}"
    )
    return Table(title, ("Metric", "Global (95% CI)", "Per scan mean ± SD"), tuple(rows))


def stratified_tables(result: EvaluationResult) -> list[Table]:
    tables = []
    for name, table in result.metrics["stratified"]["scan"].items():
        rows = tuple(
            (
                value,
                str(d["n_scans"]),
                str(d["n_truth"]),
                fmt(d["recall"]),
                fmt(d["precision"]),
                fmt(d["f1"]),
                fmt(d["fp_per_scan"], 2),
                fmt(d["classification"]["sensitivity"]),
                fmt(d["classification"]["specificity"]),
                fmt(d["classification"]["auc"]),
                fmt(d["froc"]["cpm"]) if "froc" in d else "n/a",
            )
            for value, d in table.items()
        )
        tables.append(
            Table(
                f"By {name.replace('_', ' ')}",
                (
                    name,
                    "scans",
                    "CMBs",
                    "recall",
                    "precision",
                    "F1",
                    "FP/scan",
                    "scan sens",
                    "scan spec",
                    "scan AUC",
                    "FROC CPM",
                ),
                rows,
            )
        )
    for name, table in result.metrics["stratified"]["cmb"].items():
        cmb_rows = tuple(
            (
                value,
                str(d["n_truth"]),
                str(d["tp"]),
                fmt(d["fp"]),  # None for strata of the true CMBs only (local_cnr)
                fmt(d["recall"]),
                fmt(d["precision"]),
                fmt(d["dice_per_cmb"]["mean"] if d["dice_per_cmb"] else None),
            )
            for value, d in table.items()
        )
        tables.append(
            Table(
                f"By CMB {name}",
                (name, "true CMBs", "TP", "FP", "recall", "precision", "Dice"),
                cmb_rows,
            )
        )
    return tables


def _plot_recall(ax: Any, table: dict[str, Any], title: str) -> None:
    labels = [k for k, d in table.items() if d.get("recall") is not None]
    values = [table[k]["recall"] for k in labels]
    ax.bar(range(len(labels)), values, color="#4477aa")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.set_title(title)


def froc_plot_name(stratum: str) -> str:
    return f"froc_by_{stratum}.png"


def _plot_froc_by(plt: Any, name: str, table: dict[str, Any], out_dir: Path) -> str | None:
    """One FROC curve per value of a scan stratum (None when fewer than two values have one)."""
    curves = {
        value: d["froc"]
        for value, d in table.items()
        if "froc" in d and any(p["sensitivity"] is not None for p in d["froc"]["points"])
    }
    if len(curves) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    for value, curve in curves.items():
        pts = [p for p in curve["points"] if p["sensitivity"] is not None]
        (line,) = ax.plot(
            [p["fp_per_scan"] for p in pts],
            [p["sensitivity"] for p in pts],
            "-",
            label=f"{value} (CPM {fmt(curve['cpm'])})",
        )
        op = curve["operating_point"]
        if op["sensitivity"] is not None:
            ax.plot([op["fp_per_scan"]], [op["sensitivity"]], "*", ms=10, color=line.get_color())
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"FROC by {name.replace('_', ' ')} (star: operating point)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    file = froc_plot_name(name)
    fig.savefig(out_dir / file, dpi=100)
    plt.close(fig)
    return file


def write_plots(result: EvaluationResult, out_dir: Path) -> list[str]:
    """FROC and recall-by-stratum bar charts; returns the written file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curve = result.metrics["froc"]
    fig, ax = plt.subplots(figsize=(5, 4))
    pts = [p for p in curve["points"] if p["sensitivity"] is not None]
    ax.plot([p["fp_per_scan"] for p in pts], [p["sensitivity"] for p in pts], "-o", ms=3)
    op = curve["operating_point"]
    if op["sensitivity"] is not None:
        ax.plot([op["fp_per_scan"]], [op["sensitivity"]], "r*", ms=12, label="operating point")
        ax.legend(loc="lower right")
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"FROC (CPM {fmt(curve['cpm'])})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS["froc"], dpi=100)
    plt.close(fig)
    written.append(PLOTS["froc"])
    for name, table in result.metrics["stratified"]["scan"].items():
        file = _plot_froc_by(plt, name, table, out_dir)
        if file is not None:
            written.append(file)
    strata = {**result.metrics["stratified"]["scan"], **result.metrics["stratified"]["cmb"]}
    for key in ("size", "apparent_size", "local_cnr", "slice_thickness", "region"):
        if key not in strata:
            continue
        fig, ax = plt.subplots(figsize=(5, 4))
        _plot_recall(ax, strata[key], f"recall by {key.replace('_', ' ')}")
        fig.tight_layout()
        fig.savefig(out_dir / PLOTS[key], dpi=100)
        plt.close(fig)
        written.append(PLOTS[key])
    return written


PER_CMB_FIELDS = (
    "case_id", "kind", "index", "id", "outcome", "matched_id", "distance_mm", "iou", "dice",
    "probability", "x_mm", "y_mm", "z_mm", "diameter_mm", "size_bin", "region", "mars", "lobe",
    "status",
    # appended (2026-11), so that readers by column position keep working
    "diameter_apparent_mm", "apparent_size_bin",
)  # fmt: skip


def write_per_cmb(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PER_CMB_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in PER_CMB_FIELDS})


def write_report(result: EvaluationResult, out_dir: Path | str) -> dict[str, Path]:
    """Write every output into ``out_dir`` (created); returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(
        json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    write_per_cmb(result.per_cmb_rows(), out / "per_cmb.csv")
    plots = write_plots(result, out)
    tables = [summary_table(result), *stratified_tables(result)]
    md = ["# CMB evaluation report", ""]
    md += [t.markdown() for t in tables]
    if result.metrics["stratified"]["cmb"]:
        md += [f"Note: {result.metrics['stratified']['cmb_note']}.", ""]
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    md += ["", "Definitions: docs/evaluation.md. Full numbers: metrics.json, per_cmb.csv.", ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    body = "".join(t.html() for t in tables)
    if result.metrics["stratified"]["cmb"]:
        body += f"<p>Note: {html.escape(result.metrics['stratified']['cmb_note'])}.</p>\n"
    body += "".join(f'<p><img src="{html.escape(p)}" alt="{html.escape(p)}"></p>' for p in plots)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>CMB evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #999;padding:3px 8px;text-align:left}"
        "</style></head><body><h1>CMB evaluation report</h1>\n" + body + "</body></html>\n"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    files = {
        name: out / name for name in ("metrics.json", "per_cmb.csv", "report.md", "report.html")
    }
    files.update({p: out / p for p in plots})
    return files
