"""Which tissue intensities blind the U-Net on one synthetic case.

The U-Net misses most true CMBs of some random-contrast scans, large and
obvious ones included (docs/model-card.md, "Why the U-Net's candidates miss
true CMBs").  This tool answers which tissue means make it so: the case
(``cmb synth``'s seed and split; the subject is drawn from the seed, as
``--draw-subject`` does) is generated again with its own tissue means, then
once per tissue class with that one class set back to the sequence's prior
mean, and once with every class at its prior.  Nothing else of the case
changes: every variant, the drawn means too, is generated with the means
given (the engine's ``params_override``), so all share the same anatomy,
CMBs, noise, acquisition and tissue texture (the texture draws after the
means, so the case as ``cmb synth`` wrote it differs from the ``drawn``
variant in that texture only, ±0–6 %; and a seed that ``--negative-every``
made negative is generated here with its drawn CMBs).  Each variant's U-Net probability
is read at every true CMB (the highest value within its apparent radius plus
``margin_mm``, :func:`training.candidate_misses.peak_near`), and a CMB counts
as seen when that peak reaches ``seen_at`` (the candidate classifier's
candidate threshold, 0.3).

    python -m training.contrast_ablation --seed 500045 --split val \\
        --out runs/ablation/500045.json

Generating a case and running the U-Net take about 15 s per variant on 2
cores: 18 variants (16 tissues besides white matter, the drawn means, all
priors) and the first generation, which reads the drawn means, in about 6
minutes.  ``--tissues A B ... --together`` adds one variant, ``together``, with
all of those tissues at their priors at once: whether setting the brain's
tissues alone (what an inference-time remapping on the parcellation could
reach) gives back what ``all_prior`` does.  ``--prior-normalization`` runs
every variant a second time, normalized with the intensity map of the
``all_prior`` variant (the same head at prior contrast): what the network
cannot read, apart from what the variant's own normalization statistics
moved.  ``--tissues`` with no names runs only ``drawn`` and ``all_prior``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.infer import predict_probability
from model.onnx_model import OnnxModel, default_model_path
from model.preprocess import IntensityMap, intensity_map, on_model_grid
from model.types import Volume
from training.candidate_misses import LARGE_MM, peak_near
from training.synth.contrast import PRIORS
from training.synth.engine import SynthCase, generate_case

#: The peak from which a CMB counts as seen (the classifier's candidate threshold).
SEEN_AT = 0.3
#: White matter is the reference (1.0) in both modes: never a variant.
REFERENCE = "white_matter"
#: Variants that set no single tissue.
MULTI = ("drawn", "together", "all_prior")


def variants(
    means: Mapping[str, float],
    sequence: str,
    tissues: Sequence[str] | None = None,
    *,
    together: bool = False,
) -> dict[str, dict[str, float]]:
    """Tissue means per variant: ``drawn``, one per tissue set to its prior, ``all_prior``.

    ``together`` adds ``together`` (before ``all_prior``): every chosen tissue
    at its prior at once.
    """
    priors = {t: PRIORS[sequence][t][0] for t in means}
    chosen = [t for t in means if t != REFERENCE] if tissues is None else list(tissues)
    unknown = sorted(set(chosen) - set(means) | ({REFERENCE} & set(chosen)))
    if unknown:
        raise ValueError(f"not a tissue that can be set to its prior: {unknown}")
    out = {"drawn": dict(means)}
    out.update({t: {**means, t: priors[t]} for t in chosen})
    if together:
        out["together"] = {**means, **{t: priors[t] for t in chosen}}
    out["all_prior"] = priors
    return out


def cmb_peaks(
    case: SynthCase,
    unet: OnnxModel,
    margin_mm: float = 1.5,
    *,
    fixed_map: IntensityMap | None = None,
) -> list[float]:
    """The U-Net's peak probability at each true CMB of ``case``, in record order.

    ``fixed_map``: normalize with that map instead of the case's own.
    """
    probability = predict_probability(case.image, unet, overlap=0.0, fixed_map=fixed_map)
    return [
        round(
            peak_near(
                probability,
                c["center_lps_mm"],
                float(c["diameter_apparent_mm"]) / 2.0 + margin_mm,
            ),
            4,
        )
        for c in case.record["cmbs"]
    ]


def summary(
    peaks: Sequence[float], cmbs: Sequence[Mapping[str, Any]], seen_at: float = SEEN_AT
) -> dict[str, Any]:
    """CMBs seen (peak >= ``seen_at``), all and >= ``LARGE_MM``; the mean peak of each."""
    large = [p for p, c in zip(peaks, cmbs, strict=True) if c["diameter_apparent_mm"] >= LARGE_MM]
    return {
        "n": len(peaks),
        "seen": sum(p >= seen_at for p in peaks),
        "n_large": len(large),
        "seen_large": sum(p >= seen_at for p in large),
        "mean_peak": round(float(np.mean(peaks)), 4) if peaks else None,
        "mean_peak_large": round(float(np.mean(large)), 4) if large else None,
    }


def ablate(
    seed: int,
    split: str,
    unet: OnnxModel,
    *,
    tissues: Sequence[str] | None = None,
    together: bool = False,
    prior_normalization: bool = False,
    override: Mapping[str, Any] | None = None,
    seen_at: float = SEEN_AT,
) -> dict[str, Any]:
    """Every variant of case ``seed`` with its tissue means and what the U-Net sees.

    ``prior_normalization``: each variant is also run normalized with the map
    of the ``all_prior`` variant (``prior_map_*`` keys; every variant has the
    same head, scale and CMBs, so that map is the one this head would get at
    prior contrast): whether a variant's blindness is the contrast the network
    reads or the shift its own normalization statistics make.
    """
    base_override = dict(override or {})
    # only for its means: its tissue texture draws from another random state than that of
    # a case generated with means given, so the drawn variant is generated again below
    drawn = generate_case(seed, split=split, params_override=base_override or None)
    sequence = drawn.params.sequence
    means_of = variants(drawn.params.tissue_means, sequence, tissues, together=together)

    def generate(name: str) -> SynthCase:
        override = {**base_override, "tissue_means": means_of[name]}
        return generate_case(seed, split=split, params_override=override)

    # one whole head at a time in memory; only the all-prior one is made ahead, for its map
    all_prior = generate("all_prior") if prior_normalization else None
    prior_map = prior_intensity_map(all_prior.image, unet) if all_prior is not None else None
    rows = []
    for name, means in means_of.items():
        case = all_prior if name == "all_prior" and all_prior is not None else generate(name)
        peaks = cmb_peaks(case, unet)
        row = {
            "variant": name,
            "tissue_mean": None if name in MULTI else means[name],
            "drawn_mean": drawn.params.tissue_means.get(name),
            "peaks": peaks,
            **summary(peaks, case.record["cmbs"], seen_at),
        }
        if prior_map is not None:
            fixed = cmb_peaks(case, unet, fixed_map=prior_map)
            row["prior_map_peaks"] = fixed
            row |= {
                f"prior_map_{k}": v for k, v in summary(fixed, case.record["cmbs"], seen_at).items()
            }
        rows.append(row)
    return {
        "case_id": drawn.case_id,
        "sequence": sequence,
        "contrast_mode": drawn.params.contrast_mode,
        "tissue_means": {k: round(v, 4) for k, v in drawn.params.tissue_means.items()},
        "unet": f"{unet.info.name} {unet.info.version}",
        "together": list(tissues) if together and tissues else None,
        "seen_at": seen_at,
        "variants": rows,
    }


def prior_intensity_map(image: Volume, unet: OnnxModel) -> IntensityMap:
    """The map the U-Net's own normalization computes for ``image`` on its grid."""
    grid = on_model_grid(image, unet.metadata)
    return intensity_map(grid.array, unet.metadata.normalization)


def table(result: Mapping[str, Any]) -> str:
    """A markdown table of :func:`ablate`'s variants."""
    lines = [
        f"{result['case_id']} ({result['sequence']}, {result['contrast_mode']} contrast), "
        f"{result['unet']}, seen: peak >= {result['seen_at']}",
        "",
        "| variant | drawn mean -> set to | CMBs seen | >= 3 mm seen | mean peak >= 3 mm |",
        "|---|---|---|---|---|",
    ]
    fixed = any("prior_map_seen" in r for r in result["variants"])
    if fixed:
        lines[-2] += " with all_prior's normalization: seen | >= 3 mm seen |"
        lines[-1] += "---|---|"
    for r in result["variants"]:
        if r["variant"] == "together":
            change = ", ".join(result["together"] or ()) + " -> priors"
        elif r["tissue_mean"] is None:
            change = ""
        else:
            change = f"{r['drawn_mean']:.2f} -> {r['tissue_mean']:.2f}"
        line = (
            f"| {r['variant']} | {change} | {r['seen']} of {r['n']} | "
            f"{r['seen_large']} of {r['n_large']} | {r['mean_peak_large']} |"
        )
        if fixed:
            line += (
                f" {r['prior_map_seen']} of {r['n']} |"
                f" {r['prior_map_seen_large']} of {r['n_large']} |"
            )
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, required=True, help="the case's seed (cmb synth)")
    p.add_argument("--split", choices=("train", "val"), default="val")
    p.add_argument(
        "--tissues",
        nargs="*",
        help="only these tissues (default: all but WM; none: only drawn and all_prior)",
    )
    p.add_argument(
        "--together", action="store_true", help="also all of --tissues at their priors at once"
    )
    p.add_argument(
        "--prior-normalization",
        action="store_true",
        help="also run every variant normalized as the all-prior variant is",
    )
    p.add_argument("--unet", type=Path, help="U-Net ONNX file (default: the shipped one)")
    p.add_argument("--seen-at", type=float, default=SEEN_AT)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--out", type=Path, help="also write the result as JSON")
    args = p.parse_args(argv)
    unet = OnnxModel.load(
        args.unet or default_model_path("cmb_segmentation"), device="cpu", threads=args.threads
    )
    result = ablate(
        args.seed,
        args.split,
        unet,
        tissues=args.tissues,
        together=args.together,
        prior_normalization=args.prior_normalization,
        seen_at=args.seen_at,
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
