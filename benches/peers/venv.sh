#!/usr/bin/env bash
# The PyTorch that wrn is compared with: torch 2.11.0 and torchvision 0.26.0 from PyPI in a git-ignored venv
# (target/peers-venv; several GB with the CUDA wheels PyPI's torch depends on), made once. Prints the venv's
# python. Used by `make bench-peers` and `make rehearse-gpu-acceptance`.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/peers-venv
if ! "$VENV/bin/python" -c 'import torch, torchvision' 2>/dev/null; then
  echo "peers: installing torch 2.11.0 and torchvision 0.26.0 into $VENV (several GB with the CUDA wheels)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.11.0 torchvision==0.26.0 >&2
fi
echo "$PWD/$VENV/bin/python"
