"""Benchmark problems: small multi-term models with deterministic data."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Batch = dict[str, Tensor]
LossesFn = Callable[[nn.Module, Batch], dict[str, Tensor]]


@dataclass
class Problem:
    """A model, a batch source (`make_batch(step)`, same batch for the same step), its loss terms,
    and the name of the submodule whose output every term depends on."""

    name: str
    model: nn.Module
    make_batch: Callable[[int], Batch]
    losses: LossesFn
    representation: str

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the shared representation module, the ones every term reaches."""
        return list(self.model.get_submodule(self.representation).parameters())


def _mlp_block(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU(), nn.Linear(n_out, n_out), nn.ReLU())


class TwoOutputMLP(nn.Module):
    """4-layer ReLU MLP (width 512 unless told): a classifier on the layer-2 output, a regressor on the layer-4
    output."""

    def __init__(self, width: int = 512) -> None:
        super().__init__()
        self.trunk = _mlp_block(64, width)  # layers 1-2, shared by both terms
        self.upper = _mlp_block(width, width)  # layers 3-4, regression only
        self.classifier = nn.Linear(width, 10)
        self.regressor = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.classifier(h), self.regressor(self.upper(h)).squeeze(-1)


def _mlp_losses(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    logits, pred = model(batch["x"])
    return {
        "classification": F.cross_entropy(logits, batch["label"]),
        "regression": F.mse_loss(pred, batch["target"]),
    }


def mlp_problem(seed: int = 0, width: int = 512) -> Problem:
    """Problem A: batch 256, K=2 terms {classification, regression}; regression targets ~20x; `width` units a
    layer (named mlp128 etc. when not 512)."""
    torch.manual_seed(seed)
    model = TwoOutputMLP(width)
    g = torch.Generator().manual_seed(seed + 1)
    w_cls = torch.randn(64, 10, generator=g)
    w_reg = torch.randn(64, generator=g) / 8.0

    def make_batch(step: int) -> Batch:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(256, 64, generator=gen)
        return {"x": x, "label": (x @ w_cls).argmax(-1), "target": 20.0 * torch.tanh(x @ w_reg)}

    return Problem("mlp" if width == 512 else f"mlp{width}", model, make_batch, _mlp_losses, "trunk")


class ThreeHeadConvNet(nn.Module):
    """3-layer conv trunk on 3x32x32 images; classification, regression, reconstruction heads."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
        )  # -> 64x8x8
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
        self.regressor = nn.Sequential(nn.Flatten(), nn.Linear(64 * 8 * 8, 4))
        self.decoder = nn.Sequential(nn.Conv2d(64, 3 * 16, 1), nn.PixelShuffle(4))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.trunk(x)
        return self.classifier(h), self.regressor(h), self.decoder(h)


def _convnet_losses(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    logits, pred, recon = model(batch["x"])
    return {
        "classification": F.cross_entropy(logits, batch["label"]),
        "regression": F.mse_loss(pred, batch["target"]),
        "reconstruction": F.mse_loss(recon, batch["x"]),
    }


def convnet_problem(seed: int = 0) -> Problem:
    """Problem B: batch 64, K=3 terms {classification, regression, reconstruction} on one trunk."""
    torch.manual_seed(seed)
    model = ThreeHeadConvNet()
    g = torch.Generator().manual_seed(seed + 1)
    w_cls = torch.randn(3 * 8 * 8, 10, generator=g)
    w_reg = torch.randn(3 * 8 * 8, 4, generator=g) / 8.0

    def make_batch(step: int) -> Batch:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(64, 3, 32, 32, generator=gen)
        pooled = F.avg_pool2d(x, 4).flatten(1)  # 64 x 192 summary the teachers read
        target = 5.0 * torch.tanh(pooled @ w_reg)
        return {"x": x, "label": (pooled @ w_cls).argmax(-1), "target": target}

    return Problem("convnet", model, make_batch, _convnet_losses, "trunk")
