#!/usr/bin/env bash
# The closed loop's GPU profile on the device machine, in one prepared run (stopped at 570 s; never yet finished):
# build a synthetic corpus, teach a random-weight tiny Qwen-Omni to answer like the visual-only model,
# run the suites on held-out clips, harvest on training clips, train (SFT -> DPO), run the suites again.
# Writes into $OUT (default out/device):
#   alignment_loop.json   the report (per relation before/after with intervals, steps/s, peak GPU memory)
#   alignment_loop.txt    the before/after table
#   alignment_loop.log    progress and errors
#   steps.tgz            each finished step's result and the Trainer logs (also of a run cut short)
#   gpu.txt, packages.txt what it ran on
#
# The device has torch and transformers but not trl, peft, datasets, av, jsonschema, pytest, hypothesis ...
# and no network. Carry wheels for them (built for its Python, 3.12) in .device/wheels, e.g. here:
#   pip download --dest .device/wheels --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
#       trl peft datasets av jsonschema click tqdm scipy pytest hypothesis pytest-xdist
# (pip may fetch torch too as a dependency of peft: delete torch* and nvidia* wheels, the device has its own)
# and pass carry=[".device"] to the run. Missing modules are installed from there with --no-index: nothing
# already on the machine (torch, transformers) is replaced.
#
# Extra arguments go to `python -m alignment loop`, e.g. `--set clips=48` to shrink a run that is too slow.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/device}
mkdir -p "$OUT"
LOG="$OUT/alignment_loop.log"
: >"$LOG"

missing=$(python - <<'EOF'
import importlib.util
wanted = {"trl": "trl", "peft": "peft", "datasets": "datasets", "av": "av", "jsonschema": "jsonschema",
          "click": "click", "tqdm": "tqdm", "scipy": "scipy", "pytest": "pytest", "hypothesis": "hypothesis",
          "xdist": "pytest-xdist", "accelerate": "accelerate"}
print(" ".join(req for module, req in wanted.items() if importlib.util.find_spec(module) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "installing from .device/wheels: $missing" | tee -a "$LOG"
  if ! python -m pip install --quiet --no-index --find-links .device/wheels $missing >>"$LOG" 2>&1; then
    echo "could not install $missing from .device/wheels (see $LOG); carry the wheels listed at the top of $0" | tee -a "$LOG"
    exit 2
  fi
fi
python -m pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|datasets|accelerate|av) " >"$OUT/packages.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1

# A bare checkout: the package is imported from here and the pytest plugin loaded by module (alignment/loop.py).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
WORK=${WORK:-/tmp/thud-alignment-loop}
start=$(date +%s)
timeout 570 python -m alignment loop --out "$WORK" --size gpu --quiet \
  --json-out "$OUT/alignment_loop.json" "$@" 2>&1 | tee -a "$LOG" | tail -n 40 >"$OUT/alignment_loop.txt"
code=${PIPESTATUS[0]}
echo "exit $code after $(( $(date +%s) - start )) s" | tee -a "$LOG" "$OUT/alignment_loop.txt"
# Each finished step's result and the training logs, also when the run was cut short.
tar czf "$OUT/steps.tgz" -C "$WORK" steps logs >/dev/null 2>&1 || true
cat "$OUT/alignment_loop.txt"
exit "$code"
