#!/usr/bin/env bash
# The closed loop's GPU profile on the device machine, in one prepared run:
# build a synthetic corpus, teach a random-weight tiny Qwen-Omni to answer like the visual-only model,
# run the suites on held-out clips, harvest on training clips, train (SFT -> DPO), run the suites again.
# Writes into $OUT (default out/device):
#   alignment_loop.json   the report (per relation before/after with intervals, steps/s, peak GPU and resident memory)
#   alignment_loop.txt    the before/after table
#   alignment_loop.log    progress and errors
#   steps.tgz            each finished step's result, the Trainer logs and the suites' results (also of a run cut short)
#   train_summary.json    the recipe's counts, steps/s and peak GPU and resident memory per stage
#   gpu.txt, packages.txt what it ran on
#
# The device has torch, transformers, peft, accelerate, pytest, hypothesis, xdist, scipy, click and tqdm, but
# not trl, datasets, av or jsonschema, and no network. Carry their wheels (for its Python, 3.12) in .whl:
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 av==18.1.0 jsonschema==4.26.0 \
#       jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==0.30.0
#   pip download ... -d .whl/alt datasets==4.8.4   # for a machine whose pyarrow is older than datasets 5 wants
# They go to /tmp/site with --no-deps, ahead of the machine's own packages on PYTHONPATH. Where the wheels do
# not fit the 64 MiB a call carries, unpack them here (pip install --target DIR --no-deps --platform ... the
# wheels) and carry DIR as .whl/site.tar.xz (tar cf - -C DIR . | xz -9): 30 MB for the set above together
# with transformers 5.24 (the machine's 5.17 cannot train: before 5.21 the thinker's output has no
# last_hidden_state, which TRL's
# fused LM head reads).
#
# The first steps (corpus, split, random model, stage-0 data and training) are CPU-sized and may be done
# beforehand, here, with the same profile; their folder then travels as .device/loop (carry it), so the
# device's minutes go to the suites and the recipe:
#   python -m alignment loop --out /tmp/thud-alignment-loop --size gpu   # stop it once steps/clever-hans-base.json exists
#   mkdir -p .device/loop && cp -a /tmp/thud-alignment-loop/{steps,corpus,logs} .device/loop/ \
#       && mkdir -p .device/loop/stage0 && cp -a /tmp/thud-alignment-loop/stage0/model .device/loop/stage0/
# (the steps record absolute paths: WORK must be the same folder on both machines).
#
# Extra arguments go to `python -m alignment loop`, e.g. `--set clips=32` to shrink a run that is too slow.
# LIMIT (seconds, default 560) stops the loop; a rerun on the same warm machine resumes after its last step, and
# in the recipe from its last checkpoint (every 50 steps). With the kept guards the loop takes more than one
# 10-minute call on an H200 (about 850 s step by step; the profile now overlaps before, harvest and blind
# guards): start it with LIMIT=550 and timeout_s 600, then at once (the machine goes back after 30 s idle)
# call again with what is left less about 40 s. A second call that finds a bare machine starts over.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/device}
WORK=${WORK:-/tmp/thud-alignment-loop}
LIMIT=${LIMIT:-560}
mkdir -p "$OUT"
LOG="$OUT/alignment_loop.log"
touch "$LOG"

install() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@" >>"$LOG" 2>&1
}
# A second call on the same warm machine finds them unpacked already.
if ! PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" python3 -c "import trl, datasets, av, jsonschema" 2>/dev/null; then
  mkdir -p /tmp/site
  if [ -f .whl/site.tar.xz ]; then  # the packages unpacked, xz-compressed: a third smaller than their wheels
    echo "unpacking .whl/site.tar.xz into /tmp/site" | tee -a "$LOG"
    tar xJf .whl/site.tar.xz -C /tmp/site || { echo "could not unpack .whl/site.tar.xz" | tee -a "$LOG"; exit 2; }
  elif ls .whl/*.whl >/dev/null 2>&1; then
    echo "installing the carried wheels into /tmp/site" | tee -a "$LOG"
    install .whl/*.whl || { echo "could not install the wheels in .whl (see $LOG)" | tee -a "$LOG"; exit 2; }
  fi
  if ! python3 -c "import pyarrow, sys; sys.exit(int(pyarrow.__version__.split('.')[0]) < 24)" 2>/dev/null \
    && ls .whl/alt/datasets-*.whl >/dev/null 2>&1; then  # datasets 5 wants pyarrow 24
    install .whl/alt/datasets-*.whl
  fi
fi
[ -d /tmp/site ] && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import trl, datasets, av, jsonschema, peft, xdist" 2>>"$LOG" \
  || { echo "modules missing (see $LOG); carry the wheels listed at the top of $0" | tee -a "$LOG"; exit 2; }
python3 -m pip list --path /tmp/site 2>/dev/null >"$OUT/packages.txt"
python3 -c "import torch, transformers, pyarrow; print('torch', torch.__version__, 'transformers', transformers.__version__, 'pyarrow', pyarrow.__version__)" >>"$OUT/packages.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1

if [ -d .device/loop ] && [ ! -d "$WORK/steps" ]; then
  echo "starting from the carried .device/loop: $(ls .device/loop/steps | tr '\n' ' ')" | tee -a "$LOG"
  mkdir -p "$WORK" && cp -a .device/loop/. "$WORK/"
fi

# A bare checkout: the package is imported from here and the pytest plugin loaded by module (alignment/loop.py).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
start=$(date +%s)
# Progress goes to stdout as it comes (a call stopped at its limit returns only what was printed), and to $LOG.
timeout "$LIMIT" python3 -m alignment loop --out "$WORK" --size gpu --quiet \
  --json-out "$OUT/alignment_loop.json" "$@" 2>&1 | tee -a "$LOG"
code=${PIPESTATUS[0]}
tail -n 40 "$LOG" >"$OUT/alignment_loop.txt"
echo "exit $code after $(( $(date +%s) - start )) s" | tee -a "$LOG" "$OUT/alignment_loop.txt"
# Each finished step's result and the training logs, also when the run was cut short.
tar czf "$OUT/steps.tgz" -C "$WORK" --ignore-failed-read steps logs results train/logs train/summary.json \
  >/dev/null 2>&1 || true
cp "$WORK/train/summary.json" "$OUT/train_summary.json" 2>/dev/null || true
exit "$code"
