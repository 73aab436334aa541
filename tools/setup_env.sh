#!/usr/bin/env bash
# One environment per checkout, the heavy part shared. Prints this checkout's venv path.
#  - shared: $SSL_EQ_ENV_ROOT/venv-<hash of requirements.lock> (default root ~/.cache/ssl_eq) holds the locked
#    wheels (torch, PyTorch3D, ...), created once per lock hash and reused by every clone and CI run; no
#    checkout is ever installed into it.
#  - per checkout: <checkout>/.venv, a thin venv (no pip, no wheels) whose `_ssl_eq_shared.pth` puts the shared
#    site-packages on its path, holding only this checkout's editable install and its `ssl-eq` script.
# The .pth adds the shared folder as a plain path: .pth files inside it are not run, so an editable ssl_eq that
# an older version of this script installed into the shared venv stays invisible here.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null || py=python3
hash=$(sha256sum < "$here/requirements.lock" | cut -c1-12)
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
exec 9>&-

thin="$here/.venv"
exec 8>"$here/.venv.lock"; flock 8   # two `make` calls in one checkout
shared_site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# what the thin venv was built from; any change (another lock, a moved checkout, new entry points) rebuilds it
stamp="$venv $here $(sha256sum < "$here/pyproject.toml" | cut -c1-12)"
if [ "$(cat "$thin/.ssl_eq-env" 2>/dev/null)" != "$stamp" ]; then
  if [ -e "$thin" ] && [ ! -f "$thin/.ssl_eq-env" ]; then
    echo "[setup] $thin exists and was not made by tools/setup_env.sh: move it away (it would be replaced)" >&2
    exit 1
  fi
  rm -rf "$thin"
  "$venv/bin/python" -m venv --without-pip "$thin"
  site=$("$thin/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$shared_site" > "$site/_ssl_eq_shared.pth"
  # pip and setuptools come from the shared site-packages; the install lands in the thin venv
  PIP_CONSTRAINT= PYTHONWARNINGS=ignore "$thin/bin/python" -m pip install -q --no-deps --no-build-isolation --no-index \
    --disable-pip-version-check -e "$here" >&2
  echo "$stamp" > "$thin/.ssl_eq-env"
fi
echo "$thin"
