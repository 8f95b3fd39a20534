"""The forum's two-output loop under torchrun with DistributedDataParallel, with lossdiag.Monitor attached.

Each rank trains on its share of every global batch (DistributedSampler); on a recorded step the monitor averages
each term's gradient over the ranks before it takes norms and shares, so rank 0's report describes the global
batch, as one process training on it would. Rank 0 writes the report; the other ranks write nothing.

Run (CPU, gloo):  torchrun --nproc_per_node 2 notebooks_examples/ddp_loop.py [--every 100] [--out lossdiag-ddp]
On GPUs, the same command with --nproc_per_node <GPUs> uses NCCL and one GPU per rank.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import lossdiag

BATCH_PER_RANK = 32
ALPHA = 0.4


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(20, 64), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.out1 = nn.Linear(64, 1)  # output 1, on the intermediate layer: regression
        self.layer3 = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.out2 = nn.Linear(64, 5)  # output 2, on the last layer: classification

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.layer2(self.layer1(x))
        return self.out1(h).squeeze(-1), self.out2(self.layer3(h))


def dataset() -> TensorDataset:
    """The same 2048 samples on every rank (the sampler gives each rank its share)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 20, generator=g)
    y1 = 300.0 * torch.tanh(x @ torch.randn(20, generator=g) / 4)
    y2 = (x @ torch.randn(20, 5, generator=g)).argmax(1)
    return TensorDataset(x, y1, y2)


def loader(data: TensorDataset, rank: int, world: int, epoch: int) -> DataLoader:
    """Rank `rank`'s batches for one epoch: its share of each global batch of world * BATCH_PER_RANK samples."""
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0, drop_last=True)
    sampler.set_epoch(epoch)
    return DataLoader(data, batch_size=BATCH_PER_RANK, sampler=sampler, drop_last=True)


def terms(model: nn.Module, inputs: torch.Tensor, target_1: torch.Tensor, target_2: torch.Tensor
          ) -> dict[str, torch.Tensor]:
    out1, out2 = model(inputs)
    return {"loss_1": F.mse_loss(out1, target_1), "loss_2": F.cross_entropy(out2, target_2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="lossdiag-ddp")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-monitor", action="store_true", help="the same loop without lossdiag")
    parser.add_argument("--save", help="write each rank's final parameters to SAVE.rank<r>.pt (for comparisons)")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")

    torch.manual_seed(0)
    model = Net().to(device)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights = {"loss_1": ALPHA, "loss_2": 1 - ALPHA}
    data = dataset()

    monitor = None if args.no_monitor else lossdiag.Monitor(ddp, out=args.out, every=args.every)  # lossdiag, 1 of 2
    for epoch in range(args.epochs):
        for batch in loader(data, rank, world, epoch):
            values = terms(ddp, *(t.to(device) for t in batch))
            if monitor is None:
                loss = ALPHA * values["loss_1"] + (1 - ALPHA) * values["loss_2"]
            else:
                loss = monitor.combine(values, weights=weights)  # lossdiag, 2 of 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    summary = None if monitor is None else monitor.close()  # a collective: every rank calls it; rank 0 writes

    if args.save:
        torch.save([p.detach().cpu() for p in model.parameters()], f"{args.save}.rank{rank}.pt")
    if summary is not None:
        print(summary["verdict"])
        print(f"shares: {summary['dominance']}; report: {args.out}/report.html")
    dist.destroy_process_group()


def leave() -> None:
    """End this rank without Python's interpreter teardown, which can abort it.

    DistributedDataParallel keeps gloo's process group, and its worker threads, alive after
    destroy_process_group (torch 2.13). A worker that drops the last reference to a tensor Python created takes
    the GIL; while Python finalizes, that thread is ended by pthread_exit inside a C++ frame that cannot unwind,
    and the rank dies by SIGABRT ("terminate called without an active exception"), more often on a loaded
    machine. Everything the rank writes is closed by now; its output is flushed first.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
    leave()
