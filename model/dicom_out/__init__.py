"""DICOM results of one analysis: SEG, TID 1500 SR, Encapsulated PDF report, SC key images.

``write_outputs`` is the one entry point (used by ``cmb detect`` and the
service).  See docs/dicom-outputs.md for what each object contains and
docs/conformance.md for the IODs and where their attributes come from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pydicom

from model.dicom_out.common import Identity
from model.dicom_out.findings import findings_of
from model.dicom_out.geometry import SourceLayout
from model.types import Result

__all__ = ["OUTPUT_KINDS", "write_outputs"]

log = logging.getLogger(__name__)

OUTPUT_KINDS = frozenset({"seg", "sr", "pdf", "sc"})


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    """Write atomically (temp file + fsync + rename): a reader never sees half a file."""
    tmp = path.with_name(path.name + ".part")
    ds.save_as(tmp, enforce_file_format=True)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def write_outputs(
    result: Result,
    source_datasets: Sequence[pydicom.Dataset],
    out_dir: Path,
    outputs: Collection[str] = ("seg", "sr"),
    *,
    pdf_html: bool = False,
) -> dict[str, Path | list[Path]]:
    """Write the requested DICOM results of ``result`` under ``out_dir``.

    ``outputs`` is a subset of {"seg", "sr", "pdf", "sc"}.  Returns the paths
    written: ``seg.dcm``, ``sr.dcm``, ``report.dcm`` (Encapsulated PDF; the bare
    ``report.pdf`` beside it), ``sc`` → ``[sc_001.dcm, ...]`` and ``html`` →
    ``report.html`` when ``pdf_html``.  Without kept CMBs no SEG and no SC are
    written (see docs/dicom-outputs.md, "Empty results"); the SR and the PDF
    then say that no microbleed was found.
    """
    wanted = {o.strip().lower() for o in outputs if o.strip()}
    unknown = wanted - OUTPUT_KINDS
    if unknown:
        raise ValueError(
            f"unknown output kind(s) {sorted(unknown)}; choose from {sorted(OUTPUT_KINDS)}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path | list[Path]] = {}
    if not wanted and not pdf_html:
        return written

    identity = Identity.of(result)
    layout = SourceLayout(result.labels, list(source_datasets))
    findings = findings_of(result)

    seg = None  # an SR references a SEG only if the SEG is written too
    if findings and "seg" in wanted:
        from model.dicom_out.seg import build_seg

        seg = build_seg(identity, layout, findings)
        written["seg"] = _save(seg, out_dir / "seg.dcm")
    if "sr" in wanted:
        from model.dicom_out.sr import build_sr

        written["sr"] = _save(build_sr(identity, layout, findings, seg), out_dir / "sr.dcm")

    if {"pdf", "sc"} & wanted or pdf_html:
        from model.dicom_out.render import key_images
        from model.dicom_out.seg import segment_map

        seg_map = (
            segment_map(findings, np.asarray(result.labels.array))
            if findings
            else np.zeros(result.labels.shape, dtype=np.uint8)
        )
        keys = key_images(layout, findings, seg_map)
        if "pdf" in wanted or pdf_html:
            from model.dicom_out.report import report_html, report_pdf

            source = layout.datasets[0]
            if "pdf" in wanted:
                from model.dicom_out.pdf import build_pdf

                pdf = report_pdf(identity, source, findings, keys)
                (out_dir / "report.pdf").write_bytes(pdf)
                written["pdf"] = _save(
                    build_pdf(identity, layout, pdf, keys), out_dir / "report.dcm"
                )
            if pdf_html:
                html_path = out_dir / "report.html"
                html_path.write_text(
                    report_html(identity, source, findings, keys), encoding="utf-8"
                )
                written["html"] = html_path
        if "sc" in wanted and keys:
            from model.dicom_out.sc import build_sc

            written["sc"] = [
                _save(sc, out_dir / f"sc_{n:03d}.dcm")
                for n, sc in enumerate(build_sc(identity, keys), start=1)
            ]
    log.info("wrote %s for series %s", sorted(written), result.series.series_instance_uid)
    return written
