#!/usr/bin/env python3
"""PyTorch eager's training throughput for the same WRN and step as `wrn bench train`, on the CPU.

    python3 benches/peers/pytorch_train_step.py --arch wrn-16-4 --batch 64 --steps 5 --threads 2

Prints one JSON line: {"arch", "batch", "threads", "images_per_second"}. The network is the official
PyTorch port's WRN (pre-activation B(3,3), 1×1 shortcut on the pre-activated input) built from nn modules;
the step is forward, cross-entropy, backward and torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True,
weight_decay=5e-4), on one random batch, after one warm-up step.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.bn0, self.conv0 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1, self.conv1 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.convdim = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if c_in != c_out else None

    def forward(self, x):
        o = F.relu(self.bn0(x))
        y = self.conv1(F.relu(self.bn1(self.conv0(o))))
        return y + (self.convdim(o) if self.convdim is not None else x)


class WRN(nn.Module):
    def __init__(self, depth, k, classes=10):
        super().__init__()
        n = (depth - 4) // 6
        layers, c = [nn.Conv2d(3, 16, 3, 1, 1, bias=False)], 16
        for g, w in enumerate([16 * k, 32 * k, 64 * k]):
            for b in range(n):
                layers.append(Block(c, w, 2 if g > 0 and b == 0 else 1))
                c = w
        self.body, self.bn, self.fc = nn.Sequential(*layers), nn.BatchNorm2d(c), nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(self.body(x))), 1).flatten(1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="wrn-16-4")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    _, depth, k = a.arch.split("-")
    net = WRN(int(depth), int(k))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.randn(a.batch, 3, 32, 32), torch.randint(0, 10, (a.batch,))

    def step():
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    seconds = time.perf_counter() - start
    print(json.dumps({"arch": a.arch, "batch": a.batch, "threads": a.threads,
                      "images_per_second": a.batch * a.steps / seconds}))


if __name__ == "__main__":
    main()
