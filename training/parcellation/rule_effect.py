"""Effect of each location rule on the synthetic validation set (ground-truth objects).

Without a trained CMB model the model's own false positives are not
available, so each rule is measured on the objects the synthetic engine
(``training.synth``) places in held-out subjects (17-20): the true
microbleeds (with their voxel masks) and the mimics it draws as hard
negatives (veins, pallidal / choroid plexus / pineal calcifications, flow
voids, air-bone artefacts, cavernomas, haemorrhages).  Each object becomes a
candidate at its true centre and size, with a probability drawn uniformly in
[0.5, 1]; the location filter then runs with the whole rule set and with each
rule alone, on two parcellations: the engine's deformed label map (ground
truth) and our ONNX network on the synthetic image.

    nice -n 10 .venv/bin/python -m training.parcellation.rule_effect --cases 12 \
        --out runs/parcellation/rules
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from model.location import LocationConfig, apply_rules, locate, parcellate
from model.location import rules as rule_codes
from model.types import Detection, SequenceKind, SeriesInfo, Volume

MIMIC_ID0 = 10_000


def case_candidates(case: Any, rng: np.random.Generator) -> list[tuple[Detection, str]]:
    """(candidate, kind) for every true CMB ("cmb") and every mimic of a synthetic case."""
    out: list[tuple[Detection, str]] = []
    spacing = np.prod(case.labels.spacing)
    for c in case.record["cmbs"]:
        d = max(float(c["diameter_apparent_mm"]), 0.5)
        n = int(c.get("n_voxels", 1))
        det = Detection(
            int(c["label"]), tuple(c["center_lps_mm"]), d, n * spacing, float(rng.uniform(0.5, 1.0))
        )
        out.append((det, "cmb"))
    for i, m in enumerate(case.record["mimics"]):
        d = float(m["diameter_mm"])
        elong = 1.0
        if m["kind"] == "vein":
            length = float(m["length_mm"])
            elong = max(1.0, length / max(d, 1e-3))
            d = (1.5 * d * d * length) ** (1 / 3)  # equivalent-sphere diameter of the tube
        det = Detection(
            MIMIC_ID0 + i,
            tuple(m["center_lps_mm"]),
            d,
            math.pi / 6 * d**3,
            float(rng.uniform(0.5, 1.0)),
        )
        det.elongation = elong
        kind = m["kind"]
        if "bilateral" in m:
            kind += " (bilateral)" if m["bilateral"] else " (unilateral)"
        out.append((det, kind))
    return out


def apply(
    cands: list[tuple[Detection, str]],
    masks: Volume,
    parc: Volume,
    info: SeriesInfo,
    configs: dict[str, LocationConfig],
) -> dict[str, Counter[tuple[str, str]]]:
    """Per configuration, counts of (kind, reject reason or "kept"); located once."""
    located = [copy.deepcopy(d) for d, _ in cands]
    regions, frame = locate(located, parc)
    out: dict[str, Counter[tuple[str, str]]] = {}
    for name, cfg in configs.items():
        dets = [copy.deepcopy(d) for d in located]
        apply_rules(dets, regions, frame, masks, info, cfg)
        out[name] = Counter(
            (kind, d.reject_reason or "kept") for d, (_, kind) in zip(dets, cands, strict=True)
        )
    return out


def run(n_cases: int, out: Path, seed0: int = 5000, use_onnx: bool = True) -> dict[str, Any]:
    """Generate ``n_cases`` validation cases; results are rewritten after every case."""
    from training.synth.engine import generate_case

    out.mkdir(parents=True, exist_ok=True)
    configs = {
        "all": LocationConfig(),
        **{r: LocationConfig().only(r) for r in rule_codes.REASON_CODES},
    }
    totals: dict[str, dict[str, Counter[tuple[str, str]]]] = defaultdict(
        lambda: defaultdict(Counter)
    )
    kinds: Counter[str] = Counter()
    rng = np.random.default_rng(seed0)
    table: dict[str, Any] = {}
    for n in range(n_cases):
        case = generate_case(seed0 + n, split="val")
        acq = case.record["acquisition"]
        info = SeriesInfo("1", "2", "MR", SequenceKind(acq["sequence"]))
        cands = case_candidates(case, rng)
        kinds.update(k for _, k in cands)
        parcs: dict[str, Volume] = {}
        if case.anatomy is not None:
            parcs["anatomy"] = case.anatomy
        if use_onnx:
            parcs["onnx"] = parcellate(case.image, device="cpu")
        for pname, parc in parcs.items():
            for cname, counts in apply(cands, case.labels, parc, info, configs).items():
                totals[pname][cname].update(counts)
        print(f"case {n + 1}/{n_cases}: {acq['sequence']}, {len(cands)} candidates", flush=True)
        table = _table(totals, kinds, n + 1)
        (out / "rule_effect.json").write_text(json.dumps(table, indent=1))
    return table


def _table(
    totals: dict[str, dict[str, Counter[tuple[str, str]]]], kinds: Counter[str], n_cases: int
) -> dict[str, Any]:
    table: dict[str, Any] = {"kinds": dict(kinds), "n_cases": n_cases}
    for pname, per_cfg in totals.items():
        table[pname] = {}
        for cname, counts in per_cfg.items():
            removed = {
                k: sum(c for (kk, r), c in counts.items() if kk == k and r != "kept") for k in kinds
            }
            table[pname][cname] = {k: {"removed": removed[k], "of": kinds[k]} for k in kinds}
    return table


def markdown(table: dict[str, Any], parcellation: str) -> str:
    """One markdown table: per configuration, true CMBs lost and each mimic kind removed."""
    kinds = ["cmb", *sorted(k for k in table["kinds"] if k != "cmb")]
    head = "| rules | " + " | ".join(
        "true CMBs lost" if k == "cmb" else f"{k} removed" for k in kinds
    )
    lines = [head + " |", "|" + "---|" * (len(kinds) + 1)]
    for cname, per in table[parcellation].items():
        cells = []
        for k in kinds:
            if k not in per:
                cells.append("-")
                continue
            r, of = per[k]["removed"], per[k]["of"]
            cells.append(f"{r}/{of} ({100 * r / of:.0f} %)" if of else "0/0")
        lines.append(f"| {cname} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-onnx", action="store_true", help="only the ground-truth anatomy")
    a = p.parse_args(argv)
    table = run(a.cases, a.out, use_onnx=not a.no_onnx)
    for parc in ("anatomy", "onnx"):
        if parc in table:
            print(f"\nparcellation: {parc}\n" + markdown(table, parc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
