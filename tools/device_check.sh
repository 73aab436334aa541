#!/usr/bin/env bash
# One command for a lent GPU machine (Python 3.12, torch 2.11 cu130, nvcc 13, no network), within 8 minutes:
#   1. install the packages that machine lacks from wheels carried in .whl/ (made here by --prepare)
#   2. build PyTorch3D from tools/gpu-vendor (or reuse a wheel built by an earlier call, .whl/pytorch3d-*.whl)
#   3. run the CUDA-marked tests
#   4. run the GPU render / training / loader benchmarks and collect their rows in $OUT/device_rows.md
#
#   tools/device_check.sh --prepare     here, with network: fill .whl/ (cp312 wheels; pure-Python sdists built here)
#   tools/device_check.sh               on the GPU machine (device tool: carry [".whl"], timeout_s 600)
#   tools/device_check.sh --dry-run     on a CPU machine: every step with CPU stand-ins and tiny sizes (CI runs it)
#
# Every step prints its start, its duration and the time left; a step that would overrun the budget is cut
# (timeout) and reported, and the next step still runs.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
mode=gpu
case "${1:-}" in
  --dry-run) mode=dry ;;
  --prepare) mode=prepare ;;
  "") ;;
  *) echo "usage: tools/device_check.sh [--dry-run|--prepare]" >&2; exit 2 ;;
esac
budget=${DEVICE_CHECK_BUDGET:-480}           # seconds for the whole check (8 minutes)
slack=${DEVICE_CHECK_SLACK:-1}               # multiplies every step's limit (the test suite's dry run on a busy CPU)
out=${OUT:-$here/device_out}
mkdir -p "$out"
log="$out/device_check.log"
rows="$out/device_rows.md"
py=${PYTHON:-python3}
wheels="$here/.whl"
start=$(date +%s)
failures=0

say() { echo "[device_check $(( $(date +%s) - start ))s] $*" | tee -a "$log" >&2; }

# step NAME SECONDS CMD...: run CMD with at most min(SECONDS, time left) seconds, record the outcome.
step() {
  local name=$1 limit=$(( $2 * slack )); shift 2
  local left=$(( budget - ($(date +%s) - start) ))
  (( limit > left )) && limit=$left
  if (( limit <= 5 )); then say "SKIP $name: no time left in the ${budget}s budget"; failures=$((failures + 1)); return; fi
  say "START $name (limit ${limit}s, ${left}s left)"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if (( rc == 0 )); then say "OK    $name in ${dt}s"
  elif (( rc == 124 || rc == 137 )); then say "CUT   $name after ${dt}s (limit ${limit}s)"; failures=$((failures + 1))
  else say "FAIL  $name (exit $rc) in ${dt}s; see $log"; failures=$((failures + 1)); fi
}

# ---------------------------------------------------------------- --prepare (here, with network)
# packages the GPU image lacks (checked against its package list, 2026-11); versions as in requirements.lock
MISSING_WHEELS="kornia==0.9.0 kornia-rs==0.2.0 lightly==1.6.0 hydra-core==1.3.8 omegaconf==2.3.1 trimesh==4.12.2"
SDIST_ONLY="antlr4-python3-runtime==4.9.3"   # pure Python, published as sdist only: built into a wheel here
if [[ $mode == prepare ]]; then
  mkdir -p "$wheels"
  plats=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  # shellcheck disable=SC2086
  PIP_CONSTRAINT= $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plats[@]}" -d "$wheels" $MISSING_WHEELS || exit 1
  PIP_CONSTRAINT= $py -m pip wheel -q --no-deps -w "$wheels" $SDIST_ONLY tools/gpu-vendor/iopath-0.1.10.tar.gz || exit 1
  ls -la "$wheels"
  echo "now: device run with carry [\".whl\"] and command 'bash tools/device_check.sh'" >&2
  exit 0
fi

: >"$log"
say "mode $mode, budget ${budget}s, results in $out"
step "environment" 60 bash -c "$py -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available())'; nvidia-smi -L || true; nproc"

# ---------------------------------------------------------------- 1. carried wheels
site=/tmp/ssl_eq_site
if [[ $mode == gpu ]]; then
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then say "no wheels in $wheels: run tools/device_check.sh --prepare here first"; exit 2; fi
  step "install carried wheels" 90 $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$here:$site${PYTHONPATH:+:$PYTHONPATH}"
else
  # rehearsal: every package the GPU image lacks must be covered by a prepared wheel (when .whl/ exists)
  step "carried wheels cover the missing packages" 60 $py - "$wheels" $MISSING_WHEELS $SDIST_ONLY iopath==0.1.10 <<'PY'
import sys
from importlib.metadata import version
from pathlib import Path

wheels, pins = Path(sys.argv[1]), sys.argv[2:]
for pin in pins:
    name, ver = pin.split("==")
    if wheels.is_dir():   # prepared: a wheel of exactly that version is there
        if not list(wheels.glob(f"{name.replace('-', '_')}-{ver}-*.whl")):
            sys.exit(f"missing wheel for {pin} in {wheels} (run tools/device_check.sh --prepare)")
    elif version(name) != ver:  # not prepared: the pins are the versions this environment is tested with
        sys.exit(f"{pin}: this environment has {version(name)}; update the pin in tools/device_check.sh")
print("ok:", " ".join(pins), "(wheels)" if wheels.is_dir() else "(pins match this environment; .whl/ not prepared)")
PY
  export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---------------------------------------------------------------- 2. PyTorch3D
src=$(mktemp -d)
if [[ $mode == gpu ]]; then
  if ls "$wheels"/pytorch3d-*.whl >/dev/null 2>&1; then
    say "reusing $(ls "$wheels"/pytorch3d-*.whl | head -1)"
  else
    # Hopper only (sm_90) keeps the build inside ~4 minutes on 16 cores; the wheel is kept in $OUT for later calls
    step "build PyTorch3D (sm_90)" 300 bash -c "tar xzf tools/gpu-vendor/pytorch3d-0.7.9-src-9381c40.tar.gz -C '$src' && \
      cd '$src' && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=\$(nproc) $py -m pip wheel -q --no-build-isolation \
      --no-deps -w '$out' ."
  fi
  step "install PyTorch3D" 60 bash -c "$py -m pip install -q --no-index --no-deps --target '$site' \
    \$(ls '$wheels'/pytorch3d-*.whl '$out'/pytorch3d-*.whl 2>/dev/null | head -1)"
  step "PyTorch3D CUDA rasteriser" 60 $py -c "import torch, pytorch3d._C as C; assert torch.cuda.is_available(); print('ok')"
else
  # rehearsal: the sources unpack and hold the CUDA kernels; this venv's PyTorch3D (easypytorch3d) imports
  step "PyTorch3D sources" 60 bash -c "tar xzf tools/gpu-vendor/pytorch3d-0.7.9-src-9381c40.tar.gz -C '$src' && \
    test -f '$src/setup.py' && ls '$src'/pytorch3d/csrc/rasterize_meshes/*.cu >/dev/null && \
    $py -c 'import pytorch3d; print(pytorch3d.__version__)'"
fi
rm -rf "$src"

# ---------------------------------------------------------------- 3. CUDA tests
if [[ $mode == gpu ]]; then
  step "CUDA tests" 120 $py -m pytest -q -p no:cacheprovider -m cuda tests
else
  # rehearsal: the same tests, the CPU standing in for the GPU
  step "CUDA tests (cpu stand-in)" 180 env SSL_EQ_CUDA_TEST_DEVICE=cpu $py -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
fi

# ---------------------------------------------------------------- 4. benchmarks -> rows
dev=cuda; [[ $mode == dry ]] && dev=cpu
{
  echo "# device check — $(date -u +%F) — $([[ $mode == dry ]] && echo 'DRY RUN on CPU (sizes are tiny; not results)' || nvidia-smi -L 2>/dev/null | head -1)"
  echo
} >"$rows"
if [[ $mode == gpu ]]; then
  step "render benchmark" 120 bash -c "$py tools/bench_render.py --device cuda --rows procedural:64 procedural:256 mug:256 >>'$rows'"
  step "training benchmark" 150 bash -c "$py tools/bench_train.py --device cuda --backbone resnet18 --size 128 --steps 10 --warmup 3 --workers 8 --methods sie seqjepa vicreg >>'$rows'"
  step "loader benchmark" 90 bash -c "$py tools/bench_loader.py --objects 48 --views 50 --size 256 --workers 8 --cache warm --passes 2 >>'$rows'"
else
  step "render benchmark (tiny, cpu)" 120 bash -c "$py tools/bench_render.py --device cpu --images 2 --batch 2 --repeats 1 --rows procedural:16 >>'$rows'"
  step "training benchmark (tiny, cpu)" 150 bash -c "$py tools/bench_train.py --device cpu --backbone small_cnn --size 16 --steps 1 --warmup 1 --workers 0 --batch-size 2 --methods vicreg >>'$rows'"
  step "loader benchmark (tiny, cpu)" 120 bash -c "$py tools/bench_loader.py --objects 4 --views 2 --size 16 --batch-size 2 --workers 1 --content synthetic --cache warm --passes 1 >>'$rows'"
fi

say "done in $(( $(date +%s) - start ))s with $failures failed / cut step(s); rows: $rows"
cat "$rows" >&2
exit $(( failures > 0 ))
