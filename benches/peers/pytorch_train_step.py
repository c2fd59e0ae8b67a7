#!/usr/bin/env python3
"""PyTorch eager's training throughput for the same network and step as `wrn bench train`, on the CPU or
on a CUDA GPU.

    python3 benches/peers/pytorch_train_step.py --arch wrn-16-4 --batch 64 --steps 5 --threads 2
    python3 benches/peers/pytorch_train_step.py --device cuda --arch wrn-28-10 --batch 128 \
        --precision bf16 --channels-last --warmup 5 --steps 40
    python3 benches/peers/pytorch_train_step.py --device cuda --arch resnet-50-w2 --batch 64 \
        --precision bf16 --channels-last
    python3 benches/peers/pytorch_train_step.py --device cuda --arch wrn-28-10 --batch 128 \
        --precision bf16 --channels-last --compile max-autotune-no-cudagraphs

Prints one JSON line: {"arch", "batch", "threads", "images_per_second", ...} (the first four are what
benches/peers/compare.sh reads; the others say what was measured: device, precision, channels_last,
warm-up and timed steps, parameters, the last loss and, on CUDA, torch.cuda.max_memory_allocated() and the
device memory in use as the driver reports it).

The CIFAR networks (`wrn-D-K`) are the official PyTorch port's WRN (pre-activation B(3,3), 1×1 shortcut
on the pre-activated input) built from nn modules; `resnet-50-w2` (also `wrn-50-2`) is torchvision's
`wide_resnet50_2`, the paper's WRN-50-2-bottleneck, on 224×224 inputs. The step is forward,
cross-entropy, backward and torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
default foreach) on one random batch, after --warmup untimed steps. On CUDA, cuDNN benchmark mode is on,
bf16 is torch.autocast(device_type='cuda', dtype=torch.bfloat16) over the forward pass and the loss
(the weights stay float32), and torch.cuda.synchronize() brackets the timed loop only.

--compile MODE runs the network through torch.compile (Inductor) with that mode (`default`,
`max-autotune-no-cudagraphs`, `reduce-overhead`, `max-autotune`); the compilation happens in the warm-up
steps (at least 3 then), whose time is reported as warmup_seconds, and the optimiser stays eager. --optimizer
picks torch.optim.SGD's implementation: foreach (PyTorch's default), fused or for-loop.
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


IMAGENET_ARCHS = ("resnet-50-w2", "wrn-50-2")


def build(arch, classes):
    """The network and its input side (32 for the CIFAR WRNs, 224 for WRN-50-2)."""
    if arch in IMAGENET_ARCHS:
        import torchvision

        return torchvision.models.wide_resnet50_2(weights=None, num_classes=classes or 1000), 224
    parts = arch.split("-")
    if len(parts) != 3 or parts[0] != "wrn":
        raise SystemExit(f"--arch {arch}: expected wrn-DEPTH-K or resnet-50-w2")
    return WRN(int(parts[1]), int(parts[2]), classes or 10), 32


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="wrn-16-4", help="wrn-DEPTH-K, or resnet-50-w2 (torchvision's wide_resnet50_2)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 on the CPU, 5 on CUDA)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--channels-last", action="store_true", help="channels_last weights and input")
    p.add_argument("--classes", type=int, default=None, help="default: 10 (CIFAR WRNs), 1000 (resnet-50-w2)")
    p.add_argument("--compile", default="none",
                   choices=["none", "default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune"],
                   help="torch.compile the network with this mode (none: eager)")
    p.add_argument("--optimizer", choices=["foreach", "fused", "for-loop"], default="foreach",
                   help="torch.optim.SGD's implementation")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch.cuda.is_available() is False")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    warmup = a.warmup if a.warmup is not None else (5 if cuda else 1)
    if a.compile != "none":
        warmup = max(warmup, 3)

    torch.manual_seed(0)
    net, side = build(a.arch, a.classes)
    classes = net.fc.out_features
    parameters = sum(t.numel() for t in net.parameters())
    net = net.to(device)
    memory_format = torch.channels_last if a.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    net.train()
    impl = {"foreach": {"foreach": True}, "fused": {"fused": True}, "for-loop": {"foreach": False}}[a.optimizer]
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, **impl)
    model = net if a.compile == "none" else torch.compile(net, mode=a.compile)
    x = torch.randn(a.batch, 3, side, side, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, classes, (a.batch,), device=device)
    bf16 = a.precision == "bf16"

    def step():
        opt.zero_grad()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    warm = time.perf_counter()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    warmup_seconds = time.perf_counter() - warm
    start = time.perf_counter()
    loss = None
    for _ in range(a.steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    out = {
        "arch": a.arch,
        "batch": a.batch,
        "threads": a.threads,
        "images_per_second": a.batch * a.steps / max(seconds, 1e-9),
        "device": str(device),
        "precision": a.precision,
        "channels_last": a.channels_last,
        "input_side": side,
        "classes": classes,
        "compile": a.compile,
        "optimizer": a.optimizer,
        "warmup_steps": warmup,
        "warmup_seconds": warmup_seconds,
        "steps": a.steps,
        "seconds": seconds,
        "parameters": parameters,
        "loss": float(loss.detach()) if loss is not None else None,
        "torch": torch.__version__,
    }
    if cuda:
        free, total = torch.cuda.mem_get_info(device)
        out.update({
            "gpu": torch.cuda.get_device_name(device),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_convolutions": torch.backends.cudnn.allow_tf32,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_version": torch.backends.cudnn.version(),
            "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "max_memory_reserved_bytes": torch.cuda.max_memory_reserved(device),
            "device_memory_in_use_bytes": total - free,
        })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
