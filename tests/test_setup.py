"""Two commands from a fresh clone (`bash train.sh`, `bash test.sh`, both through `tools/setup.sh`), headless
rendering without OpenGL, and the threads a run starts (its share of the CPUs). Fast: stand-in pythons record what
the scripts would run; nothing is installed or trained."""
import os, re, shutil, subprocess, sys, time, pathlib
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# ---- tools/setup.sh in a scratch checkout, with a stand-in virtualenv python that logs pip calls ----

FAKE_VENV_PY = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 0; fi
if [ "$1" = "-c" ] && [ -z "$2" ]; then exit 0; fi                       # "does the python run?"
if [ "$1" = "-c" ]; then case "$2" in *g1track.__version__*) echo "g1track 0.1.0, torch x, mujoco y";; esac; exit "${FAKE_C_RC:-0}"; fi
exit 0
"""


def scratch_checkout(tmp_path):
    "A folder with tools/setup.sh, a pyproject.toml and a .venv whose python is the stand-in."
    root = tmp_path / "repo"
    (root / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools/setup.sh", root / "tools/setup.sh")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    py = root / ".venv/bin/python"
    py.parent.mkdir(parents=True)
    py.write_text(FAKE_VENV_PY); py.chmod(0o755)
    return root


def run_setup(root, tmp_path, gpu=False, **env_vars):
    log, bin_dir = tmp_path / "calls.log", tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    if gpu: smi.write_text("#!/usr/bin/env bash\necho 'GPU 0: NVIDIA H200 (UUID: GPU-x)'\n"); smi.chmod(0o755)
    elif smi.exists(): smi.unlink()
    if log.exists(): log.unlink()
    path = f"{bin_dir}:" + ":".join(p for p in os.environ["PATH"].split(":") if not (pathlib.Path(p) / "nvidia-smi").exists())
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TORCH_")}, "PATH": path, "FAKE_LOG": str(log), **env_vars}
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(root / "tools/setup.sh")], env=env, capture_output=True, text=True, timeout=120)
    return r, (log.read_text().splitlines() if log.exists() else []), time.perf_counter() - t0


def test_setup_installs_torch_for_the_machine_then_the_project_and_the_second_call_starts_at_once(tmp_path):
    root = scratch_checkout(tmp_path)
    r, calls, _ = run_setup(root, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(root / ".venv/bin/python")                   # stdout: the python path alone
    pips = [c for c in calls if c.startswith("-m pip install")]
    torch_call = next(c for c in pips if "torch==" in c)
    assert "torch==2.13.0" in torch_call and "no NVIDIA GPU" in r.stderr and "CPU build" in r.stderr
    assert pips.index(torch_call) < next(i for i, c in enumerate(pips) if f"-e {root}[dev]" in c)   # torch first
    assert (root / ".venv/.g1track-setup").exists() and "ready in" in r.stderr
    r, calls, seconds = run_setup(root, tmp_path)                             # everything is there
    assert r.returncode == 0 and r.stdout.strip() == str(root / ".venv/bin/python")
    assert not any("pip" in c for c in calls) and r.stderr == "" and seconds < 5
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")   # a changed project installs again
    r, calls, _ = run_setup(root, tmp_path)
    assert r.returncode == 0 and any(f"-e {root}[dev]" in c for c in calls)


def test_setup_asks_for_the_cuda_build_where_nvidia_smi_sees_a_gpu(tmp_path):
    root = scratch_checkout(tmp_path)
    r, calls, _ = run_setup(root, tmp_path, gpu=True)
    assert r.returncode == 0, r.stderr
    torch_call = next(c for c in calls if "torch==" in c)
    assert "--index-url" not in torch_call and "CUDA build" in r.stderr       # PyPI's Linux wheel: the CUDA build
    r, calls, _ = run_setup(root, tmp_path, gpu=True, TORCH_INDEX_URL="https://example.invalid/cu126")
    assert "--index-url https://example.invalid/cu126" in next(c for c in calls if "torch==" in c)


def test_setup_says_in_one_sentence_when_the_project_does_not_import(tmp_path):
    root = scratch_checkout(tmp_path)
    r, _, _ = run_setup(root, tmp_path, FAKE_C_RC="1")
    assert r.returncode != 0 and not (root / ".venv/.g1track-setup").exists()
    assert r.stderr.strip().splitlines()[-1].startswith("== setup: ") and "does not import" in r.stderr


# ---- train.sh and test.sh with a stand-in python: what they would run ----

FAKE_PY = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then
  case "$2" in *GLContext*) exit "${FAKE_GL:-0}";; *device_count*) echo 1; exit 0;; *) exit 1;; esac   # no GPU
fi
echo "$*" >> "$FAKE_LOG"
"""


def run_script(tmp_path, script, *args, **env_vars):
    fake, log = tmp_path / "fakepy", tmp_path / "calls.log"
    fake.write_text(FAKE_PY); fake.chmod(0o755)
    if log.exists(): log.unlink()
    env = {**os.environ, "PYTHON": str(fake), "FAKE_LOG": str(log), "RUN_DIR": str(tmp_path / "runs"), **env_vars}
    r = subprocess.run(["bash", str(ROOT / script), *args], env=env, capture_output=True, text=True, timeout=60)
    return r, (log.read_text().splitlines() if log.exists() else [])


def test_train_sh_without_offscreen_opengl_names_the_packages_and_runs_everything_but_the_video(tmp_path):
    r, calls = run_script(tmp_path, "train.sh", "task.num_envs=8", FAKE_GL="1", RUN="nogl")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if "OpenGL" in l]
    assert len(lines) == 1 and "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6" in lines[0]
    assert "no video" in lines[0] and lines[0].count(". ") == 0
    evals = [c for c in calls if c.startswith("-m g1track.eval")]
    assert len([c for c in calls if c.startswith("-m g1track.train")]) == 3 and len(evals) == 2
    assert all(" -p" not in c for c in evals) and any("--export" in c for c in evals)
    r, calls = run_script(tmp_path, "train.sh", FAKE_GL="0", RUN="gl")                 # with OpenGL: the video
    assert r.returncode == 0 and "OpenGL" not in r.stdout
    assert any(" -p " in c and "--export" in c for c in calls if c.startswith("-m g1track.eval"))


def test_train_sh_probe_fails_for_a_gl_backend_that_cannot_load():
    "The probe train.sh runs, with the real python: a backend that does not exist is reported as no OpenGL."
    probe = re.search(r"GL_PROBE='(.*?)'\n", (ROOT / "train.sh").read_text(), re.S).group(1)
    r = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "MUJOCO_GL": "nosuchgl"}, capture_output=True, timeout=120)
    assert r.returncode != 0


def test_test_sh_runs_pytest_quietly_with_the_arguments_given(tmp_path):
    r, calls = run_script(tmp_path, "test.sh", "tests/test_sim.py", "-x")
    assert r.returncode == 0, r.stderr
    assert calls == ["-m pytest -q tests/test_sim.py -x"]


def test_readme_quick_start_is_two_commands_and_ci_runs_the_same_setup():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", text, re.S).group(1)
    assert [l.split("#")[0].strip() for l in block.strip().splitlines()] == ["bash train.sh", "bash test.sh"]
    assert re.search(r"<!-- test-command -->\n```bash\nbash test.sh\n```", text)
    ci = (ROOT / ".ci/run").read_text()
    assert "bash tools/setup.sh" in ci and "pip install" not in ci


# ---- threads: a run's share of the CPUs ----

@pytest.fixture(autouse=True)
def no_other_trainers(monkeypatch, tmp_path_factory):
    "Each test sees its own empty register of training processes, not the machine's."
    import g1track.sim
    monkeypatch.setattr(g1track.sim, "CLAIMS_DIR", tmp_path_factory.mktemp("claims"))


def _other_trainer(folder):
    "A second training process, as far as the register knows: a child that claims its CPUs and waits to be killed."
    code = f"import g1track.sim as s, time; s.claim_cpus({str(folder)!r}); print('ready', flush=True); time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def test_trainers_side_by_side_share_the_cpus_and_a_killed_ones_share_comes_back(monkeypatch):
    "Two runs started side by side each take half the cores (before: all of them each, ~8 % of their alone speed)."
    import g1track.sim as sim
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})      # the child's real CPUs overlap these
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False); monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    folder = sim.CLAIMS_DIR
    assert sim.cpu_share() == 4
    me = sim.claim_cpus()
    try:
        assert me.exists() and sim.sharers() == 1 and sim.cpu_share() == 4
        other = _other_trainer(folder)
        assert sim.sharers() == 2 and sim.cpu_share() == 2
        other.kill(); other.wait()                                  # kill -9: it cannot clean up; its lock goes with it
        assert sim.cpu_share() == 4 and sorted(p.name for p in folder.glob("*.cpus")) == [me.name]
        (folder / "999999.cpus").write_text("0 1")                  # a file nobody holds (a crash before this code ran)
        assert sim.cpu_share() == 4 and not (folder / "999999.cpus").exists()
    finally:
        sim.release_cpus()
    assert not me.exists() and not sim.claimed()
    assert sim.cpu_share() == 4                                     # an unregistered process counts itself


def test_a_running_stage_shrinks_its_threads_while_another_trainer_runs(monkeypatch):
    import torch
    import g1track.sim as sim
    from g1track.config import compose
    from g1track.env import TrackingEnv
    from g1track.modules import TrackingPolicy
    from g1track.stages import StageRunner
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False); monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = compose(["+exp=train", "+preset=cpu_track", "task.num_envs=4", "algo.train_every=4", "total_frames=1000",
                   "task.motions=[builtin:stand]"])
    sim.claim_cpus()
    env = TrackingEnv(cfg.task, num_envs=4)
    try:
        runner = StageRunner(env, TrackingPolicy(env.obs_dims, env.nj, cfg.policy), cfg, generator=torch.Generator().manual_seed(0))
        assert env.sim.nthread == 2 and runner.update_threads == 2
        other = _other_trainer(sim.CLAIMS_DIR)
        runner.iteration(0)                                         # it asks at the start of every iteration
        assert env.sim.nthread == 1 and runner.update_threads == 1
        other.kill(); other.wait()
        runner.iteration(1)
        assert env.sim.nthread == 2 and runner.update_threads == 2
    finally:
        env.close(); sim.release_cpus()

def test_cpu_share_is_the_affinity_over_the_ranks_of_this_machine(monkeypatch):
    from g1track.sim import cpu_share
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False); monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_share() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2"); assert cpu_share() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8"); assert cpu_share() == 1           # never 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})                  # taskset -c 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE"); assert cpu_share() == 1


def test_a_thread_limit_the_user_set_caps_the_share(monkeypatch):
    "OMP_NUM_THREADS=1 (what the notebook test sets for its two parallel kernels) keeps MuJoCo and the update to one thread."
    from g1track.sim import cpu_share
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1"); assert cpu_share() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "8"); assert cpu_share() == 4             # a cap, never more than the affinity
    monkeypatch.setenv("OMP_NUM_THREADS", ""); assert cpu_share() == 4              # unset or empty: no cap
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2"); monkeypatch.setenv("OMP_NUM_THREADS", "1"); assert cpu_share() == 2   # torchrun's own 1


def test_mujoco_threads_and_update_threads_follow_the_share_of_each_rank(monkeypatch, g1_physics):
    "Two ranks on 2 CPUs: one MuJoCo thread and one update thread each (before: 2 MuJoCo threads each, 4 on 2 cores)."
    from omegaconf import OmegaConf
    from g1track.sim_factory import make_sim
    from g1track.stages import update_threads
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with make_sim(g1_physics, 2, backend="mujoco") as sim: assert sim.nthread == 1
    assert update_threads(OmegaConf.create({"update_threads": None}), "cpu") == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with make_sim(g1_physics, 2, backend="mujoco") as sim: assert sim.nthread == 2
    assert update_threads(OmegaConf.create({"update_threads": None}), "cpu") == 2
    assert update_threads(OmegaConf.create({"update_threads": 3}), "cpu") == 3     # an explicit setting wins
    with make_sim(g1_physics, 2, backend="mujoco", nthread=3) as sim: assert sim.nthread == 3
