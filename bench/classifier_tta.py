"""Cost of the classifier's test-time augmentation: one view against 16, same candidates.

Run: ``nice -n 5 .venv/bin/python -m bench.classifier_tta [--quick] [--cases N] [--out FILE]``

Inputs: held-out synthetic heads made in-process by the synthetic engine
(``generate_case(300100 + n, split="val")``, subjects 17-20; needs the
``training`` extra and ../shared/data), the shipped U-Net's candidates on each
(the classifier's candidate threshold), then ``classify_candidates`` with the
shipped classifier timed twice, interleaved (bench/common.py): scoring each
cube once, and the mean over its 16 flipped / in-plane-swapped views (what
the shipped file's ``cmb.tta`` asks for).  The ratio between the two is the
number to read; the U-Net is not timed.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

from bench.common import Recorder, interleaved, stats
from model import candidate_classifier as cc
from model.candidates import extract_candidates
from model.infer import predict_probability
from model.onnx_model import OnnxModel, default_model_path
from model.types import Detection, Volume


def scorer(
    classifier: OnnxModel, image: Volume, detections: list[Detection], *, tta: bool
) -> Callable[[], None]:
    """``classify_candidates`` on a fresh copy of the candidates, the views chosen here."""

    def run() -> None:
        cc.classify_candidates(image, copy.deepcopy(detections), classifier, tta=tta)

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    from training.synth.engine import generate_case

    rec = Recorder("classifier_tta", a.quick)
    unet = OnnxModel.load(default_model_path("cmb_segmentation"), device="cpu")
    classifier = OnnxModel.load(default_model_path("cmb_candidate_classification"), device="cpu")
    rec.params = {
        "classifier": classifier.info.to_json(),
        "shipped_tta": classifier.metadata.extra.get(cc.TTA_KEY, "none"),
        "cases": 1 if a.quick else a.cases,
    }
    repeats = 1 if a.quick else 3
    for n in range(rec.params["cases"]):
        case = generate_case(300100 + n, split="val")
        probability = predict_probability(case.image, unet, overlap=0.0)
        _, detections = extract_candidates(probability, cc.candidate_threshold(classifier))

        times = interleaved(
            {
                "one_view": scorer(classifier, case.image, detections, tta=False),
                "tta_16_views": scorer(classifier, case.image, detections, tta=True),
            },
            repeats,
            warmup=0 if a.quick else 1,
        )
        one, sixteen = min(times["one_view"]), min(times["tta_16_views"])
        rec.results[case.case_id] = {
            "sequence": case.record["acquisition"]["sequence"],
            "candidates": len(detections),
            "one_view": stats(times["one_view"]),
            "tta_16_views": stats(times["tta_16_views"]),
            "ratio_min": round(sixteen / one, 2) if one > 0 else None,
        }
        print(case.case_id, len(detections), round(one, 2), round(sixteen, 2), flush=True)
    print(rec.write(a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
