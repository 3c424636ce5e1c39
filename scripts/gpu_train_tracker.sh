#!/usr/bin/env bash
# Train the compact tracker on a lent GPU machine (the device tool), with the project's own train-tracker.
# Expects .gpu/ beside the repo root (git-ignored, carried): whl/ (PyAV wheel), site/ (sam2 and its pure-Python
# deps copied from .venv), data/track_train (a collected dataset without depth). Results land in $OUT.
set -euo pipefail
DATA=${DATA:-.gpu/data/track_train}
S1=${S1:-150}
S2=${S2:-210}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/.gpu/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 -c "import torch, sam2, av; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pipeline.cli train-tracker --data "$DATA" --out "$OUT/run" --device "${DEVICE:-cuda}" \
    --stage1-steps "${S1_STEPS:-100000}" --stage2-steps 100000 --stage1-batch 32 --stage2-batch 8 \
    --stage1-budget-s "$S1" --stage2-budget-s "$S2" --threads 8 --checkpoint-every-s 60 ${INIT:+--init "$INIT"} \
    2>&1 | tee "$OUT/train.log"
rm -f "$OUT/run/optimizer.pt"
