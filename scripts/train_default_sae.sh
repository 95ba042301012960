#!/usr/bin/env bash
# Reproduces the SAE shipped in clsr/sae/models/$DEFAULT (see its README.md): general English only, so that
# no collection the README reports was seen in training (figures on them are zero-shot or adapted).
# Needs the shared data (CLSR_DATA, default ../shared/data) and `make setup`. ~417k training texts: about an hour
# to encode and several hours to train on 2 CPU cores; 4 minutes in all with DEVICE=cuda on one GPU (as shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
export CLSR_DATA=${CLSR_DATA:-$(cd .. && pwd)/shared/data}
export CLSR_CACHE=${CLSR_CACHE:-$PWD/cache}
model=clsr/sae/models/minilm-l6-v2-general-topk128-8192
work=build/sae-default
device=${DEVICE:-cpu}
dtype=auto; [ "$device" = cpu ] || dtype=fp32
.venv/bin/clsr train-sae \
  --dataset general-english --unjudged-queries general-english \
  --encoder minilm --dtype "$dtype" --device "$device" --encode-batch-size "${ENCODE_BATCH:-32}" \
  --n-latents 8192 --k 128 --multi-k 64 \
  --epochs "${EPOCHS:-12}" --lr 1e-3 --seed 0 \
  --kl-weight 0.1 --kl-sparse-weight 0.3 --tau 0.05 --tau-sparse 0.05 \
  --save-dtype fp16 --output "$work" "$@"
mkdir -p "$model"
cp "$work/sae.safetensors" "$work/config.json" "$model/"
echo "copied the SAE into $model"
