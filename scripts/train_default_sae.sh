#!/usr/bin/env bash
# Reproduces the SAE shipped in clsr/models/minilm-l6-v2-topk128-8192 (see its README.md).
# Needs the shared collections (CLSR_DATA, default ../shared/data) and `make setup`.
# Encoding the ~185k training texts takes about 10 minutes once (then cached); training ~25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export CLSR_DATA=${CLSR_DATA:-$(cd .. && pwd)/shared/data}
export CLSR_CACHE=${CLSR_CACHE:-$PWD/cache}
model=clsr/models/minilm-l6-v2-topk128-8192
work=build/sae-default
.venv/bin/clsr train-sae \
  --dataset scifact --dataset nfcorpus --dataset msmarco-passage/subset-dl19-5k \
  --encoder minilm --n-latents 8192 --k 128 \
  --epochs "${EPOCHS:-24}" --lr 1e-3 --seed 0 \
  --kl-weight "${KL_WEIGHT:-0.1}" --kl-sparse-weight "${KL_SPARSE_WEIGHT:-0.3}" --tau 0.05 --tau-sparse 0.05 \
  --save-dtype fp16 --output "$work" "$@"
mkdir -p "$model"
cp "$work/sae.safetensors" "$work/config.json" "$model/"
echo "copied the SAE into $model"
