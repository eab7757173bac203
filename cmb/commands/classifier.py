"""`cmb classifier harvest|train|compare|choose|export|set-threshold`: the candidate classifier.

Needs the `training` extra.

harvest: run the U-Net on dataset folders and keep each candidate (and each
missed true CMB) as a labelled cube; train: fit the classifier on harvested
folders; compare: recall at several FP rates of the U-Net alone and of the
cascade on harvested candidates; choose: score checkpoints on the product path
(test-time augmentation, location filter) of a cached selection set and pick
one; export: write the ONNX file, validated as a cascade with the U-Net on
held-out dataset folders; set-threshold: write the operating point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "classifier",
        help="candidate classifier (false-positive reduction): harvest, train, export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="classifier_command", required=True)

    h = sub.add_parser("harvest", help="labelled candidate cubes of dataset folders")
    h.add_argument("--data", nargs="+", required=True, type=Path, metavar="DIR")
    h.add_argument("--out", required=True, type=Path, help="folder of <case_id>.npz")
    h.add_argument("--unet", type=Path, default=None, help="U-Net ONNX (default: shipped)")
    h.add_argument("--candidate-threshold", type=float, default=0.3)
    h.add_argument("--overlap", type=float, default=0.0, help="sliding-window overlap")
    h.add_argument("--workers", type=int, default=1)
    for flag, what in (
        ("--unet-spacing", "run the U-Net and cut the cubes on this grid (mm; default: its own)"),
        ("--cube-spacing", "cut the cubes on this grid instead (mm; default: the U-Net's grid)"),
    ):
        h.add_argument(flag, type=float, nargs=3, metavar=("SLICE", "ROW", "COL"), help=what)
    h.add_argument(
        "--cube-filter",
        default="none",
        metavar="METHOD",
        help="input filter of the cubes, which the exported classifier declares "
        "(cmb.input_filter, e.g. inplane_minimum; default none: the image as acquired, "
        "never the U-Net's filter)",
    )
    h.add_argument(
        "--extra-channel",
        action="append",
        default=[],
        metavar="METHOD",
        help="also cut, as a further channel of each cube, the image under this input filter "
        "(none: as acquired); repeat for more channels; the exported classifier declares "
        "them (cmb.extra_channels)",
    )
    h.add_argument(
        "--cube-size",
        type=int,
        default=None,
        metavar="N",
        help="edge of the harvested cubes in voxels (default 32: a 24-voxel input shifted by "
        "up to 3 fits; train --patch P --shift S needs P + 2 S)",
    )
    h.set_defaults(func=run_harvest)

    t = sub.add_parser("train", help="train on harvested folders")
    t.add_argument("--train", nargs="+", required=True, metavar="DIR")
    t.add_argument("--val", nargs="+", required=True, metavar="DIR")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--steps", type=int, default=200, help="steps per epoch")
    t.add_argument("--candidate-threshold", type=float, default=0.3)
    t.add_argument(
        "--features", type=int, nargs="+", default=[16, 32, 64], help="channels per block"
    )
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--patch", type=int, default=None, help="input cube edge (voxels; default 24)")
    t.add_argument(
        "--shift", type=int, default=None, help="random shift of each cube (voxels; default 3)"
    )
    t.add_argument(
        "--channels",
        type=int,
        nargs="+",
        default=None,
        metavar="I",
        help="train on these channels of the harvest, in this order (0: the cube, 1...: its "
        "--extra-channel cubes; default: all)",
    )
    t.add_argument(
        "--small-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="draw the positives of CMBs smaller than --small-below W times as often as the "
        "others (default 1: alike; needs a harvest that records sizes)",
    )
    t.add_argument(
        "--small-below",
        type=float,
        default=None,
        metavar="MM",
        help="the size (apparent, else true diameter) under which --small-weight applies "
        "(default 3, the large-CMB floor's bin)",
    )
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--keep-every",
        type=int,
        default=0,
        metavar="N",
        help="also keep epoch_NNN.pt every N epochs (for `cmb classifier choose`)",
    )
    t.add_argument("--device", default="cpu", help="torch device of the network (cpu, cuda)")
    t.set_defaults(func=run_train)

    c = sub.add_parser("compare", help="recall at FP rates: U-Net alone vs cascade (harvest)")
    c.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    c.add_argument("--val", nargs="+", required=True, metavar="DIR", help="harvest folders")
    c.set_defaults(func=run_compare)

    ch = sub.add_parser(
        "choose",
        help="pick a checkpoint by the product path (TTA, location filter) on a selection set",
    )
    ch.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT")
    ch.add_argument("--data", required=True, type=Path, help="the selection set's dataset folder")
    ch.add_argument(
        "--cache",
        required=True,
        type=Path,
        help="its U-Net outputs (training.parcellation.filter_effect --cache)",
    )
    ch.add_argument("--out", required=True, type=Path)
    ch.add_argument("--unet", type=Path, default=None, help="U-Net ONNX (default: shipped)")
    ch.add_argument("--tta", default="flips_inplane_swap", help="none or flips_inplane_swap")
    ch.add_argument("--max-fp-per-scan", type=float, default=0.5)
    ch.set_defaults(func=run_choose)

    e = sub.add_parser(
        "export", help="ONNX export (several checkpoints: their ensemble), validated as a cascade"
    )
    e.add_argument(
        "checkpoint",
        type=Path,
        nargs="+",
        metavar="CHECKPOINT",
        help="one checkpoint, or several: the file outputs the mean of their probabilities",
    )
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--unet", type=Path, default=None, help="U-Net ONNX (default: shipped)")
    e.add_argument("--val-data", nargs="+", default=(), metavar="DIR")
    e.add_argument("--overlap", type=float, default=0.0)
    e.add_argument("--workers", type=int, default=1)
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--predictions", type=Path, default=None, metavar="DIR")
    e.add_argument("--metrics-json", type=Path, default=None)
    e.add_argument("--version", default=None, help="model version (default: the training's)")
    e.add_argument(
        "--tta",
        default=None,
        help="test-time augmentation the product scores with (cmb.tta): none or "
        "flips_inplane_swap (default: none)",
    )
    e.set_defaults(func=run_export)

    o = sub.add_parser(
        "set-threshold",
        help="set the operating point (chosen with the location filter on a selection set)",
    )
    o.add_argument("model", type=Path, metavar="MODEL", help="classifier ONNX, changed in place")
    o.add_argument("--threshold", type=float, required=True)
    o.add_argument(
        "--held-out",
        type=Path,
        required=True,
        metavar="FILTER_EFFECT_JSON",
        help="filter_effect.json of the held-out set: the metrics recorded at the threshold",
    )
    o.add_argument("--selected-on", required=True, help="how and on what the threshold was chosen")
    o.add_argument(
        "--unet",
        type=Path,
        default=None,
        help="pair the classifier with this U-Net (the held-out summary must have been "
        "measured behind it: filter_effect --unet)",
    )
    o.add_argument(
        "--unet-threshold",
        type=float,
        default=None,
        help="U-Net probability at which candidates are extracted (cmb.candidate_threshold; "
        "the held-out summary must have been measured at it: filter_effect --unet-threshold)",
    )
    o.add_argument(
        "--tta",
        default=None,
        help="test-time augmentation the threshold belongs to: none or flips_inplane_swap "
        "(default: keep the file's)",
    )
    o.add_argument(
        "--unet-spacing",
        type=float,
        nargs=3,
        metavar=("SLICE", "ROW", "COL"),
        default=None,
        help="run the --unet U-Net on this grid (mm; cmb.unet_spacing_mm; the held-out "
        "summary must have been measured there: filter_effect --unet-spacing)",
    )
    o.add_argument("--version", default=None, help="the file's new version (default: keep it)")
    o.set_defaults(func=run_set_threshold)


def _training() -> None:
    from model.errors import InputError

    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise InputError(
            f"cmb classifier needs the `training` extra: pip install '.[training]' ({err})"
        ) from err


def run_harvest(args: argparse.Namespace) -> int:
    _training()
    from model.errors import InputError
    from model.onnx_model import default_model_path
    from model.preprocess import validate_input_filter
    from training.classifier.harvest import HARVEST_SIZE, harvest

    def input_filter(flag: str, name: str) -> dict[str, str] | None:
        spec = None if name == "none" else {"method": name}
        try:
            if spec is not None:
                validate_input_filter(spec)
        except ValueError as e:
            raise InputError(f"{flag} {name!r} (or none): {e}") from e
        return spec

    cube_filter = input_filter("--cube-filter", args.cube_filter)
    extra_channels = [input_filter("--extra-channel", name) for name in args.extra_channel]

    n = harvest(
        args.data,
        args.unet or default_model_path(),
        args.out,
        candidate_threshold=args.candidate_threshold,
        overlap=args.overlap,
        workers=args.workers,
        spacing_mm=tuple(args.unet_spacing) if args.unet_spacing else None,
        cube_spacing_mm=tuple(args.cube_spacing) if args.cube_spacing else None,
        size=args.cube_size if args.cube_size is not None else HARVEST_SIZE,
        cube_filter=cube_filter,
        extra_channels=extra_channels,
    )
    print(f"harvested {n} case(s) into {args.out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    _training()
    from training.classifier.train import ClassifierConfig, train

    config = ClassifierConfig(
        train=[str(d) for d in args.train],
        val=[str(d) for d in args.val],
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        candidate_threshold=args.candidate_threshold,
        threads=args.threads,
        seed=args.seed,
        features=tuple(args.features),
        batch_size=args.batch_size,
        lr=args.lr,
        keep_every=args.keep_every,
        channels=args.channels,
        small_weight=args.small_weight,
        **{
            k: v
            for k, v in (
                ("patch", args.patch),
                ("shift", args.shift),
                ("small_below_mm", args.small_below),
            )
            if v is not None
        },
    )
    from model.errors import InputError

    try:  # harvests that cannot train together are a TrainingInputError already
        result = train(config, args.out, device=args.device)
    except FileNotFoundError as e:  # no harvest there
        raise InputError(str(e)) from e
    print(json.dumps(result, indent=1))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    _training()
    from training.classifier.compare import compare

    print(json.dumps(compare(args.checkpoint, args.val), indent=1))
    return 0


def run_choose(args: argparse.Namespace) -> int:
    _training()
    from training.classifier.choose import choose, table

    result = choose(
        args.checkpoints,
        data=args.data,
        cache=args.cache,
        out=args.out,
        unet_path=args.unet,
        tta=args.tta,
        max_fp_per_scan=args.max_fp_per_scan,
    )
    print(table(result))
    print(f"chosen: {result['chosen']['checkpoint']} (written to {args.out / 'choice.json'})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    _training()
    from training.classifier.export import export_classifier

    path = export_classifier(
        args.checkpoint,
        args.out,
        unet_path=args.unet,
        val_dirs=args.val_data,
        overlap=args.overlap,
        workers=args.workers,
        threads=args.threads,
        predictions_dir=args.predictions,
        metrics_json=args.metrics_json,
        version=args.version,
        tta=args.tta,
    )
    print(f"wrote {path}")
    return 0


def run_set_threshold(args: argparse.Namespace) -> int:
    _training()
    from model.onnx_model import OnnxModel
    from training.classifier.operating_point import held_out_metrics, set_operating_point

    summary = json.loads(args.held_out.read_text())
    metrics = set_operating_point(
        args.model,
        args.threshold,
        held_out_metrics(summary, args.threshold),
        selected_on=args.selected_on,
        tta=args.tta,
        unet=OnnxModel.load(args.unet, device="cpu") if args.unet else None,
        unet_threshold=args.unet_threshold,
        unet_spacing_mm=tuple(args.unet_spacing) if args.unet_spacing else None,
        version=args.version,
    )
    print(json.dumps(metrics, indent=1))
    return 0
