#!/usr/bin/env bash
# Every SAM 2 GPU figure of docs/performance.md in one command (about 20 minutes on an
# H100/H200; the lent device machine allows 10 minutes a call: run the lines one by one
# there). Set PYTHONPATH so that sam2 and this package import, e.g.
#   export PYTHONPATH=$PWD/.devsite:$PWD/src
set -euo pipefail
export TQDM_DISABLE=1
cd "$(dirname "$0")/.."
python3 -m pytest -q -p no:cacheprovider tests/gpu
python3 benchmarks/sam2_attention_bench.py --objects 1,10,50
python3 benchmarks/sam2_kernels_bench.py --objects 1,2,10,50
python3 benchmarks/sam2_fused_kernels_bench.py --objects 1,10,50
python3 benchmarks/sam2_frame_time.py --objects 10 --frames 120
python3 benchmarks/sam2_ab.py --switch fast_attention --objects 10 --compile
python3 benchmarks/sam2_bench.py --objects 1,10 --no-raw --configs compile --workers 0,8
python3 benchmarks/sam2_bench.py --objects 1,10 --raw-objects 1,10 --configs compile --workers 8
python3 benchmarks/sam2_bench.py --objects 1,10 --raw-objects 1,10 --configs eager,graphs --workers 8
python3 benchmarks/sam2_bench.py --objects 50 --no-raw --configs compile --frames 120 --workers 8
python3 benchmarks/sam2_bench.py --objects 1 --no-raw --configs compile --long 10000 --workers 8
python3 benchmarks/sam2_bench.py --model sam2.1_hiera_large --objects 1 --raw-objects 1 \
    --configs compile --workers 8
