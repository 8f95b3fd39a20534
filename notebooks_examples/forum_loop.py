"""The forum's two-output training loop, with the two lines that attach lossdiag.Monitor (marked below).

A regression head on an intermediate layer (targets in the hundreds) and a classifier on the last layer,
trained on alpha * loss_1 + (1 - alpha) * loss_2 with the usual first guess, alpha = 0.4.
Run: python notebooks_examples/forum_loop.py   (a few seconds on a CPU; writes ./lossdiag-run/)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lossdiag


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(20, 64), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.out1 = nn.Linear(64, 1)  # output 1, on the intermediate layer: regression
        self.layer3 = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.out2 = nn.Linear(64, 5)  # output 2, on the last layer: classification

    def forward(self, x):
        h = self.layer2(self.layer1(x))
        return self.out1(h).squeeze(-1), self.out2(self.layer3(h))


torch.manual_seed(0)
x = torch.randn(4096, 20)
y1 = 300.0 * torch.tanh(x @ torch.randn(20) / 4)
y2 = (x @ torch.randn(20, 5)).argmax(1)
loader = DataLoader(TensorDataset(x, y1, y2), batch_size=64, shuffle=True)

model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
alpha = 0.4

monitor = lossdiag.Monitor(model, out="lossdiag-run")  # lossdiag, line 1 of 2
for epoch in range(5):
    for inputs, target_1, target_2 in loader:
        out1, out2 = model(inputs)
        loss_1 = F.mse_loss(out1, target_1)
        loss_2 = F.cross_entropy(out2, target_2)
        # lossdiag, line 2 of 2, instead of: loss = alpha * loss_1 + (1 - alpha) * loss_2
        loss = monitor.combine({"loss_1": loss_1, "loss_2": loss_2}, weights={"loss_1": alpha, "loss_2": 1 - alpha})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
summary = monitor.close()  # summary.json, report.html and the PNGs in ./lossdiag-run/

print(summary["verdict"])
print("report: lossdiag-run/report.html")
