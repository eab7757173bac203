"""Give a trained ONNX model another normalization mask, its weights untouched.

A network's normalization is part of its file (``cmb.normalization``,
docs/model-format.md): the service normalizes every image as the file says.
Some changes to it are fixes of the input rather than new inputs for the
network: the ``head`` mask puts the lower clip below white matter where the
``otsu`` mask put it above (``model.preprocess.foreground_mask``), and the
networks trained under ``otsu`` read CMBs under ``head`` that they could not
see before (docs/model-card.md, "The lower clip that hid CMBs").  This tool
writes such a file: the same weights, the new mask, a new version, and in
``cmb.renormalized_from`` the file it came from.  Whether the change is an
improvement is measured, as for any model, before it ships.

A segmentation model's stand-alone threshold and metrics belong to the old
normalization: with ``--val-data`` they are measured again on those folders
(``training.validate``, as ``cmb export`` does); without, the metrics are
dropped and the threshold kept, and the file says it was not revalidated.
A candidate classifier's threshold is set afterwards by ``cmb classifier
set-threshold`` on the product path, as for every classifier.

    python -m training.renormalize model/weights/cmb_unet.onnx --out runs/head/cmb_unet.onnx \\
        --mask head --version 0.9.1 --val-data runs/data/select
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.onnx_model import OnnxModel
from model.preprocess import MASKS, validate_normalization
from training.export import set_metadata

#: The ``extra`` key (``cmb.renormalized_from`` in the file) naming the source file.
SOURCE_KEY = "renormalized_from"
#: Thresholds a segmentation model is validated at (as ``cmb export`` is documented with).
THRESHOLDS = (0.3, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def renormalize(
    src: str | Path,
    out: str | Path,
    mask: str,
    version: str,
    *,
    val_dirs: Sequence[str | Path] = (),
    thresholds: Sequence[float] = THRESHOLDS,
    max_fp_per_scan: float = 0.5,
    threads: int | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Write ``src`` to ``out`` with normalization mask ``mask`` and version ``version``.

    Returns a JSON-able report (also written to ``<out>.metrics.json`` when
    the file is validated on ``val_dirs``).
    """
    source = OnnxModel.load(src, device="cpu")
    old = source.metadata
    normalization = {**old.normalization, "mask": mask}
    validate_normalization(normalization)
    if normalization == old.normalization:
        raise ValueError(f"{src}: the normalization already uses mask {mask!r}")
    if version == old.version:
        raise ValueError(f"{src}: another normalization needs another version than {version}")
    target = Path(out)
    if target.resolve() == Path(src).resolve():
        raise ValueError("write the renormalized model to another file than its source")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    origin = (
        f"{old.name} {old.version} sha256:{source.info.sha256}; "
        f"normalization mask {old.normalization.get('mask', 'all')} -> {mask}"
    )
    metadata = dataclasses.replace(
        old,
        version=version,
        normalization=normalization,
        metrics=None,
        extra={**old.extra, SOURCE_KEY: origin},
    )
    report: dict[str, Any] = {"model": target.name, "renormalized_from": origin}
    if val_dirs and old.task == "cmb_segmentation":
        from training.validate import validate_on_folders

        set_metadata(target, metadata)
        val = validate_on_folders(
            target,
            val_dirs,
            thresholds,
            max_fp_per_scan=max_fp_per_scan,
            overlap=0.0,
            threads=threads,
            workers=workers,
        )
        metadata = dataclasses.replace(
            metadata, threshold=float(val["threshold"]), metrics=val["summary"]
        )
        report |= {"threshold": metadata.threshold, "validation": val}
        target.with_suffix(".metrics.json").write_text(
            json.dumps(report, indent=2, sort_keys=True) + "\n"
        )
    elif val_dirs:
        raise ValueError(
            f"{src} is a {old.task} model: validate it on the product path "
            "(cmb classifier set-threshold), not with --val-data"
        )
    else:
        note = f"renormalized ({origin}); not revalidated, threshold kept"
        metadata = dataclasses.replace(
            metadata, description=f"{old.description}; {note}" if old.description else note
        )
    set_metadata(target, metadata)
    OnnxModel.load(target, device="cpu")  # the runtime accepts what was written
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="ONNX model of this project's format")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mask", choices=MASKS, required=True, help="the new normalization mask")
    p.add_argument("--version", required=True, help="the new file's version")
    p.add_argument("--val-data", type=Path, nargs="*", default=[], help="validation folders")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    p.add_argument("--max-fp-per-scan", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    report = renormalize(
        args.src,
        args.out,
        args.mask,
        args.version,
        val_dirs=args.val_data,
        thresholds=args.thresholds,
        max_fp_per_scan=args.max_fp_per_scan,
        threads=args.threads,
        workers=args.workers,
    )
    print(json.dumps({k: v for k, v in report.items() if k != "validation"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
