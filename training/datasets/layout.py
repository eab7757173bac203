"""The standardized dataset layout shared by synthesis, importers, training and evaluation.

::

    OUT/images/<case>.nii.gz    image (float32, LPS geometry via NIfTI's RAS on disk)
    OUT/labels/<case>.nii.gz    instance labels (int16; 0 = background, n = cmbs[i].label)
    OUT/cases.jsonl             one JSON object per case (see docs/synthetic-data.md)

``cases.jsonl`` is appended one line per case and rewritten sorted by
``case_id`` by :func:`finalize`, so that parallel writers give the same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from model.errors import InputError
from model.types import Volume
from model.volume import read_nifti, write_nifti

CASES_FILE = "cases.jsonl"
REQUIRED_KEYS = (
    "case_id",
    "image",
    "label",
    "subject",
    "split",
    "source",
    "acquisition",
    "cmbs",
    "mimics",
)


class CaseLike(Protocol):
    case_id: str
    image: Volume
    labels: Volume
    record: dict[str, Any]


def check_record(record: dict[str, Any]) -> None:
    """Refuse a record that misses a required key or has a bad split."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"case record {record.get('case_id')!r} lacks {missing}")
    if record["split"] not in ("train", "val", "test"):
        raise ValueError(f"case {record['case_id']!r}: split must be train, val or test")


def write_images(out_dir: str | Path, case: CaseLike) -> None:
    """Write one case's image and label files (not its record)."""
    out = Path(out_dir)
    record = case.record
    check_record(record)
    write_nifti(case.image.with_array(case.image.array.astype(np.float32)), out / record["image"])
    write_nifti(case.labels.with_array(case.labels.array.astype(np.int16)), out / record["label"])


def append_record(out_dir: str | Path, record: dict[str, Any]) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / CASES_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def write_case(out_dir: str | Path, case: CaseLike) -> None:
    """Write images and labels, and append the record to cases.jsonl."""
    write_images(out_dir, case)
    append_record(out_dir, case.record)


def finalize(out_dir: str | Path) -> int:
    """Sort cases.jsonl by case_id and drop duplicate ids (last one wins); returns the count."""
    path = Path(out_dir) / CASES_FILE
    if not path.is_file():
        return 0
    by_id = {r["case_id"]: r for r in read_cases(out_dir)}
    text = "".join(json.dumps(by_id[k], sort_keys=True) + "\n" for k in sorted(by_id))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return len(by_id)


def read_cases(out_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a dataset folder, in file order."""
    path = Path(out_dir) / CASES_FILE
    if not path.is_file():
        raise InputError(f"{path}: no such file (not a standardized dataset folder)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not JSON ({e})") from e
    return out


def load_case(out_dir: str | Path, case_id: str) -> tuple[Volume, Volume, dict[str, Any]]:
    """Image, instance labels (int16 array) and record of one case."""
    for record in read_cases(out_dir):
        if record["case_id"] == case_id:
            image = read_nifti(Path(out_dir) / record["image"])
            labels = read_nifti(Path(out_dir) / record["label"])
            return image, labels.with_array(np.rint(labels.array).astype(np.int16)), record
    raise InputError(f"{out_dir}: no case {case_id!r} in {CASES_FILE}")
