#!/usr/bin/env bash
# Create (once) and reuse a virtualenv outside the clone, keyed by the lock file's hash,
# then (re)install this checkout into it in editable mode. Prints the venv path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null || py=python3
hash=$(cat "$here/requirements.lock" | sha256sum | cut -c1-12)
root=${SSL_EQ_ENV_ROOT:-$HOME/.cache/ssl_eq}
venv="$root/venv-$hash"
mkdir -p "$root"
exec 9>"$root/.lock"; flock 9   # one creator at a time (parallel CI jobs, several clones)
if [ ! -f "$venv/.complete" ]; then
  echo "[setup] creating $venv (first run downloads torch+CUDA wheels, a few minutes)" >&2
  rm -rf "$venv.tmp"
  "$py" -m venv "$venv.tmp"
  # the machine-wide pip constraint file caps torch at a newer CPU build; our lock is explicit
  PIP_CONSTRAINT= "$venv.tmp/bin/python" -m pip install -q --upgrade pip >&2
  PIP_CONSTRAINT= "$venv.tmp/bin/python" -m pip install -q -r "$here/requirements.lock" >&2
  rm -rf "$venv"; mv "$venv.tmp" "$venv"
  # venv scripts embed their path: rewrite the shebangs after the move
  sed -i "s#$venv.tmp#$venv#g" "$venv"/bin/* 2>/dev/null || true
  touch "$venv/.complete"
fi
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here" >&2
echo "$venv"
