#!/usr/bin/env python3
"""An ImageNet-shaped folder of real photographs for the pipeline comparison of `make bench-peers`.

    python3 benches/peers/photos.py --wheels DIR --out DIR [--n 1000] [--classes 10] [--seed 0]

The photographs are the colour pictures shipped inside the scikit-image and matplotlib wheels on PyPI
(`skimage/data/*.png|jpg`, `mpl-data/sample_data/grace_hopper.jpg`), read straight from the wheel files in
--wheels (`pip download --no-deps scikit-image matplotlib`). Each output image is a random crop (30-100 %
of the area, aspect 3/4-4/3) of one photograph, scaled so that its longer side is 350-500 pixels (the
typical ImageNet training image is about 400x350), saved as a baseline RGB JPEG of quality 90 under
`<out>/<class>/<k>.JPEG`: torchvision's ImageFolder layout, which `wrn bench pipeline --images` reads too.
Deterministic for a seed. Needs Pillow.
"""
import argparse
import glob
import io
import os
import random
import zipfile

from PIL import Image

# Colour photographs (not the synthetic, grayscale or tiny pictures of the same folders).
PHOTOS = {
    "skimage/data/astronaut.png",
    "skimage/data/chelsea.png",
    "skimage/data/coffee.png",
    "skimage/data/hubble_deep_field.jpg",
    "skimage/data/ihc.png",
    "skimage/data/motorcycle_left.png",
    "skimage/data/motorcycle_right.png",
    "skimage/data/retina.jpg",
    "skimage/data/rocket.jpg",
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
}


def photographs(wheels):
    found = {}
    for wheel in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name in PHOTOS:
                    found[name] = Image.open(io.BytesIO(z.read(name))).convert("RGB")
    missing = PHOTOS - found.keys()
    if missing:
        raise SystemExit(f"photos.py: {wheels} lacks {sorted(missing)} (pip download --no-deps scikit-image matplotlib)")
    return [found[k] for k in sorted(found)]


def crop(photo, rng):
    w, h = photo.size
    for _ in range(10):
        area = rng.uniform(0.3, 1.0) * w * h
        aspect = rng.uniform(3 / 4, 4 / 3)
        cw, ch = round((area * aspect) ** 0.5), round((area / aspect) ** 0.5)
        if cw <= w and ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return photo.crop((x, y, x + cw, y + ch))
    return photo


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wheels", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    photos = photographs(a.wheels)
    rng = random.Random(a.seed)
    sizes = []
    for k in range(a.n):
        image = crop(photos[k % len(photos)], rng)
        side = rng.randint(350, 500)
        scale = side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
        folder = os.path.join(a.out, f"class{k % a.classes:03d}")
        os.makedirs(folder, exist_ok=True)
        image.save(os.path.join(folder, f"{k:06d}.JPEG"), "JPEG", quality=90)
        sizes.append(image.size)
    mean_w = sum(w for w, _ in sizes) / len(sizes)
    mean_h = sum(h for _, h in sizes) / len(sizes)
    print(f"photos.py: {a.n} JPEGs from {len(photos)} photographs in {a.classes} classes, mean {mean_w:.0f}x{mean_h:.0f}, in {a.out}")


if __name__ == "__main__":
    main()
