"""Train the candidate classifier on harvested patches and export it to ONNX.

Input: folders of ``<case_id>.npz`` written by ``training.classifier.harvest``
(training pools and one held-out validation pool).  Batches are balanced
(half microbleeds, half U-Net false positives, so the rare class is not
drowned; with ``small_weight`` the positives of CMBs under ``small_below_mm``
are drawn that many times as often as the larger ones), each patch randomly
shifted by up to ``shift`` voxels, flipped on every axis, its two in-plane
axes swapped (the slice axis keeps its own blur), and its intensities
scaled, offset and noised.  After every epoch the cascade is scored on the
validation candidates: recall at no more than ``max_fp_per_scan`` false
positives per scan, using the labels the harvest gave (one-to-one matches of
the evaluation package); the best epoch is kept (``best.pt``, exported with
the threshold that gave that recall) and so is the last one (``last.pt``);
with ``keep_every`` also every N-th epoch, for
:mod:`training.classifier.choose`, which scores checkpoints on the product
path instead of this one-view check.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from training.classifier.network import CandidateClassifier
from training.errors import TrainingInputError
from training.validate import LARGE_MM

log = logging.getLogger(__name__)


class HarvestError(TrainingInputError):
    """Harvests that cannot train together, or a configuration they cannot serve.

    A :class:`TrainingInputError` (so still the ValueError these checks always
    raised), so that the CLI reports these as the user's input and lets any
    other ValueError show as the bug it is.
    """


@dataclass
class ClassifierConfig:
    name: str = "cmb_classifier"
    version: str = "0.1.0"
    seed: int = 0
    patch: int = 24
    shift: int = 3
    features: tuple[int, ...] = (16, 32, 64)
    dropout: float = 0.3
    lr: float = 2e-3
    weight_decay: float = 1e-4
    epochs: int = 20
    steps_per_epoch: int = 200
    batch_size: int = 32
    candidate_threshold: float = 0.3
    max_fp_per_scan: float = 0.5
    train_on_missed: bool = False
    warmup: float = 0.1  # fraction of the steps the learning rate rises (one-cycle)
    keep_every: int = 0  # also keep epoch_NNN.pt every N epochs, for `cmb classifier choose`
    threads: int = 1
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    # The grid (mm) the harvest cut the cubes on; set from the harvest (None: the U-Net's
    # own spacing, or a harvest that predates the record).
    spacing_mm: list[float] | None = None
    # The grid (mm) the harvest ran the U-Net on, when the cubes were cut on another
    # (None: the cubes' grid, as every harvest before the two were separate).
    unet_spacing_mm: list[float] | None = None
    # The input filter the harvest cut the cubes with (``model.preprocess.INPUT_FILTERS``),
    # set from the harvest; the exported file declares it (None: the image as acquired).
    input_filter: dict[str, Any] | None = None
    # Which of the harvest's channels to train on, in order (None: all of them); the
    # first one's filter becomes ``input_filter``, the others' ``extra_channels``.
    channels: list[int] | None = None
    # The input filters of the further channels (None: as acquired), set from the harvest
    # and ``channels``; the exported file declares them (``cmb.extra_channels``).
    extra_channels: list[dict[str, Any] | None] = field(default_factory=list)
    # Positives of CMBs smaller than ``small_below_mm`` (the size the size bins read:
    # apparent, else true) are drawn ``small_weight`` times as often as the others
    # (1: every positive alike, as before the option); needs a harvest that records sizes.
    small_weight: float = 1.0
    small_below_mm: float = LARGE_MM

    @property
    def input_channels(self) -> int:
        """Channels of the network's input."""
        return 1 + len(self.extra_channels)

    @property
    def channel_filters(self) -> list[dict[str, Any] | None]:
        """The input filter of each channel the network reads, in order."""
        return [self.input_filter, *self.extra_channels]

    def unet_grid(self) -> tuple[float, float, float] | None:
        """The grid the U-Net ran on for this classifier's candidates (None: its own)."""
        grid = self.unet_spacing_mm if self.unet_spacing_mm is not None else self.spacing_mm
        return (float(grid[0]), float(grid[1]), float(grid[2])) if grid is not None else None


@dataclass
class Pool:
    """All harvested rows of some folders, in memory."""

    patches: npt.NDArray[np.float16]  # [N, C, S, S, S]
    label: npt.NDArray[np.uint8]
    unet_probability: npt.NDArray[np.float32]
    is_candidate: npt.NDArray[np.bool_]
    case: npt.NDArray[np.int32]
    n_truth: npt.NDArray[np.int32]  # per case
    case_ids: list[str]
    # per row, the size of its CMB (NaN: a false positive, a truth without a size, or a
    # harvest from before sizes were recorded; ``sizes_recorded`` tells those apart)
    truth_diameter_mm: npt.NDArray[np.float32] | None = None
    # the grid every cube was cut on (None: not recorded, harvests before it was)
    spacing_mm: tuple[float, ...] | None = None
    # the grid the U-Net ran on (the cubes' grid when the harvest did not record its own)
    unet_spacing_mm: tuple[float, ...] | None = None
    # the input filter the cubes were cut with (None: none)
    input_filter: dict[str, Any] | None = None
    # the input filters of the further channels (None: the image as acquired)
    extra_channels: tuple[dict[str, Any] | None, ...] = ()

    @property
    def cube_size(self) -> int:
        """The harvested cubes' edge (voxels)."""
        return int(self.patches.shape[2])

    @property
    def channel_filters(self) -> list[dict[str, Any] | None]:
        """The input filter of each channel, in order."""
        return [self.input_filter, *self.extra_channels]

    def select_channels(self, channels: list[int] | None) -> Pool:
        """This pool with only ``channels`` (indices, in the order given; None: all)."""
        if channels is None:
            return self
        filters = self.channel_filters
        if not channels or any(not 0 <= c < len(filters) for c in channels):
            raise HarvestError(
                f"channels {channels} are not among the harvest's {len(filters)} "
                f"(0 to {len(filters) - 1})"
            )
        return replace(
            self,
            patches=self.patches[:, channels],
            input_filter=filters[channels[0]],
            extra_channels=tuple(filters[c] for c in channels[1:]),
        )

    def candidate_rows(self, threshold: float) -> npt.NDArray[np.bool_]:
        """The U-Net's own candidates at ``threshold`` (not the added missed CMBs)."""
        return self.is_candidate & (self.unet_probability >= threshold)

    @classmethod
    def load(cls, folders: list[str]) -> Pool:
        keys = ("patches", "label", "unet", "cand", "case", "size")
        parts: dict[str, list[Any]] = {k: [] for k in keys}
        every_size_recorded = True
        n_truth: list[int] = []
        ids: list[str] = []
        grids: set[tuple[tuple[float, ...] | None, tuple[float, ...] | None]] = set()
        filters: set[tuple[str, str]] = set()
        sizes: set[int] = set()
        for folder in folders:
            for path in sorted(Path(folder).glob("*.npz")):
                if path.name.endswith(".tmp.npz"):
                    continue
                with np.load(path) as z:
                    patches = z["patches"]
                    # one channel was stored as [N, S, S, S]
                    parts["patches"].append(patches[:, None] if patches.ndim == 4 else patches)
                    sizes.add(int(patches.shape[-1]))
                    parts["label"].append(z["label"])
                    parts["unet"].append(z["unet_probability"])
                    parts["cand"].append(z["is_candidate"])
                    parts["case"].append(np.full(len(z["label"]), len(ids), dtype=np.int32))
                    if "truth_diameter_mm" in z.files:
                        parts["size"].append(z["truth_diameter_mm"])
                    else:
                        every_size_recorded = False
                        parts["size"].append(np.full(len(z["label"]), np.nan, dtype=np.float32))
                    n_truth.append(int(z["n_truth"]))
                    cube = _grid(z, "spacing_mm")
                    grids.add((cube, _grid(z, "unet_spacing_mm") or cube))
                    recorded = {
                        k: str(z[k]) for k in ("input_filter", "extra_channels") if k in z.files
                    }
                    filters.add(
                        (recorded.get("input_filter", ""), recorded.get("extra_channels", ""))
                    )
                ids.append(path.stem)
        if not ids:
            raise FileNotFoundError(f"no harvested cases in {folders}")
        if len(grids) > 1:
            raise HarvestError(
                f"the harvests in {folders} were made on different grids ((cubes, U-Net): "
                f"{', '.join(sorted(map(str, grids)))}): harvest them on one"
            )
        if len(sizes) > 1:
            raise HarvestError(
                f"the harvests in {folders} cut cubes of different sizes "
                f"({', '.join(map(str, sorted(sizes)))} voxels): harvest them with one "
                "--cube-size"
            )
        if len(filters) > 1:
            described = sorted(f"{f or 'none'} (extra channels: {x or 'none'})" for f, x in filters)
            raise HarvestError(
                f"the harvests in {folders} cut their cubes with different input filters or "
                f"channels ({', '.join(described)}): harvest them with one --cube-filter and "
                "the same --extra-channel"
            )
        cube_grid, unet_grid = grids.pop()
        cube_filter, extra = filters.pop()
        return cls(
            patches=np.concatenate(parts["patches"]),
            label=np.concatenate(parts["label"]),
            unet_probability=np.concatenate(parts["unet"]),
            is_candidate=np.concatenate(parts["cand"]),
            case=np.concatenate(parts["case"]),
            n_truth=np.asarray(n_truth, dtype=np.int32),
            case_ids=ids,
            spacing_mm=cube_grid,
            unet_spacing_mm=unet_grid,
            input_filter=json.loads(cube_filter) if cube_filter else None,
            extra_channels=tuple(json.loads(extra)) if extra else (),
            # sizes only where every case recorded them: a mix would read as no small CMBs
            truth_diameter_mm=np.concatenate(parts["size"]) if every_size_recorded else None,
        )


def _grid(arrays: Any, key: str) -> tuple[float, ...] | None:
    """A grid recorded in a harvest file (None: not recorded)."""
    return tuple(round(float(v), 6) for v in arrays[key]) if key in arrays.files else None


def center_crop(patches: npt.NDArray[Any], size: int, offset: npt.NDArray[np.int64]) -> Any:
    """Cubes of ``size`` from ``[N, C, S, S, S]``, shifted by ``offset`` [N, 3] from the centre
    (every channel alike)."""
    full = patches.shape[2]
    start = (full - size) // 2 + offset
    out = np.empty((patches.shape[0], patches.shape[1], size, size, size), dtype=np.float32)
    for n, (k, j, i) in enumerate(start):
        out[n] = patches[n, :, k : k + size, j : j + size, i : i + size]
    return out


def augment(
    patches: npt.NDArray[Any], rng: np.random.Generator, size: int, shift: int
) -> npt.NDArray[np.float32]:
    n = patches.shape[0]
    x = center_crop(patches, size, rng.integers(-shift, shift + 1, size=(n, 3)))
    for axis in (2, 3, 4):
        flip = rng.random(n) < 0.5
        x[flip] = np.flip(x[flip], axis=axis)
    swap = rng.random(n) < 0.5
    x[swap] = np.swapaxes(x[swap], 3, 4)
    # one intensity change per cube, every channel alike (they show the same tissue)
    scale = rng.uniform(0.8, 1.25, size=(n, 1, 1, 1, 1))
    offset = rng.normal(0.0, 0.15, size=(n, 1, 1, 1, 1))
    noise = rng.normal(0.0, 1.0, size=x.shape) * rng.uniform(0.0, 0.15, size=(n, 1, 1, 1, 1))
    return (x * scale + offset + noise).astype(np.float32)


def recall_at_fp(
    scores: npt.NDArray[np.float32],
    label: npt.NDArray[np.uint8],
    n_truth: int,
    n_scans: int,
    max_fp_per_scan: float,
) -> tuple[float, float, float]:
    """(recall, fp/scan, threshold): the lowest score cut with FP/scan <= the limit."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(label[order] == 1)
    fp = np.cumsum(label[order] == 0)
    ok = np.flatnonzero(fp / n_scans <= max_fp_per_scan)
    if ok.size == 0 or n_truth == 0:
        return 0.0, 0.0, 1.0
    last = int(ok[-1])
    # cut just above the next (excluded) score, or at the last included one
    threshold = float(scores[order[last]])
    return float(tp[last] / n_truth), float(fp[last] / n_scans), threshold


def score(net: torch.nn.Module, patches: npt.NDArray[Any], size: int) -> npt.NDArray[np.float32]:
    net.eval()
    device = next(net.parameters()).device
    out = []
    zero = np.zeros((0, 3), dtype=np.int64)
    with torch.no_grad():
        for n in range(0, patches.shape[0], 256):
            chunk = patches[n : n + 256]
            x = center_crop(chunk, size, np.resize(zero, (chunk.shape[0], 3)))
            logits = net(torch.from_numpy(x).to(device))
            out.append(torch.sigmoid(logits).reshape(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def evaluate(net: torch.nn.Module, val: Pool, config: ClassifierConfig) -> dict[str, float]:
    rows = val.candidate_rows(config.candidate_threshold)
    s = score(net, val.patches[rows], config.patch)
    n_truth = int(val.n_truth.sum())
    n_scans = len(val.case_ids)
    recall, fps, threshold = recall_at_fp(
        s, val.label[rows], n_truth, n_scans, config.max_fp_per_scan
    )
    ceiling = float(val.label[rows].sum() / max(n_truth, 1))
    return {"recall": recall, "fp_per_scan": fps, "threshold": threshold, "ceiling": ceiling}


def check_cube_size(harvested: int, patch: int, shift: int, role: str) -> None:
    """HarvestError unless cubes of ``harvested`` voxels hold every input of ``patch`` voxels
    shifted by up to ``shift`` (training) and centred (validation, export's scoring);
    ``role`` names the harvest in the message ("training", "validation")."""
    if patch < 1 or shift < 0:
        raise HarvestError(f"patch must be positive and shift not negative, got {patch}, {shift}")
    need = patch + 2 * shift
    if harvested < need:
        raise HarvestError(
            f"{role} harvest cut cubes of {harvested} voxels, but an input of {patch} shifted "
            f"by up to {shift} needs {need}: harvest with --cube-size {need} or more"
        )


def positive_draw(
    pool: Pool, pos: npt.NDArray[np.intp], config: ClassifierConfig
) -> tuple[npt.NDArray[np.float64] | None, int | None]:
    """(probability of drawing each of ``pos``, how many are small CMBs).

    The probability is None (every positive alike, the draw of every run before the
    option) unless ``config.small_weight`` asks for small positives more often; the
    count is None when the harvest does not record sizes.
    """
    if not config.small_weight > 0:
        raise HarvestError(f"small_weight must be positive, got {config.small_weight}")
    sizes = pool.truth_diameter_mm
    if sizes is None:
        if config.small_weight != 1.0:
            raise HarvestError(
                f"the harvest of {config.train} does not record the CMBs' sizes (harvested "
                "before they were): harvest it again to weight the small ones"
            )
        return None, None
    small = sizes[pos] < config.small_below_mm  # NaN (no size) is not small
    if config.small_weight == 1.0:
        return None, int(small.sum())
    weight = np.where(small, config.small_weight, 1.0)
    return weight / weight.sum(), int(small.sum())


def train(config: ClassifierConfig, out: Path, *, device: str = "cpu") -> dict[str, Any]:
    """Train on ``config.train``, validate each epoch on ``config.val``; write ``out``.

    ``device``: torch device of the network (``cuda`` on a GPU machine); the cubes
    are augmented on the CPU either way and the checkpoints hold CPU tensors.
    """
    out.mkdir(parents=True, exist_ok=True)
    tr = Pool.load(config.train).select_channels(config.channels)
    val = Pool.load(config.val).select_channels(config.channels)
    if (tr.spacing_mm, tr.unet_spacing_mm) != (val.spacing_mm, val.unet_spacing_mm):
        raise HarvestError(
            f"the training harvest was made on {tr.spacing_mm} (cubes) and "
            f"{tr.unet_spacing_mm} (U-Net), the validation harvest on {val.spacing_mm} and "
            f"{val.unet_spacing_mm}: harvest both on the same grids"
        )
    if tr.channel_filters != val.channel_filters:
        raise HarvestError(
            f"the training harvest's cubes were cut with input filters {tr.channel_filters} "
            f"(one per channel), the validation harvest's with {val.channel_filters}: harvest "
            "both with one --cube-filter and the same --extra-channel"
        )
    for pool, role in ((tr, "training"), (val, "validation")):
        check_cube_size(pool.cube_size, config.patch, config.shift, role)
    # unet_spacing_mm stays None where the U-Net ran on the cubes' grid
    other_grid = tr.unet_spacing_mm is not None and tr.unet_spacing_mm != tr.spacing_mm
    config = replace(
        config,
        spacing_mm=list(tr.spacing_mm) if tr.spacing_mm else None,
        unet_spacing_mm=list(tr.unet_spacing_mm) if other_grid and tr.unet_spacing_mm else None,
        input_filter=tr.input_filter,
        extra_channels=list(tr.extra_channels),
    )
    (out / "config.json").write_text(json.dumps(asdict(config), indent=1))
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    # Positives are the U-Net's true candidates; with ``train_on_missed`` also the true CMBs
    # it missed (cubes centred on the truth).  Those are mostly sub-voxel spots that look
    # like background after resampling: off by default, they made the first runs learn
    # nothing (loss 0.63 after 20k samples; harvested missed CMBs are darker than the
    # harvested false positives by only 0.79 vs 0.92 z-units at the centre).
    pos = np.flatnonzero((tr.label == 1) & (tr.is_candidate | config.train_on_missed))
    neg = np.flatnonzero((tr.label == 0) & (tr.unet_probability >= config.candidate_threshold))
    if pos.size == 0 or neg.size == 0:
        raise HarvestError(
            f"the harvest of {config.train} has {pos.size} microbleed and {neg.size} "
            f"non-microbleed candidates (U-Net >= {config.candidate_threshold}); both are needed"
        )
    pos_p, n_small = positive_draw(tr, pos, config)
    counts = {
        "train_positives": int(pos.size),
        "train_small_positives": n_small,  # under small_below_mm (None: sizes not recorded)
        "train_negatives": int(neg.size),
    }
    log.info("train: %d cases, %s; val: %d cases", len(tr.case_ids), counts, len(val.case_ids))
    net = CandidateClassifier(config.features, config.dropout, config.input_channels).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * config.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=total, pct_start=config.warmup
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    # the baseline on the same candidates: the U-Net's own maximum as the score
    rows = val.candidate_rows(config.candidate_threshold)
    recall, fps, threshold = recall_at_fp(
        val.unet_probability[rows],
        val.label[rows],
        int(val.n_truth.sum()),
        len(val.case_ids),
        config.max_fp_per_scan,
    )
    unet_alone = {"recall": recall, "fp_per_scan": fps, "threshold": threshold}
    log.info("val, U-Net alone on the same candidates: %s", unet_alone)
    best: dict[str, Any] = {"recall": -1.0}
    start = time.monotonic()
    with (out / "log.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["epoch", "loss", "recall", "fp_per_scan", "threshold", "recall_ceiling", "seconds"]
        )
        for epoch in range(1, config.epochs + 1):
            net.train()
            losses = []
            half = config.batch_size // 2
            for _ in range(config.steps_per_epoch):
                idx = np.concatenate([rng.choice(pos, half, p=pos_p), rng.choice(neg, half)])
                x = augment(tr.patches[idx], rng, config.patch, config.shift)
                y = torch.from_numpy(tr.label[idx].astype(np.float32)).to(device)
                logits = net(torch.from_numpy(x).to(device)).reshape(-1)
                loss = loss_fn(logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
            metrics = evaluate(net, val, config)
            seconds = round(time.monotonic() - start, 1)
            writer.writerow(
                [
                    epoch,
                    round(float(np.mean(losses)), 5),
                    *(round(metrics[k], 5) for k in ("recall", "fp_per_scan", "threshold")),
                    round(metrics["ceiling"], 5),
                    seconds,
                ]
            )
            f.flush()
            log.info("epoch %d loss %.4f val %s (%.0f s)", epoch, np.mean(losses), metrics, seconds)
            state = {
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "config": asdict(config),
                "epoch": epoch,
                "threshold": metrics["threshold"],
                "training_wall_s": seconds,
            }
            # last.pt too: on a small selection set one CMB moves recall by a few per cent,
            # so the last epoch is worth comparing (`cmb classifier compare`) with the best
            torch.save(state, out / "last.pt")
            if config.keep_every and epoch % config.keep_every == 0:
                torch.save(state, out / f"epoch_{epoch:03d}.pt")
            if metrics["recall"] > best["recall"]:
                best = {**metrics, "epoch": epoch}
                torch.save(state, out / "best.pt")
    best["unet_alone"] = unet_alone
    best["training_wall_s"] = round(time.monotonic() - start, 1)
    best["train_cases"] = len(tr.case_ids)
    best["val_cases"] = len(val.case_ids)
    best.update(counts)
    (out / "best.json").write_text(json.dumps(best, indent=1))
    return best


def load_checkpoint(
    path: str | Path,
) -> tuple[CandidateClassifier, ClassifierConfig, dict[str, Any]]:
    """(network in eval mode, its config, the whole checkpoint) of a ``best.pt``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = ClassifierConfig(**state["config"])
    net = CandidateClassifier(config.features, config.dropout, config.input_channels)
    net.load_state_dict(state["state_dict"])
    return net.eval(), config, state
