#!/usr/bin/env bash
# The device check of 2026-12-04 (issue 13): the three implementations (loop, textbook, engine)
# against torch on CUDA, and the tutorial on the textbook code against torch on CUDA.
# Run from the repository root on a lent GPU machine, its system python3 holding torch (CUDA),
# numpy, pytest and hypothesis; logs go to $OUT.
set -u
out=${OUT:-/tmp/out}
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, numpy, hypothesis; print('torch', torch.__version__, 'numpy', numpy.__version__, 'hypothesis', hypothesis.__version__)"
} > "$out/machine.txt" 2>&1
export TINYNN_TEST_DEVICE=cuda
run() {  # name, command...
  local name=$1; shift
  local start=$SECONDS
  "$@" > "$out/$name.log" 2>&1
  echo "exit $? after $((SECONDS - start)) s" >> "$out/$name.log"
}
run properties-conv python3 -m pytest -q -p no:cacheprovider tests/test_properties_conv.py &
run properties-ops python3 -m pytest -q -p no:cacheprovider tests/test_properties_ops.py &
run kit-and-modes python3 -m pytest -q -p no:cacheprovider tests/test_three_implementations.py tests/test_testing.py \
  tests/test_textbook_mode.py -m "not slow" &
run cuda-only python3 -m pytest -q -p no:cacheprovider tests -m cuda &
run parity-textbook-cuda python3 -m parity --textbook --device cuda --no-download --max-steps 200 \
  --json "$out/parity-textbook-cuda.json" --plot "$out/parity-textbook-cuda.png" &
wait
tail -n 3 "$out"/*.log
