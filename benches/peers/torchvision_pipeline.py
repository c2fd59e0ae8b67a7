#!/usr/bin/env python3
"""torchvision's input pipelines on the same files as `wrn bench pipeline`, for `make bench-peers`.

    python3 benches/peers/torchvision_pipeline.py --cifar cifar-10-binary.tar.gz [--workers 2] [--batch 128]
    python3 benches/peers/torchvision_pipeline.py --images DIR [--workers 2] [--batch 128]

CIFAR: the binary archive's training records as torchvision.datasets.CIFAR10 holds them (uint8 HWC arrays
made PIL images per sample), through RandomCrop(32, padding=4, padding_mode="reflect"),
RandomHorizontalFlip, ToTensor and Normalize with the paper's mean/std. ImageNet: ImageFolder over DIR
through RandomResizedCrop(224), RandomHorizontalFlip, ToTensor and Normalize (torchvision's reference
recipe; wrn's imagenet-train also applies colour jitter and lighting noise, so it does more work).
Both through a DataLoader with shuffling and persistent worker processes. The first epoch starts the
workers and is not timed; the figure is the best of the timed epochs. Prints one JSON line:
{"pipeline", "images", "batch", "workers", "epochs", "images_per_second"}.
"""
import argparse
import json
import tarfile
import time

import numpy as np
import torch
from PIL import Image
from torchvision import datasets, transforms

CIFAR_MEAN = [125.3 / 255, 123.0 / 255, 113.9 / 255]
CIFAR_STD = [63.0 / 255, 62.1 / 255, 66.7 / 255]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class CifarArrays(torch.utils.data.Dataset):
    """The training records of a CIFAR-10 binary archive, sample by sample as torchvision's CIFAR10."""

    def __init__(self, archive, transform):
        records = []
        with tarfile.open(archive) as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if member.isfile() and "data_batch_" in member.name:
                    raw = np.frombuffer(tar.extractfile(member).read(), dtype=np.uint8)
                    records.append(raw.reshape(-1, 3073))
        if not records:
            raise SystemExit(f"torchvision_pipeline.py: no data_batch_*.bin in {archive}")
        rows = np.concatenate(records)
        self.labels = rows[:, 0].astype(np.int64).tolist()
        self.images = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--cifar")
    source.add_argument("--images")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs, after one untimed")
    a = p.parse_args()
    torch.manual_seed(0)
    if a.cifar:
        name = "cifar-train"
        ds = CifarArrays(a.cifar, transforms.Compose([
            transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]))
    else:
        name = "imagenet-train"
        ds = datasets.ImageFolder(a.images, transforms.Compose([
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]))
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                         persistent_workers=a.workers > 0)
    best = 0.0
    for epoch in range(a.epochs + 1):
        start = time.perf_counter()
        n = 0
        for x, _ in loader:
            n += x.shape[0]
        if epoch > 0:
            best = max(best, n / (time.perf_counter() - start))
    print(json.dumps({"pipeline": name, "images": len(ds), "batch": a.batch, "workers": a.workers,
                      "epochs": a.epochs, "images_per_second": best}))


if __name__ == "__main__":
    main()
