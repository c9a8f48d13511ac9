"""The benchmark scripts' own logic (not their timings): what bench/track_real.py waits for is what training writes."""
import importlib.util, pathlib
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("iterations,points", [(245, 3), (245, 5), (7, 5), (3, 5), (1, 1), (1000, 4), (82, 3)])
def test_track_real_evaluates_exactly_the_checkpoints_training_writes(iterations, points):
    "Training saves every `save_every` iterations and at the last one; a mark anywhere else is waited for forever."
    save_every, marks = _load("track_real").plan_points(iterations, points)
    written = {i for i in range(1, iterations + 1) if i % save_every == 0 or i == iterations}
    assert set(marks) <= written and marks[-1] == iterations and marks == sorted(set(marks))
    assert len(marks) == min(points, iterations)


def test_track_real_with_a_time_budget_evaluates_where_training_stopped(tmp_path, motions_dir):
    "--minutes stops training early (time_limit_s); the last checkpoint written is evaluated and the contract line printed."
    import re, subprocess, sys
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "track_real.py"), "--frames", "300:330", "--minutes", "0.02",
                          "--budget", "1e6", "--points", "3", "--robust_episodes", "1", "--out", str(tmp_path),
                          "task.num_envs=4", "algo.train_every=4", "algo.num_minibatches=2", "policy.actor=[16]",
                          "policy.critic=[16]", "policy.encoder_priv=[16]", "policy.adapt_module=[16]"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"final nominal_success=\d\.\d\d robust_success=\d\.\d\d mpkpe_mm=[\d.]+ r_mpkpe_mm=[\d.]+ frames=\d+ "
                        r"wall_s=\d+", last), last
    frames = int(re.search(r"frames=(\d+)", last).group(1))
    assert 0 < frames < 1_000_000                                       # stopped by the clock, not by the budget
    assert "time_limit_s=1.2 reached" in (tmp_path / "train.log").read_text()


def test_side_by_side_starts_a_run_alone_then_two_at_once_and_prints_its_contract_line():
    import re, subprocess, sys
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "side_by_side.py"), "--tiny", "--iterations", "4", "--skip", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("one run alone:") and lines[1].startswith("two runs side by side:")
    assert re.fullmatch(r"side_by_side=\d+\.\d\d alone_fps=\d+ pair_fps=\d+,\d+", lines[-1]), lines[-1]


def test_cpu_budget_takes_an_iteration_apart_and_prints_its_contract_line():
    import re, subprocess, sys
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_budget.py"), "--envs", "8", "--repeats", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    num = r"(\d+\.\d\d)"
    m = re.fullmatch(rf"physics_s={num} rest_s={num} update_s={num} cpu_s={num} iteration_s={num} vs_physics={num} "
                     rf"bound_vs_physics={num}", last)
    assert m, last
    physics, rest, update, cpu, iteration, ratio, bound = map(float, m.groups())
    assert physics > 0 and rest > 0 and update > 0 and 0 < ratio < 1 and bound > 0
    assert abs(iteration - (physics + rest + update)) <= 0.02          # the parts are the iteration
