"""The findings every output shows, numbered once so that SEG, SR and report agree.

Only detections with status *kept* are findings; rejected candidates (vessels,
calcifications, outside brain...) are never reported as CMBs.  Findings are
numbered 1..N in the order of their detection id, and "CMB n" is the same
lesion in the SEG segment label, the SR tracking identifier, the PDF table and
the key-image captions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from model.location.rating import certainty
from model.types import Detection, MarsCategory, Result

__all__ = ["MARS_COLOURS", "Finding", "Summary", "findings_of", "pattern_of"]

#: Display colours (sRGB) per MARS category: lobar orange, deep cyan,
#: infratentorial magenta, unknown yellow; chosen to stand out on a grey
#: SWI/T2* image and to differ for red-green colour-blind readers.
MARS_COLOURS: dict[MarsCategory | None, tuple[int, int, int]] = {
    MarsCategory.LOBAR: (255, 140, 0),
    MarsCategory.DEEP: (0, 200, 255),
    MarsCategory.INFRATENTORIAL: (230, 40, 230),
    None: (255, 230, 0),
}


@dataclass(frozen=True)
class Finding:
    number: int  # 1-based, = SEG segment number
    detection: Detection
    # "definite" / "possible" by the MARS rating's probability band; None when the
    # location filter (which rates) did not run
    certainty: str | None = None

    @property
    def name(self) -> str:
        return f"CMB {self.number}"

    @property
    def colour(self) -> tuple[int, int, int]:
        return MARS_COLOURS[self.detection.mars]

    @property
    def mars_text(self) -> str:
        return self.detection.mars.value if self.detection.mars else "unclassified"

    @property
    def place(self) -> str:
        """Lobe, else the structure of the region ("frontal", "thalamus"), else ""."""
        d = self.detection
        return (d.lobe or structure_of(d.region)).lower()

    @property
    def location_text(self) -> str:
        """Hemisphere, lobe/structure and region, e.g. "left frontal (ctx-lh-superiorfrontal)"."""
        d = self.detection
        text = " ".join(x for x in ((d.hemisphere or "").lower(), self.place) if x)
        if d.region and d.region.lower() != text:
            text = f"{text} ({d.region})" if text else d.region
        return text or "location unknown"

    @property
    def label(self) -> str:
        """Segment label (LO, at most 64 characters)."""
        return f"{self.name} {self.mars_text}"[:64]


@dataclass(frozen=True)
class Summary:
    total: int
    by_mars: dict[MarsCategory | None, int]
    by_lobe: dict[tuple[str, str], int]  # (hemisphere or "", lobe/structure or "unknown") -> n
    pattern: str  # a key of codes.PATTERN_VALUES
    # "definite"/"possible" -> n; empty when the findings were not rated
    by_certainty: dict[str, int] = field(default_factory=dict)

    def lobe_rows(self) -> list[tuple[str, int]]:
        """("left frontal", 2) rows for tables."""
        return [(f"{h} {lobe}".strip(), n) for (h, lobe), n in self.by_lobe.items()]


_REGION_PREFIXES = (
    "ctx-lh-",
    "ctx-rh-",
    "ctx_lh_",
    "ctx_rh_",
    "left-",
    "right-",
    "lh-",
    "rh-",
    "left_",
    "right_",
    "left ",
    "right ",
)


def structure_of(region: str | None) -> str:
    """A parcellation label name without its hemisphere prefix: "Right-Thalamus" → "thalamus"."""
    if not region:
        return ""
    low = region.strip().lower()
    for prefix in _REGION_PREFIXES:
        if low.startswith(prefix):
            low = low[len(prefix) :]
            break
    return low.replace("-", " ").replace("_", " ").strip()


def definite_probability(result: Result) -> float | None:
    """The MARS rating's definite band of this result (None: it was not rated)."""
    rating = (result.location or {}).get("mars_rating")
    if not isinstance(rating, dict) or rating.get("definite_probability") is None:
        return None
    return float(rating["definite_probability"])


def findings_of(result: Result) -> list[Finding]:
    """The kept detections as numbered findings, rated definite/possible where rated."""
    kept = sorted(result.kept, key=lambda d: d.id)
    band = definite_probability(result)
    return [
        Finding(number=n, detection=d, certainty=certainty(d, band) if band is not None else None)
        for n, d in enumerate(kept, start=1)
    ]


def pattern_of(findings: list[Finding]) -> str:
    """Distribution pattern used in CAA / hypertensive arteriopathy reporting.

    * ``strictly lobar``: lobar CMBs only (cerebellar CMBs do not change the
      pattern, following the Boston criteria v2.0, Charidimou et al. 2022);
    * ``strictly deep``: deep and/or infratentorial CMBs, none lobar (cerebellar
      CMBs alone also give this pattern);
    * ``mixed``: lobar and deep (or brainstem) CMBs;
    * ``none`` without CMBs, ``undetermined`` when no finding has a category.
    """
    if not findings:
        return "none"
    lobar = deep = 0
    for f in findings:
        d = f.detection
        if d.mars is MarsCategory.LOBAR:
            lobar += 1
        elif d.mars is MarsCategory.DEEP:
            deep += 1
        elif d.mars is MarsCategory.INFRATENTORIAL:
            cerebellar = "cerebell" in f"{d.region or ''} {d.lobe or ''}".lower()
            if not cerebellar:
                deep += 1  # brainstem counts with deep (hypertensive arteriopathy)
    if lobar and deep:
        return "mixed"
    if lobar:
        return "strictly lobar"
    if deep:
        return "strictly deep"
    infratentorial = any(f.detection.mars is MarsCategory.INFRATENTORIAL for f in findings)
    return "strictly deep" if infratentorial else "undetermined"


def summary_of(findings: list[Finding]) -> Summary:
    by_mars: Counter[MarsCategory | None] = Counter(f.detection.mars for f in findings)
    by_lobe: Counter[tuple[str, str]] = Counter()
    for f in findings:
        by_lobe[((f.detection.hemisphere or "").lower(), f.place or "unknown")] += 1
    rated = [f.certainty for f in findings if f.certainty is not None]
    by_certainty = {band: rated.count(band) for band in ("definite", "possible")} if rated else {}
    return Summary(
        total=len(findings),
        by_mars={c: by_mars.get(c, 0) for c in (*MarsCategory, None)},
        by_lobe=dict(sorted(by_lobe.items())),
        pattern=pattern_of(findings),
        by_certainty=by_certainty,
    )
