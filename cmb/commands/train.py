"""`cmb train --config FILE`: train the CMB network (see docs/training.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the microbleed network (needs the `training` extra)",
        description=(
            "Train (or fine-tune with --init) the 3D U-Net on standardized dataset folders. "
            "Writes config, checkpoints, metrics.csv, TensorBoard logs and the best exported "
            "model to the run folder. Under torchrun it trains with DDP."
        ),
    )
    p.add_argument("--config", required=True, type=Path, help="JSON config (training/configs/)")
    p.add_argument(
        "--data",
        nargs="+",
        default=None,
        metavar="DIR",
        help="training dataset folders (replace data.train of the config)",
    )
    p.add_argument(
        "--val-data",
        nargs="+",
        default=None,
        metavar="DIR",
        help="validation dataset folders (replace data.val of the config)",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT_OR_ONNX",
        help="initial weights: a checkpoint, an ONNX file or a model name in "
        "model/weights (e.g. cmb_unet) for fine-tuning",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="run folder (default: runs/<config name>)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--epochs", type=int, default=None, help="override optim.epochs")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 is fastest on a busy shared CPU)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from model.errors import InputError

    try:
        from training.config import load_config
        from training.train import describe, train
    except ImportError as e:
        raise InputError(
            f"training needs the `training` extra (torch, monai): pip install '.[training]' ({e})"
        ) from e
    logging.getLogger("training").setLevel(logging.INFO)
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    try:
        config = load_config(args.config)
        data = config.data
        if args.data:
            data = dataclasses.replace(data, train=tuple(args.data))
        if args.val_data:
            data = dataclasses.replace(data, val=tuple(args.val_data))
        config = config.replace(data=data)
        if args.epochs is not None:
            config = config.replace(optim=dataclasses.replace(config.optim, epochs=args.epochs))
        run_dir = args.out or Path("runs") / config.name
        result = train(
            config,
            run_dir,
            init=args.init,
            resume=args.resume,
            device=args.device,
            progress=not args.no_progress,
        )
    except FileNotFoundError as e:  # a config, dataset or checkpoint that is not there
        # (one training cannot use is a TrainingInputError, an InputError, already; any
        # other ValueError is a bug and shows as one)
        raise InputError(str(e)) from e
    print(describe(result))
    return 0
