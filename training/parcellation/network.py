"""The parcellation network: a small MONAI BasicUNet with one output channel per label."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets import BasicUNet

from model.location.labels import LABEL_IDS


@dataclass(frozen=True)
class ParcNetConfig:
    features: tuple[int, ...] = (8, 16, 32, 64, 128, 8)
    n_labels: int = len(LABEL_IDS)

    def __post_init__(self) -> None:
        if len(self.features) != 6 or any(int(f) <= 0 for f in self.features):
            raise ValueError(f"features must be 6 positive integers, got {self.features}")


def build_parcellation_network(config: ParcNetConfig | None = None) -> torch.nn.Module:
    cfg = config or ParcNetConfig()
    return BasicUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=cfg.n_labels,
        features=tuple(int(f) for f in cfg.features),
        norm=("instance", {"affine": True}),
    )


class SoftmaxHead(torch.nn.Module):
    """Wraps the logits network so that the exported graph outputs probabilities."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(image), dim=1)
