"""The notebooks are the source: every one of them, tutorials included, must execute top to bottom."""
import os, pathlib, subprocess, sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_notebook_executes():
    nbdev_test = pathlib.Path(sys.executable).parent / "nbdev-test"
    env = {**os.environ, "G1TRACK_TUTORIAL": "tiny", "OMP_NUM_THREADS": "1"}   # tutorials at their tiny scale
    r = subprocess.run([str(nbdev_test), "--n-workers", "2", "--timing"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    ran = sorted(p.name for p in (ROOT / "nbs").rglob("*.ipynb"))
    assert "03_evaluate_and_deploy.ipynb" in ran and "03_env.ipynb" in ran
