#!/usr/bin/env bash
# The GPU checks of one session, as one script for a machine with a GPU and no network:
#   bash bench/gpu_check.sh
# Needs bench/.corpus/c16-8mp (16 JPEGs, made here by ../shared/tools/make-photo-corpus) and,
# where clipcull's dependencies are not installed, their wheels in .whl/. Writes its logs to $OUT.
#   1. the indexing benchmark on CUDA (bench_index.py --device cuda) over a corpus expanded to N photos;
#   2. the AVA reproduction's CUDA paths (bench/cuda_smoke.py: fine-tuning, eval, torchrun/NCCL, probe);
#   3. the test suite with a GPU visible (device "auto" then picks CUDA); the browser tests need
#      chromium, which such a machine lacks.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/clipcull-gpu}; mkdir -p "$OUT"
COUNT=${COUNT:-384}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi -L
python3 -c "import torch, open_clip; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'open_clip', open_clip.__version__)"
python3 bench/expand_corpus.py bench/.corpus/c16-8mp "bench/.corpus/c${COUNT}-8mp" "$COUNT"
timeout 200 python3 bench/bench_index.py --device cuda --count "$COUNT" --megapixels 8 --also ViT-B-16 2>&1 | tee "$OUT/bench_cuda.txt"
timeout 120 python3 bench/cuda_smoke.py --device cuda --images 256 --gpus 1 2>&1 | tee "$OUT/cuda_smoke.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider --ignore=tests/test_review.py 2>&1 | tail -40 | tee "$OUT/pytest_gpu.txt"
