#!/usr/bin/env bash
# Run every benchmark once, one after the other, on this machine; the RATIO lines are the table of
# benchmarks/README.md. Usage: bash benchmarks/run_all.sh [log file]   (about 40 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
log=${1:-/tmp/nand-benchmarks.log}
python=${PYTHON:-.venv/bin/python}
{
  for script in prompt_loop nand_overhead throughput warm_rerun toy_training_speed sweep_rerun; do
    echo "== benchmarks/$script.py"
    "$python" -u "benchmarks/$script.py"
  done
  echo "== benchmarks/patchcore_memory.py (carpet's 280 training images)"
  "$python" -u benchmarks/patchcore_memory.py --num-images 280
} 2>&1 | tee "$log"
grep -h "^RATIO\|peak rss" "$log"
