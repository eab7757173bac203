"""Write many synthetic cases to the standardized layout (optionally as DICOM too), in parallel."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from training.datasets.layout import append_record, finalize, write_images
from training.synth.anatomy import TRAIN_SUBJECTS, VAL_SUBJECTS, check_subject
from training.synth.engine import generate_case
from training.synth.params import RANDOM_CONTRAST_SHARE


def _one(
    out: str,
    seed: int,
    subject: int | None,
    split: str,
    sequence: str,
    n_cmbs: int | None,
    flavours: dict[str, str] | None,
    override: dict[str, Any] | None = None,
    random_contrast: float = RANDOM_CONTRAST_SHARE,
) -> dict[str, Any]:
    case = generate_case(
        seed,
        subject=subject,
        sequence=sequence,
        split=split,
        n_cmbs=n_cmbs,
        params_override=override,
        random_contrast=random_contrast,
    )
    write_images(out, case)
    record = case.record
    if flavours:
        from model.series_writer import StudyMeta, write_series

        acq = record["acquisition"]
        folder = Path(out) / "dicom" / case.case_id
        study = StudyMeta.synthetic(seed).resolved(seed)  # what write_series would use
        write_series(
            case.image,
            folder,
            flavour=flavours[acq["sequence"]],
            study=study,
            echo_time_ms=acq["echo_time_ms"],
            field_strength_t=acq["field_strength_t"],
            slice_thickness_mm=acq["slice_thickness_mm"],
            seed=seed,
        )
        # the StudyInstanceUID lets `cmb evaluate` pair `cmb detect` output (named by it)
        record = {
            **record,
            "dicom": f"dicom/{case.case_id}",
            "study_instance_uid": study.study_instance_uid,
        }
    return record


def synthesize(
    out_dir: str | Path,
    *,
    cases: int,
    seed: int = 0,
    subjects: list[int] | None = None,
    split: str = "train",
    sequence: str = "mixed",
    n_cmbs: int | None = None,
    dicom_flavours: dict[str, str] | None = None,
    workers: int = 1,
    progress: bool = True,
    params_override: dict[str, Any] | None = None,
    negative_every: int = 0,
    draw_subject: bool = False,
    random_contrast: float = RANDOM_CONTRAST_SHARE,
) -> int:
    """Generate ``cases`` cases with seeds ``seed .. seed+cases-1``; returns the case count.

    Case ``i`` uses subject ``subjects[i % len(subjects)]``, or one drawn from the
    split's subjects by the case's own seed when ``draw_subject`` (how the
    held-out validation set of docs/model-card.md was made).  With
    ``negative_every=K`` every case whose seed is divisible by K has no CMB.
    ``random_contrast`` is the share of random tissue contrast
    (:func:`training.synth.params.sample_params`).
    The output does not depend on ``workers`` (cases.jsonl is sorted by case id
    at the end).
    """
    pool = subjects or list(TRAIN_SUBJECTS if split == "train" else VAL_SUBJECTS)
    for s in pool:
        check_subject(s, split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (
            str(out),
            seed + i,
            None if draw_subject else pool[i % len(pool)],
            split,
            sequence,
            0 if negative_every > 0 and (seed + i) % negative_every == 0 else n_cmbs,
            dicom_flavours,
            params_override,
            random_contrast,
        )
        for i in range(cases)
    ]
    from tqdm import tqdm

    bar = tqdm(total=cases, unit="case", disable=not progress, desc="cmb synth")
    if workers <= 1:
        for job in jobs:
            append_record(out, _one(*job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for record in ex.map(_one, *zip(*jobs, strict=True)):
                append_record(out, record)
                bar.update()
    bar.close()
    return finalize(out)
