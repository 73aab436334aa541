#!/usr/bin/env bash
# Create (once) a SEPARATE virtualenv holding Blender as a Python module (`bpy`, ~400 MB), used only by
# `tools/bench_render.py --blender` to time Cycles side by side with our renderer. Not part of
# requirements.lock on purpose. Prints the venv's python.
set -euo pipefail
BPY_VERSION=5.0.1            # the Blender version that made tests/data/blender-3diebench
py=${PYTHON:-python3.11}     # bpy 5.0 wheels are cp311 only
root=${SSL_EQ_ENV_ROOT:-$HOME/.cache/ssl_eq}
venv="$root/venv-bench-bpy-$BPY_VERSION"
mkdir -p "$root"
exec 9>"$root/.lock-bpy"; flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "[setup] creating $venv (downloads the bpy==$BPY_VERSION wheel)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  PIP_CONSTRAINT= "$venv/bin/python" -m pip install -q "bpy==$BPY_VERSION" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
