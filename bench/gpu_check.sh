#!/usr/bin/env bash
# The GPU checks of one session, as one script for a machine with a GPU and no network:
#   bash bench/gpu_check.sh                    # every step (about 10 minutes)
#   STEPS="pipeline" bash bench/gpu_check.sh   # only some: index pipeline smoke tests
# Needs bench/.corpus/c16-8mp (16 JPEGs, made here by ../shared/tools/make-photo-corpus) and,
# where clipcull's dependencies are not installed, their wheels in .whl/. Writes its logs to $OUT.
#   index:    the indexing benchmark on CUDA (bench_index.py --device cuda) over a corpus expanded
#             to N photos;
#   pipeline: the pipeline benchmark (bench_pipeline.py) on the same photos: decode-only on all
#             cores against the pipeline with threads and with processes, with no checks, the
#             focus/exposure checks and every analyser installed (quality + faces: put the faces
#             extra's wheels in .whl/ too); its last line gives the ratio to all-core decode-only
#             (the target is >= 0.9x);
#   smoke:    the AVA reproduction's CUDA paths (bench/cuda_smoke.py: fine-tuning, eval, torchrun/NCCL, probe);
#   tests:    the test suite with a GPU visible (device "auto" then picks CUDA); the browser tests need
#             chromium, which such a machine lacks.
# A device call is limited to 10 minutes: where every step does not fit, run the pipeline step
# first, alone, then the others.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/clipcull-gpu}; mkdir -p "$OUT"
COUNT=${COUNT:-384}
STEPS=${STEPS:-index pipeline smoke tests}
step() { [[ " $STEPS " == *" $1 "* ]]; }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi -L
python3 -c "import torch, open_clip; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'open_clip', open_clip.__version__)"
python3 bench/expand_corpus.py bench/.corpus/c16-8mp "bench/.corpus/c${COUNT}-8mp" "$COUNT"
if step index; then
  timeout 200 python3 bench/bench_index.py --device cuda --count "$COUNT" --megapixels 8 --also ViT-B-16 2>&1 | tee "$OUT/bench_cuda.txt"
fi
if step pipeline; then
  timeout 150 python3 bench/bench_pipeline.py --device cuda --model ViT-B-32 --corpus "bench/.corpus/c${COUNT}-8mp" \
    --count "$COUNT" --rounds 2 2>&1 | tee "$OUT/bench_pipeline_cuda.txt"
  grep -E "analysers available|faster pool reaches" "$OUT/bench_pipeline_cuda.txt"
fi
if step smoke; then
  timeout 120 python3 bench/cuda_smoke.py --device cuda --images 256 --gpus 1 2>&1 | tee "$OUT/cuda_smoke.txt"
fi
if step tests; then
  timeout 150 python3 -m pytest -q -p no:cacheprovider --ignore=tests/test_review.py 2>&1 | tail -40 | tee "$OUT/pytest_gpu.txt"
fi
