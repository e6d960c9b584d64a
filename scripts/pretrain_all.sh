#!/usr/bin/env bash
# The exact commands that produced data/models/ (each writes its own provenance.json).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY scripts/pretrain_tiny.py --name student-addition --size student --task addition --noise 0.4 --demos 8000 \
    --steps 3000 --constant-lr --seed 0
$PY scripts/pretrain_tiny.py --name teacher-addition --size teacher --task addition --noise 0.0 --steps 800 \
    --constant-lr --lr 1e-3 --seed 0
$PY scripts/pretrain_tiny.py --name student-graph --size student --task graph_path --noise 0.2 --steps 1500 \
    --constant-lr --seed 0 --max-new-tokens 7
