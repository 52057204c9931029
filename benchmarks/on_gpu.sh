#!/usr/bin/env bash
# Everything a GPU machine is for, in one command and about nine minutes: the GPU tests, a
# time-boxed continuation of the committed tuning databases, and the end-to-end benchmark with
# the tuned kernels. Everything lands under one output folder, each step's results as it ends.
#
#   benchmarks/on_gpu.sh OUT [BUDGET_S] [TARGET] [MODEL...]
#       BUDGET_S  seconds of tuning (default 200), TARGET (default auto: this machine's GPU),
#       MODELS    default: inception_v3 googlenet squeezenet; the transformers (bert llama moe) run
#                 their e2e rows in float16 first, with IOS_TVM_LAYERS layers when set
#   benchmarks/on_gpu.sh --dry-run OUT [BUDGET_S] [TARGET] [MODEL...]
#       the same steps on a CPU: llvm, reduced models, a 30 s budget, small batches (default
#       model: squeezenet); what tests/test_benchmarks.py runs so that this script cannot rot
#
# Steps, each under its own `timeout`, in order of value (a step that fails or times out does
# not stop the next; OUT/steps.tsv says how each ended):
#   0. the runtime library, built with CUDA if the one in python/ios_tvm/lib lacks it;
#      OUT/provenance.json (GPU, driver, CUDA, TVM, commit)
#   1. pytest -m gpu: the correctness tests side by side (pytest-xdist, when installed), then
#      the tests that compare speeds, alone    -> OUT/gpu_tests.{log,xml}, OUT/gpu_timing_tests.{log,xml}
#   2. tuning: tuning/<arch>/ copied to OUT/tuning/<arch>/, continued for BUDGET_S seconds with
#      `ios-tvm tune`, pruned to the best 8 schedules per kernel
#                                            -> OUT/tuning/<arch>/<model>/, OUT/tune_<dtype>.log
#   3. benchmarks/gpu_e2e.py per model with its tuned database, the models side by side (their
#      timings one at a time, under a device lock; IOS_TVM_E2E_PARALLEL=0: one after another),
#      with TVM's kernels, cuDNN / cuBLASLt and the measured mix (IOS_TVM_KERNELS)
#                                            -> OUT/e2e_<model>.json, OUT/e2e_<model>.log
# Bring back OUT: `python benchmarks/bring_home.py OUT` (or the IOS_TVM_PACK file) copies the
# databases over tuning/<arch>/ and the e2e JSON into benchmarks/results/; commit them.
#
# Environment: PYTHON (default python3), IOS_TVM_TOTAL_S (whole run, default 540), IOS_TVM_LAYERS
# (layers of the transformers' e2e rows, default theirs: 12, 22, 24), IOS_TVM_DTYPES
# (precisions of the e2e rows and of the tuning, default "float32"; e.g. "float32 float16": half
# rows tune and run the models converted by ios_tvm.ir.precision.convert), IOS_TVM_PACK (a .tar.gz
# path outside OUT: OUT packed into it after every step, for a machine that gives back few files;
# a run cut short still leaves the steps that ended), IOS_TVM_TEST_WORKERS (parallel GPU tests,
# default 8 where pytest-xdist is installed), IOS_TVM_E2E_PARALLEL (step 3, default 1), IOS_TVM_KERNELS
# (kernel choices of the e2e rows, default "tvm vendor auto": TVM's, cuDNN / cuBLASLt, the measured
# mix; vendor kernels need cuDNN 9 and cuBLASLt where the GPU is: PyTorch for CUDA brings both).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
DRY=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
  shift
fi
if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
  sed -n '2,/^set -uo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
  exit 2
fi
OUT="$1"
shift
if [ "$DRY" = 1 ]; then
  BUDGET="${1:-30}"; TARGET="${2:-llvm}"
  TUNE_ARGS=(--small --trials-per-batch 4 --population 32)
  E2E_ARGS=(--small --number 1 --repeat 2 --no-torch --cost-model analytic --kernels tvm vendor)
  DEFAULT_MODELS=(squeezenet)
else
  BUDGET="${1:-200}"; TARGET="${2:-auto}"
  TUNE_ARGS=()
  read -r -a E2E_ARGS <<< "--kernels ${IOS_TVM_KERNELS:-tvm vendor auto}"
  DEFAULT_MODELS=(inception_v3 googlenet squeezenet)
fi
shift $(( $# < 2 ? $# : 2 ))
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=("${DEFAULT_MODELS[@]}")
TOTAL="${IOS_TVM_TOTAL_S:-540}"
read -r -a DTYPES <<< "${IOS_TVM_DTYPES:-float32}"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"
# the checkout's ios_tvm when its runtime library is built (or nothing else imports), else the
# installed one
if ls python/ios_tvm/lib/*ios_tvm_runtime* > /dev/null 2>&1 || ! "$PY" -c "import ios_tvm.runtime" 2> /dev/null; then
  export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
fi
printf 'step\trc\tseconds\n' > "$OUT/steps.tsv"

step() {  # step NAME TIMEOUT_S LOG COMMAND...: run it under timeout, log, record rc and time
  local name="$1" limit="$2" log="$3"
  shift 3
  local t0=$SECONDS rc
  echo "== $name (at most ${limit} s)"
  timeout -k 20 "$limit" "$@" > "$log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( SECONDS - t0 ))" >> "$OUT/steps.tsv"
  echo "   rc $rc in $(( SECONDS - t0 )) s; log: $log"
  pack
  return 0
}

PACK="${IOS_TVM_PACK:-}"
if [ -n "$PACK" ]; then
  mkdir -p "$(dirname "$PACK")"
  PACK="$(cd "$(dirname "$PACK")" && pwd)/$(basename "$PACK")"
  case "$PACK/" in "$OUT"/*) echo "IOS_TVM_PACK must lie outside OUT ($OUT)" >&2; exit 2 ;; esac
fi
pack() {  # OUT, as it is now, into IOS_TVM_PACK (written whole, then renamed: never half a file)
  [ -n "$PACK" ] || return 0
  local part="$PACK.part.$BASHPID" rc
  # exit status 1: a file changed while read (a log of a step still running beside): fine
  tar --warning=no-file-changed -czf "$part" -C "$OUT" .
  rc=$?
  if [ "$rc" -le 1 ]; then mv -f "$part" "$PACK"; else rm -f "$part"; fi
  return 0
}

# 0. runtime library and provenance
export IOS_TVM_TARGET="$TARGET"
need_cuda=$("$PY" -c "import os; from ios_tvm.ir.target import resolve_target
print(int(resolve_target(os.environ['IOS_TVM_TARGET']).kind.name == 'cuda'))" 2>/dev/null || echo 0)
have=$("$PY" -c "import ios_tvm.runtime as r; print(r.build_info().get('cuda', '0'))" 2>/dev/null || echo none)
if [ "$have" = none ] || { [ "$need_cuda" = 1 ] && [ "$have" = 0 ]; }; then
  step build 240 "$OUT/build.log" bash -c "cmake -S . -B build/on_gpu -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=\"\$(command -v $PY)\" && cmake --build build/on_gpu -j"
  export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
fi
ARCH=$("$PY" -c "import os; from ios_tvm.ir.target import arch_of, resolve_target
print(arch_of(resolve_target(os.environ['IOS_TVM_TARGET'])))") || { echo "no usable ios_tvm/TVM for $PY" >&2; exit 1; }
"$PY" - "$OUT/provenance.json" "$ARCH" "$DRY" "$BUDGET" "${MODELS[@]}" <<'PYEOF'
import json, os, sys
from ios_tvm.runtime.profiling import provenance
from ios_tvm.ir.target import resolve_target
path, arch, dry, budget, *models = sys.argv[1:]
info = {**provenance(resolve_target(os.environ["IOS_TVM_TARGET"])), "arch": arch, "dry_run": dry == "1",
        "tuning_budget_s": float(budget), "models": models}
from importlib.metadata import PackageNotFoundError, version
def _version(name):  # what the steps will find: tuning's XGBoost, the tests' xdist, the peers' torch
    try:
        return version(name)
    except PackageNotFoundError:
        return None
info["packages"] = {n: _version(n) for n in ("xgboost", "xgboost-cpu", "pytest-xdist", "torch", "torchvision")}
print("packages: " + ", ".join(f"{k} {v or 'missing'}" for k, v in info["packages"].items()))
with open(path, "w") as f:
    json.dump(info, f, indent=1)
PYEOF
echo "target $TARGET ($ARCH), models ${MODELS[*]}, tuning budget $BUDGET s, output $OUT"

# 1. GPU tests (they skip, with their reason, without a GPU): correctness side by side (each test
#    compiles its models on its own cores), then the speed comparisons alone
# (SIGINT at the limit: pytest still writes its report of the tests it ran)
PARALLEL=()
if [ "$DRY" = 0 ] && "$PY" -c "import xdist" 2> /dev/null; then
  PARALLEL=(-n "${IOS_TVM_TEST_WORKERS:-8}")
fi
step gpu_tests 120 "$OUT/gpu_tests.log" timeout -s INT 100 "$PY" -m pytest -m "gpu and not timing" -q tests \
  -p no:cacheprovider "${PARALLEL[@]}" --junitxml "$OUT/gpu_tests.xml"
step gpu_timing_tests 100 "$OUT/gpu_timing_tests.log" timeout -s INT 80 "$PY" -m pytest -m "gpu and timing" -q \
  tests -p no:cacheprovider --junitxml "$OUT/gpu_timing_tests.xml"

# 2. tuning: continue the committed databases, in a copy
mkdir -p "$OUT/tuning/$ARCH"
if [ -d "tuning/$ARCH" ]; then
  cp -R "tuning/$ARCH/." "$OUT/tuning/$ARCH/"
fi
# it stops itself at the budget; SIGINT later still ends it cleanly after the batch under way
# (the budget is shared by the precisions asked for, in order). GRACE: what tuning's one-time
# preparation may add (40 s on the GPU machine's 16 cores; on a small CPU with other work beside,
# MetaSchedule's first preparation alone took 70-115 s: the dry run allows for that)
GRACE=40
[ "$DRY" = 1 ] && GRACE=180
share=$(( BUDGET / ${#DTYPES[@]} ))
for dt in "${DTYPES[@]}"; do
  step "tune_$dt" $(( share + GRACE + 20 )) "$OUT/tune_$dt.log" timeout -s INT "$(( share + GRACE ))" \
    "$PY" -m ios_tvm tune "${MODELS[@]}" --time-budget "$share" --target "$TARGET" --dtype "$dt" \
    --out "$OUT/tuning" --keep 8 "${TUNE_ARGS[@]}"
done

# 3. end to end with the tuned kernels. Side by side (IOS_TVM_E2E_PARALLEL=1, the default): each
#    model builds and compiles on its own cores while a device lock (IOS_TVM_DEVICE_LOCK) lets one
#    process at a time time the GPU; all share the time left. One after another (=0): in the order
#    given, each may use the time left but 60 s for every model after it.
e2e() {  # e2e MODEL LIMIT_S
  local db="$OUT/tuning/$ARCH/$1" dtypes=("${DTYPES[@]}") sizes=()
  [ -f "$db/database_tuning_record.json" ] || db=none
  case "$1" in bert|llama|moe)  # transformers: float16 first (where users run them), their layers as asked
    dtypes=(float16 $(printf '%s\n' "${DTYPES[@]}" | grep -vx float16))
    [ -n "${IOS_TVM_LAYERS:-}" ] && sizes=(--layers "$IOS_TVM_LAYERS") ;;
  esac
  step "e2e_$1" "$2" "$OUT/e2e_$1.log" "$PY" benchmarks/gpu_e2e.py --models "$1" --target "$TARGET" \
    --database "$db" --dtypes "${dtypes[@]}" --out "$OUT/e2e_$1.json" "${sizes[@]}" "${E2E_ARGS[@]}"
}
if [ "${IOS_TVM_E2E_PARALLEL:-1}" = 1 ]; then
  limit=$(( TOTAL - SECONDS ))
  [ "$limit" -lt 60 ] && limit=60
  IOS_TVM_DEVICE_LOCK="$(mktemp "${TMPDIR:-/tmp}/ios_tvm_device.XXXXXX")"
  export IOS_TVM_DEVICE_LOCK
  echo "== e2e of ${MODELS[*]} side by side (timings one at a time: $IOS_TVM_DEVICE_LOCK)"
  for m in "${MODELS[@]}"; do
    e2e "$m" "$limit" &
  done
  wait
  rm -f "$IOS_TVM_DEVICE_LOCK"
  unset IOS_TVM_DEVICE_LOCK
else
  left=${#MODELS[@]}
  for m in "${MODELS[@]}"; do
    limit=$(( TOTAL - SECONDS - 60 * (left - 1) ))
    [ "$limit" -lt 60 ] && limit=60
    e2e "$m" "$limit"
    left=$(( left - 1 ))
  done
fi

echo "done in $SECONDS s:"
column -t "$OUT/steps.tsv" 2>/dev/null || cat "$OUT/steps.tsv"
pack && [ -n "$PACK" ] && echo "packed: $PACK ($(du -h "$PACK" | cut -f1))"
exit 0
