#!/usr/bin/env bash
# wrn beside PyTorch on this CPU, in the same run: training steps (PyTorch eager) and the CIFAR and
# ImageNet input pipelines (torchvision's DataLoader), each pair measured twice in alternation, with the
# ratio wrn / PyTorch; then the ImageNet resampling, Torch's bicubic beside the fast path (time and
# difference), and wrn's val crops against torchvision's. `make bench-peers` runs it after `make build`.
#
# Installs torch 2.11.0 and torchvision 0.26.0 into a git-ignored venv (benches/peers/venv.sh), downloads the
# scikit-image and matplotlib wheels for their photographs (target/peers/wheels), and writes its data
# under target/peers: a synthetic CIFAR-10 archive (fetched and prepared by wrn) and a folder of JPEGs cut
# from the photographs (benches/peers/photos.py). Both sides read the same files.
set -euo pipefail
cd "$(dirname "$0")/../.."

PEERS=target/peers
PY=$(benches/peers/venv.sh)
WORKERS=${WORKERS:-$(nproc)}
. ./target/libtorch.env
WRN=./target/release/wrn

if ! ls "$PEERS"/wheels/scikit_image-*.whl "$PEERS"/wheels/matplotlib-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q --no-deps --only-binary :all: scikit-image==0.26.0 matplotlib==3.11.2 -d "$PEERS/wheels"
fi
if [ ! -f "$PEERS/data/cifar10/prepared/train.wrnc" ]; then
  "$WRN" data synth cifar10 --out "$PEERS/synth" --n 10000 --seed 0
  "$WRN" data --data-dir "$PEERS/data" --manifest "$PEERS/synth/cifar10.toml" fetch cifar10
fi
if [ ! -d "$PEERS/photos" ]; then
  "$PY" benches/peers/photos.py --wheels "$PEERS/wheels" --out "$PEERS/photos.tmp" --n 1000
  mv "$PEERS/photos.tmp" "$PEERS/photos"
fi
ARCHIVE=$(ls "$PEERS"/synth/cifar-10-binary.tar.gz)

rate() { python3 -c 'import json,sys; print(round(json.load(sys.stdin)["images_per_second"], 1))'; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
line() { printf '%-34s wrn %9s   pytorch %9s   ratio %s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }

echo "bench-peers: $(nproc) cores; images/s, best of each measurement; ratio = wrn / pytorch"
for round in 1 2; do
  w=$("$WRN" bench train --device cpu --arch wrn-16-4 --batch 64 --steps 5 --json | rate)
  p=$("$PY" benches/peers/pytorch_train_step.py --arch wrn-16-4 --batch 64 --steps 5 --threads "$(nproc)" | rate)
  line "train step wrn-16-4 b64 ($round)" "$w" "$p"
  w=$("$WRN" bench pipeline --split "$PEERS/data/cifar10/prepared/train.wrnc" --workers "$WORKERS" --plain none --json | rate)
  p=$("$PY" benches/peers/torchvision_pipeline.py --cifar "$ARCHIVE" --workers "$WORKERS" | rate)
  line "cifar-train, $WORKERS workers ($round)" "$w" "$p"
  w=$("$WRN" bench pipeline --images "$PEERS/photos" --workers "$WORKERS" --plain none --rounds 3 --json | rate)
  p=$("$PY" benches/peers/torchvision_pipeline.py --images "$PEERS/photos" --workers "$WORKERS" | rate)
  line "imagenet-train, $WORKERS workers ($round)" "$w" "$p"
  w=$("$WRN" bench pipeline --images "$PEERS/photos" --preset imagenet-train:fast --workers "$WORKERS" --plain none --rounds 3 --json | rate)
  line "imagenet-train:fast, $WORKERS workers ($round)" "$w" "$p"
done

# Resampling: Torch's bicubic (the paper's, the default) against the fast path, and both against
# torchvision's Resize(256) + CenterCrop(224), on the photographs.
"$WRN" bench resampling --images "$PEERS/photos" --write-val "$PEERS/val-crops"
"$PY" benches/peers/val_difference.py --images "$PEERS/photos" --crops "$PEERS/val-crops"
