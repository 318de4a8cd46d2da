#!/usr/bin/env bash
# The generic TF -> ONNX -> PyTorch chain as a peer, in its own environment (.venv-chain):
# tf2onnx and onnx2torch are installed there with --no-deps, on top of the main environment's
# packages (a .pth file), so neither pulls a CUDA torch over the pinned CPU one; onnx2torch's
# start-up import of torchvision (no CPU build for this torch) meets a stub (bench/chain_stub).
#   bash bench/generic_chain.sh --release reference256 --weights weights/reference256
set -euo pipefail
cd "$(dirname "$0")/.."
test -x .venv/bin/python || make install
if [ ! -x .venv-chain/bin/python ]; then
  python3.11 -m venv .venv-chain
  main_sp=$(.venv/bin/python -c "import site; print(site.getsitepackages()[0])")
  chain_sp=$(.venv-chain/bin/python -c "import site; print(site.getsitepackages()[0])")
  echo "$main_sp" > "$chain_sp/main_venv.pth"
  .venv-chain/bin/pip install --quiet --disable-pip-version-check --no-deps tf2onnx onnx2torch
  cp -r bench/chain_stub/torchvision "$chain_sp/"
fi
exec .venv-chain/bin/python bench/generic_chain.py "$@"
