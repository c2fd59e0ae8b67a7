#!/usr/bin/env python3
"""How far wrn's ImageNet val crops are from torchvision's, for `make bench-peers`.

    python3 benches/peers/val_difference.py --images DIR --crops DIR

DIR holds JPEGs in ImageFolder layout; --crops holds what `wrn bench resampling --images DIR --write-val`
wrote: val-torch.f32 and val-fast.f32, 224x224x3 little-endian f32 (HWC, 0-255) per image in the folder's
order (classes sorted, files sorted, as ImageFolder orders them). torchvision's crop is the one its
published accuracies are measured with: PIL decode, Resize(256) (bilinear, antialiased), CenterCrop(224).
Prints one JSON line: the mean absolute difference, on the 0-255 scale, of each of wrn's resamplings from
torchvision's, averaged over the images, and the worst image's. The difference is the resize algorithm's
(and the JPEG decoders'), not a bug: fb.resnet.torch, which the paper used, resized with Torch's bicubic.
"""
import argparse
import json
import os

import numpy as np
from PIL import Image
from torchvision import datasets, transforms


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", required=True)
    parser.add_argument("--crops", required=True)
    args = parser.parse_args()
    folder = datasets.ImageFolder(args.images)
    crop = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    ours = {}
    for name in ["torch", "fast"]:
        values = np.fromfile(os.path.join(args.crops, f"val-{name}.f32"), dtype="<f4")
        ours[name] = values.reshape(-1, 224, 224, 3)
        assert len(ours[name]) == len(folder.samples), (name, len(ours[name]), len(folder.samples))
    diffs = {name: [] for name in ours}
    for i, (path, _) in enumerate(folder.samples):
        with Image.open(path) as img:
            theirs = np.asarray(crop(img.convert("RGB")), dtype=np.float32)
        for name, crops in ours.items():
            diffs[name].append(float(np.abs(crops[i] - theirs).mean()))
    result = {"images": len(folder.samples)}
    for name, d in diffs.items():
        result[f"{name}_mean_abs_difference"] = round(sum(d) / len(d), 3)
        result[f"{name}_worst_image"] = round(max(d), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
