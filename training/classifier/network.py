"""The candidate classifier network: a small 3D CNN on a cube around a candidate.

Written with plain ``torch.nn`` because it is ten layers: MONAI's
``Classifier`` ends in a fully connected layer over a fixed input size, while
this one ends in global average pooling and a 1x1x1 convolution, so the ONNX
graph has the ``[N, 1, 1, 1, 1]`` output the runtime's 5D contract expects
and accepts any cube size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class CandidateClassifier(nn.Module):
    """``[N, C, D, H, W]`` cube -> ``[N, 1, 1, 1, 1]`` logit (microbleed vs not).

    ``in_channels``: the cube as prepared and, beside it, the same cube under each of the
    classifier's extra input filters (``cmb.extra_channels``).
    """

    def __init__(
        self, features: Sequence[int] = (16, 32, 64), dropout: float = 0.3, in_channels: int = 1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for n, cout in enumerate(features):
            layers.append(_block(cin, cout))
            if n < len(features) - 1:
                layers.append(nn.MaxPool3d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Conv3d(cin, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.features(image))))
