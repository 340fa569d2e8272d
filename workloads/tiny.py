"""A few-thousand-parameter CNN: 3×32×32 in, 10 logits out, fast enough for every test."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TinyCNN(nn.Module):
    """conv 3→16, relu, conv 16→32 stride 2, relu, global avg pool, linear 32→10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny() -> TinyCNN:
    """The `tiny` workload's module (5,418 parameters)."""
    return TinyCNN()
