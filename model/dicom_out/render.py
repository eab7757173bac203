"""Key images: the source slice through each CMB with its outline burned in.

Shared by the PDF report and the Secondary Capture series.  Images are shown
as the scanner stored them (row 0 at the top, column 0 at the left), with the
true pixel aspect ratio and orientation letters at the edges, which is how a
PACS viewer shows the source series: a reader can find the slice again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from model.dicom_out.findings import Finding
from model.dicom_out.geometry import SourceFrame, SourceLayout

__all__ = ["KeyImage", "draw", "key_images", "orientation_letters", "render_rgb"]


@dataclass(frozen=True)
class KeyImage:
    finding: Finding
    frame: SourceFrame
    pixels: npt.NDArray[np.float32]  # the source frame, stored values
    mask: npt.NDArray[np.bool_]  # this CMB on this frame
    others: npt.NDArray[np.bool_]  # other CMBs on this frame
    centre_rc: tuple[float, float]  # continuous (row, column) of the centre
    window: tuple[float, float]

    @property
    def where(self) -> str:
        """How a reader finds the slice in the source series: image or frame number."""
        if self.frame.frame_number is not None:
            return f"frame {self.frame.frame_number}"
        return f"image {self.frame.dataset.get('InstanceNumber', '?')}"

    @property
    def caption(self) -> str:
        f = self.finding
        d = f.detection
        return (
            f"{f.name} - {f.mars_text}, {f.location_text}\n"
            f"{d.diameter_mm:.1f} mm, p={d.probability:.2f}, {self.where}"
        )


def _letter(v: npt.NDArray[np.float64]) -> str:
    """The patient direction (L/R, P/A, H/F) that ``v`` points to most."""
    axis = int(np.argmax(np.abs(v)))
    positive = v[axis] > 0
    return (("L", "R"), ("P", "A"), ("H", "F"))[axis][0 if positive else 1]


def orientation_letters(frame: SourceFrame) -> dict[str, str]:
    """Letters for the right, left, bottom and top edges of a displayed frame."""
    row_dir = np.asarray(frame.orientation[:3])  # +column (towards the right edge)
    col_dir = np.asarray(frame.orientation[3:])  # +row (towards the bottom edge)
    return {
        "right": _letter(row_dir),
        "left": _letter(-row_dir),
        "bottom": _letter(col_dir),
        "top": _letter(-col_dir),
    }


def _frame_pixels(
    frame: SourceFrame, cache: dict[str, npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    uid = frame.sop_instance_uid
    if uid not in cache:
        if "PixelData" not in frame.dataset:
            raise ValueError(f"source instance {uid} has no pixel data; key images need it")
        cache[uid] = np.asarray(frame.dataset.pixel_array, dtype=np.float32)
    arr = cache[uid]
    return arr[frame.frame_number - 1] if frame.frame_number is not None else arr


def key_images(
    layout: SourceLayout, findings: list[Finding], seg_map: npt.NDArray[np.integer]
) -> list[KeyImage]:
    """One key image per finding: the source frame nearest its centre."""
    cache: dict[str, npt.NDArray[np.float32]] = {}
    out = []
    for f in findings:
        centre = f.detection.center_lps_mm
        frame = layout.frame_through(centre)
        pixels = _frame_pixels(frame, cache)
        labels = np.asarray(frame.take(seg_map), dtype=np.int64)
        lo, hi = np.percentile(pixels, [0.5, 99.5])
        out.append(
            KeyImage(
                finding=f,
                frame=frame,
                pixels=pixels,
                mask=labels == f.number,
                others=(labels > 0) & (labels != f.number),
                centre_rc=frame.pixel_of(layout.volume, centre),
                window=(float(lo), float(hi) if hi > lo else float(lo) + 1.0),
            )
        )
    return out


def draw(ax: Axes, key: KeyImage, *, zoom_mm: float | None = None, labels: bool = True) -> None:
    """Draw a key image on ``ax``: slice, CMB outline, marker circle, orientation letters."""
    dr, dc = key.frame.pixel_spacing
    rows, cols = key.pixels.shape
    extent = (-0.5 * dc, (cols - 0.5) * dc, (rows - 0.5) * dr, -0.5 * dr)  # mm, row 0 on top
    ax.imshow(
        key.pixels,
        cmap="gray",
        vmin=key.window[0],
        vmax=key.window[1],
        extent=extent,
        interpolation="bilinear",
    )
    colour = tuple(c / 255.0 for c in key.finding.colour)
    yy, xx = np.mgrid[0:rows, 0:cols]
    if key.mask.any():
        ax.contour(
            xx * dc, yy * dr, key.mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2
        )
    if key.others.any():
        ax.contour(
            xx * dc,
            yy * dr,
            key.others.astype(float),
            levels=[0.5],
            colors=["white"],
            linewidths=0.6,
            linestyles="dotted",
        )
    cy, cx = key.centre_rc[0] * dr, key.centre_rc[1] * dc
    radius = max(2.5 * key.finding.detection.diameter_mm, 4.0)
    ax.add_patch(
        Circle((cx, cy), radius, fill=False, edgecolor=colour, linewidth=1.0, linestyle="--")
    )
    if zoom_mm:
        half = min(zoom_mm, rows * dr, cols * dc) / 2.0
        ax.set_xlim(cx - half, cx + half)
        ax.set_ylim(cy + half, cy - half)
    x0, x1 = ax.get_xlim()
    y1, y0 = ax.get_ylim()
    ax.set_axis_off()
    if labels:
        ax.text(
            cx + radius * 0.8,
            cy - radius * 0.8,
            key.finding.name,
            color=colour,
            fontsize=8,
            fontweight="bold",
            ha="left",
            va="bottom",
        )
        letters = orientation_letters(key.frame)
        style: dict[str, Any] = {"color": "yellow", "fontsize": 8, "fontweight": "bold"}
        ax.text(x0, (y0 + y1) / 2, " " + letters["left"], ha="left", va="center", **style)
        ax.text(x1, (y0 + y1) / 2, letters["right"] + " ", ha="right", va="center", **style)
        ax.text((x0 + x1) / 2, y0, letters["top"], ha="center", va="top", **style)
        ax.text((x0 + x1) / 2, y1, letters["bottom"], ha="center", va="bottom", **style)


def render_rgb(
    key: KeyImage, *, width_px: int = 512, caption: bool = True
) -> npt.NDArray[np.uint8]:
    """The key image as an RGB array (full slice, overlay burned in)."""
    dr, dc = key.frame.pixel_spacing
    rows, cols = key.pixels.shape
    aspect = (rows * dr) / (cols * dc)
    height_px = round(width_px * aspect)
    band_px = 34 if caption else 0  # black band under the image for the caption
    total = height_px + band_px
    fig = Figure(figsize=(width_px / 100.0, total / 100.0), dpi=100, facecolor="black")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, band_px / total, 1.0, height_px / total))
    draw(ax, key)
    if caption:
        fig.text(
            0.01,
            18 / total,
            key.caption.replace("\n", "  "),
            color="white",
            fontsize=7,
            ha="left",
            va="bottom",
        )
        fig.text(
            0.01,
            4 / total,
            "AI RESULT - VERIFY ON SOURCE IMAGES",
            color="orange",
            fontsize=7,
            ha="left",
            va="bottom",
        )
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])
