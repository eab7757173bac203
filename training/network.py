"""The segmentation network: MONAI's BasicUNet, small enough for a 2-core CPU.

Microbleeds are a few voxels wide at the model spacing, so the network keeps a
full-resolution first level (no stem stride) and four poolings, which gives a
receptive field of about 60 voxels: enough context to tell a round
hypointensity from a vein that runs through the slab.  The output is one
channel of logits (CMB vs background); the exported ONNX graph appends the
sigmoid (``cmb.output = "sigmoid"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.nets import BasicUNet

from training.errors import TrainingInputError

#: BasicUNet pools four times: input spatial sizes must be multiples of this.
SIZE_DIVISOR = 16


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of the network (saved with every run and checkpoint)."""

    architecture: str = "basicunet"
    features: tuple[int, ...] = (8, 16, 32, 64, 128, 8)
    dropout: float = 0.0
    norm: str = "instance"

    def __post_init__(self) -> None:
        if self.architecture != "basicunet":
            raise TrainingInputError(
                f"unknown architecture {self.architecture!r} (known: basicunet)"
            )
        if len(self.features) != 6 or any(int(f) <= 0 for f in self.features):
            raise TrainingInputError(f"features must be 6 positive integers, got {self.features}")
        if not 0.0 <= self.dropout < 1.0:
            raise TrainingInputError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm not in ("instance", "batch"):
            raise TrainingInputError(f"norm must be 'instance' or 'batch', got {self.norm!r}")


def build_network(config: NetworkConfig | None = None) -> torch.nn.Module:
    """A fresh, randomly initialised network that outputs one channel of logits."""
    cfg = config or NetworkConfig()
    norm: tuple[str, dict[str, bool]] = (
        ("instance", {"affine": True}) if cfg.norm == "instance" else ("batch", {"affine": True})
    )
    return BasicUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        features=tuple(int(f) for f in cfg.features),
        norm=norm,
        dropout=cfg.dropout,
    )


class ProbabilityHead(torch.nn.Module):
    """Wraps a logits network so that its output is a probability (used for export)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(image))


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def check_patch_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    """Validate a patch size (3 ints, multiples of SIZE_DIVISOR) and return it as a tuple."""
    ps = tuple(int(p) for p in patch_size)
    if len(ps) != 3 or any(p <= 0 or p % SIZE_DIVISOR for p in ps):
        raise TrainingInputError(
            f"patch_size must be 3 positive multiples of {SIZE_DIVISOR}, got {list(patch_size)}"
        )
    return (ps[0], ps[1], ps[2])


__all__ = [
    "SIZE_DIVISOR",
    "NetworkConfig",
    "ProbabilityHead",
    "build_network",
    "check_patch_size",
    "count_parameters",
]
