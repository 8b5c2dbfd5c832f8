#!/usr/bin/env bash
# The five-minute GPU check of issue 19: run on a machine with a CUDA GPU, from the repository root.
# Needs only the package and a CUDA build of torch (an already installed torch is kept):
#   pip install -e .   (once)
# Writes benchmarks/results/gpu_check.{md,json}; extra arguments go to benchmarks/gpu_check.py
# (e.g. --dry-run on a CPU, --stages train predict).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() or '--dry-run' in sys.argv else \
'no CUDA device visible to torch ' + torch.__version__)" "$@"
exec timeout 330 python benchmarks/gpu_check.py "$@"
