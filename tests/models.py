"""Small real models shared by the tests: deep supervision, three heads, weight tying, a detached term; ARCHITECTURES
lists them for the properties every architecture must have (conftest's `architecture` fixture)."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class DeepSupervision(nn.Module):
    """An intermediate output (head_1 after block_1) and a final one (head_2 after block_2)."""

    def __init__(self) -> None:
        super().__init__()
        self.block_1 = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.block_2 = nn.Sequential(nn.Linear(16, 16), nn.Tanh())
        self.head_1 = nn.Linear(16, 3)
        self.head_2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.block_1(x)
        return self.head_1(h), self.head_2(self.block_2(h)).squeeze(-1)


def deep_supervision_terms(model: DeepSupervision, batch) -> dict[str, torch.Tensor]:
    x, labels, target = batch
    logits, value = model(x)
    return {"classification": F.cross_entropy(logits, labels), "regression": F.mse_loss(value, 30.0 * target)}


def deep_supervision_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 6, generator=g)
    return x, torch.randint(0, 3, (20,), generator=g), torch.randn(20, generator=g)


class TiedThreeHeads(nn.Module):
    """A trunk whose first layer is applied twice (a parameter used twice) and three heads."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(5, 5)
        self.trunk = nn.Linear(5, 12)
        self.heads = nn.ModuleList([nn.Linear(12, 1) for _ in range(3)])
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = torch.relu(self.trunk(torch.tanh(self.stem(torch.tanh(self.stem(x))))))
        return [head(h).squeeze(-1) for head in self.heads]


def tied_terms(model: TiedThreeHeads, batch) -> dict[str, torch.Tensor]:
    x, y = batch
    outs = model(x)
    return {"a": F.mse_loss(outs[0], y), "b": (outs[1] - 2 * y).abs().mean(), "c": outs[2].pow(2).mean()}


def tied_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 5, generator=g), torch.randn(16, generator=g)


class Architecture(NamedTuple):
    """A model class, its terms on a batch and a seeded batch: one case of a property checked on every model."""

    name: str
    build: Callable[[], nn.Module]
    terms: Callable[[nn.Module, Any], dict[str, torch.Tensor]]
    batch: Callable[..., Any]


ARCHITECTURES = [Architecture("deep-supervision", DeepSupervision, deep_supervision_terms, deep_supervision_batch),
                 Architecture("tied-three-heads", TiedThreeHeads, tied_terms, tied_batch)]
