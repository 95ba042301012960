#!/usr/bin/env bash
# Build the concept (K=64 and K=128), BM25 and dense (MiniLM) indexes of one collection:
#   ./indexes/build.sh scifact
set -euo pipefail
dataset=${1:?usage: $0 DATASET (a BEIR folder or a name under CLSR_DATA)}
here=$(cd "$(dirname "$0")" && pwd)
clsr=${CLSR:-"$here/../.venv/bin/clsr"}
name=$(basename "$dataset")
"$clsr" index --kind concepts --doc-k 64 --corpus "$dataset" --index "$here/$name-concepts-k64" --overwrite
"$clsr" index --kind concepts --doc-k 128 --corpus "$dataset" --index "$here/$name-concepts-k128" --overwrite
"$clsr" index --kind bm25 --corpus "$dataset" --index "$here/$name-bm25" --overwrite
"$clsr" index --kind dense --corpus "$dataset" --index "$here/$name-dense-minilm" --overwrite
