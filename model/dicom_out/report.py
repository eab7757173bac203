"""The human-readable report: PDF (for the Encapsulated PDF object) and HTML (for REST).

Page 1 answers what a reader asks first: how many CMBs, where (MARS
categories, lobes, pattern), in which series and with which model; then the
table of CMBs.  The following pages show one key image per CMB: the whole
slice with a marker for context, and a close-up with the outline.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import logging
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from pydicom.dataset import Dataset

from model.dicom_out.common import Identity
from model.dicom_out.findings import Finding, Summary, summary_of
from model.dicom_out.render import KeyImage, draw, render_rgb
from model.types import MarsCategory

__all__ = ["INTENDED_USE", "report_html", "report_pdf"]

INTENDED_USE = (
    "Intended use: computer-aided detection of cerebral microbleeds on SWI or T2*-weighted "
    "gradient-echo MR of the brain of adults, to assist a qualified reader. The result is "
    "produced automatically, has not been verified by a physician, and does not replace "
    "the reading of the source images. Findings may be missed (false negatives) and "
    "mimics (vessels, calcification, air, metal) may be reported (false positives)."
)
A4 = (8.27, 11.69)
TABLE_ROWS_FIRST_PAGE = 18
TABLE_ROWS_PER_PAGE = 40
KEYS_PER_PAGE = 4
MAX_KEY_IMAGES = 24
ZOOM_MM = 50.0


#: Fonts tried in order for every glyph (matplotlib font fallback): DejaVu has
#: Latin, Greek and Cyrillic; the CJK fonts cover Japanese, Chinese and Korean
#: patient names.  Families that are not installed are skipped.
FONT_FALLBACK = ("DejaVu Sans", "Noto Sans CJK JP", "Droid Sans Fallback", "WenQuanYi Zen Hei")


@functools.cache
def _installed_fonts() -> list[str]:
    names = {f.name for f in font_manager.fontManager.ttflist}
    if not set(FONT_FALLBACK[1:]) & names:
        # matplotlib lists the system fonts once and caches the list on disk
        # (~/.cache/matplotlib): a CJK font installed after that is not in it.
        # Add the system fonts it does not know, once per process.
        known = {f.fname for f in font_manager.fontManager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # unreadable or not a font
                    continue
        names = {f.name for f in font_manager.fontManager.ttflist}
    return [f for f in FONT_FALLBACK if f in names] or ["sans-serif"]


@contextmanager
def _fonts() -> Iterator[None]:
    """Font fallback for the report; quiet about fallback fonts that lack a bold face."""
    logger = logging.getLogger("matplotlib.font_manager")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with matplotlib.rc_context({"font.family": _installed_fonts(), "pdf.fonttype": 42}):
            yield
    finally:
        logger.setLevel(level)


def _text(ds: Dataset, keyword: str, default: str = "-") -> str:
    value = ds.get(keyword)
    return str(value) if value not in (None, "") else default


def _person(ds: Dataset) -> str:
    """Patient's Name as printed in reports: "Family, Given Middle" (alphabetic group)."""
    name = ds.get("PatientName")
    if not name:
        return "-"
    family, given, middle = (
        str(getattr(name, a, "") or "") for a in ("family_name", "given_name", "middle_name")
    )
    first = " ".join(x for x in (given, middle) if x)
    if family and first:
        return f"{family}, {first}"
    return family or first or str(name).replace("^", " ")


def _date(value: str) -> str:
    return (
        f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value
    )


def header_lines(identity: Identity, source: Dataset) -> list[tuple[str, str]]:
    r = identity.result
    s = r.series
    spacing = (
        f"{s.pixel_spacing_mm[0]:.2f} x {s.pixel_spacing_mm[1]:.2f} mm"
        if s.pixel_spacing_mm
        else "-"
    )
    thick = f", slice thickness {s.slice_thickness_mm:.2f} mm" if s.slice_thickness_mm else ""
    return [
        (
            "Patient",
            f"{_person(source)}  (ID {_text(source, 'PatientID')}, "
            f"born {_date(_text(source, 'PatientBirthDate'))}, sex {_text(source, 'PatientSex')})",
        ),
        (
            "Study",
            f"{_text(source, 'StudyDescription')}  {_date(_text(source, 'StudyDate'))}, "
            f"accession {_text(source, 'AccessionNumber')}",
        ),
        (
            "Series analysed",
            f"#{s.series_number if s.series_number is not None else '-'} "
            f"{s.series_description or '-'} ({s.sequence_kind.value})",
        ),
        (
            "Acquisition",
            f"{s.manufacturer or '-'}, "
            f"{s.field_strength_t if s.field_strength_t else '-'} T, "
            f"TE {s.echo_time_ms if s.echo_time_ms else '-'} ms, "
            f"{s.acquisition_type or '-'}, {spacing}{thick}, "
            f"{s.n_instances} instances",
        ),
        ("Series choice", r.selection.reason or "-"),
        ("Model", f"{r.model.name} {r.model.version} (sha256 {r.model.sha256[:12]})"),
    ]


def conclusion(summary: Summary, rejected: int) -> str:
    if summary.total == 0:
        text = "No cerebral microbleed was found."
    else:
        parts = [f"{summary.by_mars[c]} {c.value}" for c in MarsCategory if summary.by_mars[c]]
        if summary.by_mars.get(None):
            parts.append(f"{summary.by_mars[None]} unclassified")
        noun = "microbleed" if summary.total == 1 else "microbleeds"
        rated = ", ".join(f"{n} {band}" for band, n in summary.by_certainty.items())
        text = (
            f"{summary.total} cerebral {noun} found ({', '.join(parts)}"
            f"{'; ' + rated if rated else ''}); distribution: {summary.pattern}."
        )
    if rejected:
        text += f" {rejected} candidate(s) rejected by the location filter are not reported."
    return text


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def table_rows(keys: list[KeyImage]) -> list[list[str]]:
    rows = []
    for k in keys:
        f = k.finding
        d = f.detection
        c = d.center_lps_mm
        rows.append(
            [
                f.name,
                f.location_text[:40],
                f.mars_text,
                f.certainty or "-",
                f"{d.diameter_mm:.1f}",
                f"{d.volume_mm3:.1f}",
                f"{d.probability:.2f}",
                k.where,
                f"{c[0]:.1f}, {c[1]:.1f}, {c[2]:.1f}",
            ]
        )
    return rows


TABLE_HEADER = [
    "#",
    "Location",
    "MARS",
    "Rating",
    "Ø mm",
    "Vol. mm³",
    "Prob.",
    "Slice",
    "Centre LPS mm",
]
_COL_WIDTHS = [0.06, 0.27, 0.12, 0.09, 0.06, 0.08, 0.06, 0.09, 0.17]


def _table(fig: Figure, rows: list[list[str]], top: float, height: float) -> None:
    ax = fig.add_axes((0.06, top - height, 0.88, height))
    ax.set_axis_off()
    if not rows:
        return
    n = len(rows) + 1
    table = ax.table(
        cellText=rows,
        colLabels=TABLE_HEADER,
        colWidths=_COL_WIDTHS,
        loc="upper center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    table.scale(1.0, min(1.25, height * 11.69 / (0.2 * n)))
    for (r, _c), cell in table.get_celld().items():
        cell.set_linewidth(0.3)
        if r == 0:
            cell.set_facecolor("#dde3ea")
            cell.set_text_props(fontweight="bold")


def _first_page(
    identity: Identity, source: Dataset, findings: list[Finding], rows: list[list[str]]
) -> Figure:
    summary = summary_of(findings)
    rejected = len(identity.result.detections) - len(findings)
    fig = Figure(figsize=A4)
    fig.text(
        0.06,
        0.955,
        "Cerebral microbleed detection - automated report",
        fontsize=15,
        fontweight="bold",
    )
    fig.text(0.06, 0.935, "AI result, not verified by a physician", fontsize=9, color="#b35900")
    y = 0.905
    for label, value in header_lines(identity, source):
        fig.text(0.06, y, label, fontsize=8.5, fontweight="bold")
        fig.text(0.24, y, value[:110], fontsize=8.5)
        y -= 0.019
    y -= 0.02
    fig.text(0.06, y, "Result", fontsize=11, fontweight="bold")
    y -= 0.026
    lines = textwrap.wrap(conclusion(summary, rejected), 95)
    fig.text(0.06, y, "\n".join(lines), fontsize=10, va="top")
    y -= 0.018 * len(lines) + 0.015
    if summary.total:
        counts = "   ".join(f"{c.value}: {summary.by_mars[c]}" for c in MarsCategory)
        counts += "".join(f"   {band}: {n}" for band, n in summary.by_certainty.items())
        fig.text(0.06, y, f"MARS categories   {counts}", fontsize=9)
        y -= 0.018
        lobes = ",  ".join(f"{name}: {n}" for name, n in summary.lobe_rows())
        fig.text(0.06, y, f"By lobe / structure   {lobes}"[:140], fontsize=9)
        y -= 0.03
        _table(fig, rows, y, y - 0.11)
    fig.text(
        0.06,
        0.03,
        "\n".join(textwrap.wrap(INTENDED_USE, 150)),
        fontsize=7,
        color="#444444",
        va="bottom",
    )
    return fig


def _table_pages(rows: list[list[str]]) -> Iterator[Figure]:
    for start in range(0, len(rows), TABLE_ROWS_PER_PAGE):
        fig = Figure(figsize=A4)
        fig.text(0.06, 0.955, "Cerebral microbleeds (continued)", fontsize=12, fontweight="bold")
        _table(fig, rows[start : start + TABLE_ROWS_PER_PAGE], 0.93, 0.85)
        yield fig


def _key_pages(keys: list[KeyImage], total: int) -> Iterator[Figure]:
    shown = keys[:MAX_KEY_IMAGES]
    for start in range(0, len(shown), KEYS_PER_PAGE):
        fig = Figure(figsize=A4, facecolor="white")
        title = "Key images"
        if len(shown) < total:
            title += f" (first {len(shown)} of {total} CMBs; all are in the SEG and SR)"
        fig.text(0.06, 0.962, title, fontsize=12, fontweight="bold")
        for slot, key in enumerate(shown[start : start + KEYS_PER_PAGE]):
            top = 0.94 - slot * 0.232
            ax_full = fig.add_axes((0.06, top - 0.2, 0.42, 0.2))
            ax_full.set_facecolor("black")
            draw(ax_full, key)
            ax_zoom = fig.add_axes((0.50, top - 0.2, 0.2, 0.2))
            draw(ax_zoom, key, zoom_mm=ZOOM_MM, labels=False)
            caption = "\n".join(
                w for line in key.caption.split("\n") for w in textwrap.wrap(line, 30)
            )
            fig.text(0.72, top - 0.02, caption, fontsize=8, va="top")
            fig.text(
                0.72,
                top - 0.02 - 0.013 * (caption.count("\n") + 2),
                f"left: whole slice; middle: close-up ({ZOOM_MM:.0f} mm)",
                fontsize=7,
                color="#555555",
                va="top",
            )
        yield fig


def report_pdf(
    identity: Identity, source: Dataset, findings: list[Finding], keys: list[KeyImage]
) -> bytes:
    """The PDF report as bytes (no creation timestamp: same input, same bytes)."""
    rows = table_rows(keys)
    buf = io.BytesIO()
    metadata = {
        "Title": "Cerebral microbleed detection report",
        "Author": "cmb-detect",
        "Creator": "cmb-detect",
        "CreationDate": None,
    }
    with _fonts(), PdfPages(buf, metadata=metadata) as pdf:
        pdf.savefig(_first_page(identity, source, findings, rows[:TABLE_ROWS_FIRST_PAGE]))
        for fig in _table_pages(rows[TABLE_ROWS_FIRST_PAGE:]):
            pdf.savefig(fig)
        for fig in _key_pages(keys, len(findings)):
            pdf.savefig(fig)
    return buf.getvalue()


def _png_data_uri(rgb: np.ndarray) -> str:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, rgb, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def report_html(
    identity: Identity, source: Dataset, findings: list[Finding], keys: list[KeyImage]
) -> str:
    """The same content as a self-contained HTML page (images inline)."""
    e = html.escape
    summary = summary_of(findings)
    rejected = len(identity.result.detections) - len(findings)
    head = "".join(
        f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in header_lines(identity, source)
    )
    rows = "".join(
        "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table_rows(keys)
    )
    table = (
        "<table class='cmb'><tr>"
        + "".join(f"<th>{e(h)}</th>" for h in TABLE_HEADER)
        + "</tr>"
        + rows
        + "</table>"
        if findings
        else ""
    )
    images = "".join(
        f"<figure><img alt='{e(k.finding.name)}' "
        f"src='{_png_data_uri(render_rgb(k, caption=False))}'>"
        f"<figcaption>{e(k.caption)}</figcaption></figure>"
        for k in keys[:MAX_KEY_IMAGES]
    )
    counts = ", ".join(
        [f"{c.value}: {summary.by_mars[c]}" for c in MarsCategory]
        + [f"{band}: {n}" for band, n in summary.by_certainty.items()]
    )
    lobes = ", ".join(f"{name}: {n}" for name, n in summary.lobe_rows())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cerebral microbleed detection report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
th{{text-align:left;padding-right:1em}}
table.cmb td,table.cmb th{{border:1px solid #ccc;padding:2px 6px}}
figure{{display:inline-block;margin:0.5em}} img{{width:320px}} .warn{{color:#b35900}}</style></head>
<body><h1>Cerebral microbleed detection - automated report</h1>
<p class="warn">AI result, not verified by a physician</p>
<table>{head}</table>
<h2>Result</h2><p>{e(conclusion(summary, rejected))}</p>
{f"<p>MARS categories: {e(counts)}<br>By lobe: {e(lobes)}</p>" if findings else ""}
{table}
{"<h2>Key images</h2>" + images if images else ""}
<p><small>{e(INTENDED_USE)}</small></p></body></html>
"""
