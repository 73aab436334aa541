"""The package outside its checkout: a built wheel runs the pipeline from a fresh venv; two checkouts, each with
its own thin venv (tools/setup_env.sh), run their own code at the same time; configs and py.typed ship."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SOURCE = ("pyproject.toml", "README.md", "requirements.lock", "ssl_eq", "tools/setup_env.sh")


def shared_venv() -> Path:
    """The venv holding the locked wheels (torch and the rest), whichever venv runs this test."""
    import torch

    venv = Path(torch.__file__).resolve().parents[4]  # <venv>/lib/python3.X/site-packages/torch/__init__.py
    assert (venv / "pyvenv.cfg").is_file(), f"torch is not installed in a venv: {venv}"
    return venv


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH (which would put this checkout first) or a venv activation."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env.update(extra)
    return env


def copy_checkout(dest: Path) -> Path:
    """The files a checkout needs to build and install (what a clone has), without caches or build outputs."""
    for name in SOURCE:
        src, dst = REPO / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    return dest


def site_packages(venv: Path) -> Path:
    return venv / Path(sysconfig.get_paths()["purelib"]).relative_to(sys.prefix)


def thin_venv(venv: Path) -> Path:
    """A venv without pip or wheels whose path includes the shared site-packages (what setup_env.sh makes)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site_packages(venv) / "_ssl_eq_shared.pth").write_text(f"{site_packages(shared_venv())}\n")
    return venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel --no-deps --no-build-isolation` builds from a copy of this checkout (seconds, offline)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = copy_checkout(tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp / "dist"), str(build)], check=True, env=clean_env())
    shutil.rmtree(build)  # nothing of a checkout is left to import from
    (path,) = (tmp / "dist").glob("ssl_eq-*.whl")
    return path


def test_the_wheel_ships_configs_and_py_typed(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    shipped = {n.removeprefix("ssl_eq/configs/") for n in names if n.startswith("ssl_eq/configs/")}
    in_repo = {str(p.relative_to(REPO / "ssl_eq" / "configs")) for p in (REPO / "ssl_eq" / "configs").rglob("*.yaml")}
    assert in_repo and shipped == in_repo
    assert "ssl_eq/py.typed" in names
    assert "Requires-Python: >=3.11" in meta
    assert {"Provides-Extra: render", "Provides-Extra: slurm", "Provides-Extra: test"} <= set(meta.splitlines())
    assert 'easypytorch3d==0.7.9.post1; extra == "render"' in meta


def test_wheel_in_a_fresh_venv_runs_render_pretrain_probe_orbit_report_outside_the_checkout(wheel, tmp_path):
    venv = thin_venv(tmp_path / "venv")
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check",
                    str(wheel)], check=True, env=clean_env())
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(SSL_EQ_CONFIG_DIR="")  # the configs must come from the installed package

    def ssl_eq(*argv: str) -> str:
        out = subprocess.run([str(venv / "bin" / "ssl-eq"), *argv], cwd=work, env=env, capture_output=True,
                             text=True)
        assert out.returncode == 0, f"ssl-eq {' '.join(argv)}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    where = subprocess.run([py, "-c", "import ssl_eq, ssl_eq.config as c; print(ssl_eq.__file__); "
                            "print(c.config_dir())"], cwd=work, env=env, capture_output=True, text=True, check=True)
    module, configs = where.stdout.split()
    assert Path(module).is_relative_to(venv) and Path(configs).is_relative_to(venv)
    assert "experiment" in ssl_eq("pretrain", "--help")  # the config groups, read from the installed configs
    ssl_eq("render", "--out", "data", "--objects", "4", "--views", "2", "--size", "16", "--device", "cpu",
           "--val-fraction", "0.5", "--no-progress", "--no-preview")
    assert "4 objects x 2 views" in ssl_eq("dataset", "info", "data")
    ssl_eq("pretrain", "experiment=demo_sie", "data.root=data", "run_dir=run", "trainer.max_steps=2",
           "data.batch_size=2", "trainer.enable_progress_bar=false")
    ssl_eq("probe", "run", "--probes", "linear,rotation", "--epochs", "1")
    assert json.loads((work / "run" / "probe" / "probe.json").read_text())["probes"]["linear"]["status"] == "ok"
    ssl_eq("orbit", "run", "--out", "orbits", "--latent", "rot_z", "--steps", "3", "--objects", "2",
           "--device", "cpu")
    orbits = json.loads((work / "run" / "orbit" / "orbit.json").read_text())["orbits"]
    assert [o["latent"] for o in orbits.values()] == ["rot_z"]
    ssl_eq("report", "run", "--out", "report")
    assert "run" in (work / "report" / "report.md").read_text()
    assert "--methods" in ssl_eq("demo", "--help")


def test_two_checkouts_run_their_own_code_at_the_same_time(tmp_path):
    shared = shared_venv()
    assert (shared / ".complete").is_file(), f"{shared} was not made by tools/setup_env.sh (no .complete)"
    root = tmp_path / "env_root"  # the shared venv under a root of its own: the test never writes into it
    root.mkdir()
    lock_hash = hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()[:12]
    (root / f"venv-{lock_hash}").symlink_to(shared)
    before = sorted(p.name for p in site_packages(shared).iterdir())
    clones = {}
    for name in ("a", "b"):
        clone = copy_checkout(tmp_path / name)
        cli = clone / "ssl_eq" / "cli.py"
        cli.write_text(cli.read_text().replace('description="Invariant', f'description="[clone {name}] Invariant'))
        clones[name] = clone
    env = clean_env(SSL_EQ_ENV_ROOT=str(root))
    setups = {n: subprocess.Popen(["bash", str(c / "tools" / "setup_env.sh")], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for n, c in clones.items()}
    venvs = {}
    for name, proc in setups.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        venvs[name] = Path(out.strip())
        assert venvs[name] == clones[name] / ".venv"
    # both at once, from a folder that is neither checkout
    runs = {n: subprocess.Popen([str(v / "bin" / "ssl-eq"), "--help"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                text=True) for n, v in venvs.items()}
    imports = {n: subprocess.Popen([str(v / "bin" / "python"), "-c", "import ssl_eq, torch; print(ssl_eq.__file__)"],
                                   cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) for n, v in venvs.items()}
    for name, other in (("a", "b"), ("b", "a")):
        help_text = runs[name].communicate(timeout=300)[0]
        assert f"[clone {name}]" in help_text and f"[clone {other}]" not in help_text
        assert Path(imports[name].communicate(timeout=300)[0].strip()) == clones[name] / "ssl_eq" / "__init__.py"
    assert sorted(p.name for p in site_packages(shared).iterdir()) == before  # nothing installed into the shared venv
    # a second call reuses the thin venv as it is
    stamp = venvs["a"] / ".ssl_eq-env"
    mtime = stamp.stat().st_mtime_ns
    again = subprocess.run(["bash", str(clones["a"] / "tools" / "setup_env.sh")], env=env, capture_output=True,
                           text=True, check=True)
    assert Path(again.stdout.strip()) == venvs["a"] and stamp.stat().st_mtime_ns == mtime


def test_an_editable_ssl_eq_in_the_shared_venv_stays_invisible(tmp_path):
    """Shared venvs made by the earlier setup_env.sh hold an editable ssl_eq (a .pth running a finder): the thin
    venv adds the shared folder as a plain path, so that .pth never runs and this checkout's code is imported."""
    fake_shared = tmp_path / "shared" / "site-packages"
    other = tmp_path / "other_checkout" / "ssl_eq"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("WHO = 'other checkout'\n")
    fake_shared.mkdir(parents=True)
    (fake_shared / "__editable__.ssl_eq-0.1.0.pth").write_text(f"import sys; sys.path.insert(0, {str(other.parent)!r})\n")
    venv = tmp_path / "thin"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site_packages(venv) / "_ssl_eq_shared.pth").write_text(f"{fake_shared}\n")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.path)"], cwd=tmp_path,
                         env=clean_env(), capture_output=True, text=True, check=True).stdout
    assert str(fake_shared) in out and str(other.parent) not in out


def test_setup_env_never_replaces_a_venv_it_did_not_make(tmp_path):
    clone = copy_checkout(tmp_path / "clone")
    (clone / ".venv").mkdir()
    (clone / ".venv" / "mine.txt").write_text("the user's own venv")
    root = tmp_path / "env_root"
    root.mkdir()
    lock_hash = hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()[:12]
    (root / f"venv-{lock_hash}").symlink_to(shared_venv())
    out = subprocess.run(["bash", str(clone / "tools" / "setup_env.sh")], env=clean_env(SSL_EQ_ENV_ROOT=str(root)),
                         capture_output=True, text=True)
    assert out.returncode == 1 and "was not made by tools/setup_env.sh" in out.stderr
    assert (clone / ".venv" / "mine.txt").read_text() == "the user's own venv"
