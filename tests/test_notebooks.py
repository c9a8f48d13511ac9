"""The notebooks are the source: every one of them, tutorials included, must execute top to bottom."""
import os, pathlib, re, subprocess, sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def notebooks_nbdev_tests(nbs: pathlib.Path) -> list[str]:
    "The notebooks `nbdev-test` must run: every .ipynb under nbs/ outside hidden and `_` folders and `.notest` siblings."
    found = []
    for p in nbs.rglob("*.ipynb"):
        rel = p.relative_to(nbs).parts
        if any(part.startswith((".", "_")) for part in rel) or (p.parent / ".notest").exists(): continue
        found.append(p.name)
    return sorted(found)


def notebooks_timed(stdout: str) -> list[str]:
    "The notebooks `nbdev-test --timing` says it ran: one `NAME.ipynb: N secs` line each, after its `Success.`"
    return sorted(re.findall(r"^(\S+\.ipynb): \d+ secs$", stdout, flags=re.M))


def test_every_notebook_executes():
    nbdev_test = pathlib.Path(sys.executable).parent / "nbdev-test"
    env = {**os.environ, "G1TRACK_TUTORIAL": "tiny", "OMP_NUM_THREADS": "1"}   # tutorials at their tiny scale
    r = subprocess.run([str(nbdev_test), "--n-workers", "2", "--timing"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    expected = notebooks_nbdev_tests(ROOT / "nbs")
    assert "03_evaluate_and_deploy.ipynb" in expected and "03_env.ipynb" in expected and len(expected) >= 40
    assert notebooks_timed(r.stdout) == expected, r.stdout[-4000:]


def test_the_notebook_check_reads_what_nbdev_test_ran(tmp_path):
    # the check above compares what nbdev-test printed with the notebooks on disk: a notebook it skipped fails it
    (tmp_path / "a.ipynb").write_text("{}"); (tmp_path / "sub").mkdir(); (tmp_path / "sub" / "b.ipynb").write_text("{}")
    (tmp_path / ".ipynb_checkpoints").mkdir(); (tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_text("{}")
    assert notebooks_nbdev_tests(tmp_path) == ["a.ipynb", "b.ipynb"]
    assert notebooks_timed("Success.\nb.ipynb: 12 secs\na.ipynb: 3 secs\n") == ["a.ipynb", "b.ipynb"]
    assert notebooks_timed("Success.\na.ipynb: 3 secs\n") != notebooks_nbdev_tests(tmp_path)
