"""Environment throughput against the raw physics ceiling, measured in the same run.

(a) ceiling: the same physics without the environment. MuJoCo C (`mujoco.rollout`, the env's per-env models,
    same substeps and thread count) redoes exactly the rollout calls the env made in (b) -- the same input
    states, including every reset and push, and the same PD targets -- with nothing but the call loop in
    between. Two simpler ceilings are printed too, and both run *different* physics than the env:
    (i) constant controls (each env's first target held, one C call): robots settle and the solver idles;
    (ii) the env's targets replayed open loop from its start state (one C call): no resets, so robots that
    fell stay down instead of restarting in fresh, contact-rich episodes, which cost the solver ~30 % more.
(b) full environment steps/s with random actions: `g1track.env.TrackingEnv.step` on the default task
    (observations, rewards, terminations, resets, domain randomization, pushes, action delay).

Both start from the same state and run the same horizon, interleaved `--repeats` times (the best of
each is kept: other processes share this machine). Also prints the per-step overhead of the `mujoco`
backend beyond its physics, and the `warp` backend's steps/s on the device it runs on (on a GPU: 4096
and 8192 envs and peak GPU memory).

    python bench/env_throughput.py [--envs 256] [--steps 50] [--repeats 3]

Target: ratio >= 0.6 on a 2-core machine. The last line is
    env_steps_per_s=<b> ceiling_steps_per_s=<a> ratio=<b/a>
"""
import argparse, os, pathlib, sys, time
import numpy as np
import torch

shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if shared.is_dir(): os.environ.setdefault("MENAGERIE_ROOT", str(shared))

import mujoco
from mujoco import rollout
from g1track.robot import load_g1
from g1track.sim_factory import make_sim
from g1track.config import task_cfg
from g1track.env import TrackingEnv


def ceiling(env, state0: np.ndarray, ctrl: np.ndarray) -> float:
    """(a) control steps/s of pure MuJoCo C on the env's own physics: its per-env models, from `state0`, applying
    `ctrl` [N, substeps, nu] open loop in one rollout call with the same threads: no Python per step."""
    sim = env.sim
    out = np.empty((sim.num_envs, ctrl.shape[1], sim._nstate))
    with rollout.Rollout(nthread=sim.nthread) as r:
        datas = [mujoco.MjData(sim.model) for _ in range(sim.nthread)]
        t0 = time.perf_counter()
        r.rollout(sim._models, datas, state0, ctrl, state=out)
        return sim.num_envs * ctrl.shape[1] / sim.decimation / (time.perf_counter() - t0)


def random_targets(g1, envs, gen, device):
    "PD targets of uniform random actions in [-1, 1]: q* = q_default + scale * a."
    a = torch.rand(envs, g1.nj, generator=gen, device=device) * 2 - 1
    return torch.as_tensor(g1.default_joint_pos, dtype=torch.float32, device=device) + \
        torch.as_tensor(g1.action_scale, dtype=torch.float32, device=device) * a


def make_env(envs: int, backend: str = "mujoco", device: str = "cpu", warmup: int = 20) -> TrackingEnv:
    "The default task (randomization, pushes, resets), warmed up with random actions so its robots are mid-episode."
    env = TrackingEnv(task_cfg(), num_envs=envs, backend=backend, device=device)
    env.bench_gen = torch.Generator(device=env.device).manual_seed(0)
    for _ in range(warmup): env.step(random_action(env))          # (Warp compiles here)
    return env


def random_action(env) -> torch.Tensor:
    return torch.rand(env.num_envs, env.g1.nj, generator=env.bench_gen, device=env.device) * 2 - 1


def env_rate(env, steps: int) -> tuple:
    """(b) control steps/s of the full `TrackingEnv.step` with uniform random actions in [-1, 1]; also what the env
    handed MuJoCo: the start state, the PD targets it applied, and the inputs of every rollout call it made."""
    sync = torch.cuda.synchronize if env.device.type == "cuda" else (lambda: None)
    sim = env.sim
    state0 = sim._state.copy() if hasattr(sim, "_state") else None
    calls, applied = [], []
    if state0 is not None:                       # record each call's inputs (a ~0.1 ms copy, inside the timing)
        original = sim._rollout.rollout
        def recording(models, datas, initial_state, control, **kw):
            calls.append((initial_state.copy(), control.copy()))
            return original(models, datas, initial_state, control, **kw)
        sim._rollout.rollout = recording
    sync()
    t0 = time.perf_counter()
    for _ in range(steps): env.step(random_action(env))
    sync()
    rate = env.num_envs * steps / (time.perf_counter() - t0)
    if state0 is not None: sim._rollout.rollout = original
    applied = np.concatenate([c for _, c in calls], axis=1) if calls else None
    return rate, state0, applied, calls


def same_work(env, calls) -> float:
    """Control steps/s of MuJoCo C redoing exactly the env's rollout calls (same models, input states including
    every reset and push, same controls, same per-call substeps), with nothing but the call loop in between."""
    sim = env.sim
    out, sens = np.empty_like(sim._out), np.empty_like(sim._sens_out)
    t0 = time.perf_counter()
    for state, ctrl in calls:
        sim._rollout.rollout(sim._models, sim._datas, state, ctrl, skip_checks=True, nstep=sim.decimation,
                             state=out, sensordata=sens, initial_warmstart=None, chunk_size=None)
    return sim.num_envs * len(calls) / (time.perf_counter() - t0)


def mujoco_overhead(sim, g1, steps: int) -> tuple[float, float]:
    "(ms per step in the rollout call, ms per step of everything else in `sim.step`) on the mujoco backend."
    inner, calls = [0.0], [0]
    original = sim._rollout.rollout
    def timed(*a, **k):
        t = time.perf_counter(); out = original(*a, **k); inner[0] += time.perf_counter() - t; calls[0] += 1
        return out
    sim._rollout.rollout = timed
    gen = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    for _ in range(steps): sim.step(random_targets(g1, sim.num_envs, gen, sim.device))
    total = time.perf_counter() - t0
    sim._rollout.rollout = original
    return 1e3 * inner[0] / steps, 1e3 * (total - inner[0]) / steps


def warp_rates(g1, steps: int):
    "Lines describing MuJoCo Warp's steps/s on the device it runs on."
    try:
        import warp  # noqa: F401
        import mujoco_warp  # noqa: F401
    except Exception as e:
        return [f"warp: not available ({type(e).__name__}: {e})"]
    lines = []
    if torch.cuda.is_available():
        for n in (4096, 8192):
            torch.cuda.synchronize(); free0, total = torch.cuda.mem_get_info()
            torch.cuda.reset_peak_memory_stats()
            env = make_env(n, backend="warp", device="cuda")
            rate = env_rate(env, steps)[0]
            env.close(); del env
            free1, _ = torch.cuda.mem_get_info()
            lines.append(f"warp device=cuda:{torch.cuda.current_device()} envs={n} env_steps_per_s={rate:.0f} "
                         f"gpu_mem_used_gib={(free0 - free1) / 2**30:.2f} torch_peak_gib={torch.cuda.max_memory_allocated() / 2**30:.2f} "
                         f"(of {total / 2**30:.0f})")
    else:
        n = 32
        env = make_env(n, backend="warp", device="cpu", warmup=3)
        lines.append(f"warp device=cpu envs={n} env_steps_per_s={env_rate(env, max(5, steps // 5))[0]:.0f} "
                     "(MuJoCo Warp on the CPU: a correctness path, not a fast one)")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50, help="control steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-warp", action="store_true")
    a = ap.parse_args()
    # The cores belong to MuJoCo's C threads. Torch ops on [256, ...] tensors gain nothing from intra-op
    # threads, and on a busy 2-core machine their spin-waiting makes them 100x slower (measured).
    torch.set_num_threads(1)
    g1 = load_g1(visual=False)
    env = make_env(a.envs)
    best_a = best_b = best_const = best_replay = 0.0
    for _ in range(a.repeats):          # interleaved, best of each: other processes share this machine
        rate, state0, applied, calls = env_rate(env, a.steps)
        best_b = max(best_b, rate)
        best_a = max(best_a, same_work(env, calls))
        best_replay = max(best_replay, ceiling(env, state0, applied))
        held = np.repeat(applied[:, :1], applied.shape[1], axis=1)            # each env's first target, held
        best_const = max(best_const, ceiling(env, state0, held))
    sim = make_sim(g1, a.envs, backend="mujoco", device="cpu")
    physics_ms, other_ms = mujoco_overhead(sim, g1, a.steps)
    sim.close(); env.close()
    print(f"cpus={len(os.sched_getaffinity(0))} nthread={sim.nthread} envs={a.envs} steps={a.steps} "
          f"decimation={g1.cfg.decimation} repeats={a.repeats}")
    print(f"ceiling, constant controls (each env's first PD target held, one C call; robots settle, the solver idles): "
          f"{best_const:.0f} steps/s, env/that = {best_b / best_const:.3f}")
    print(f"ceiling, the env's PD targets replayed open loop from its start state (one C call, no resets): "
          f"{best_replay:.0f} steps/s, env/that = {best_b / best_replay:.3f}")
    print(f"ceiling, the env's own rollout calls redone (same states incl. resets and pushes, same controls): "
          f"{best_a:.0f} steps/s, env/that = {best_b / best_a:.3f}  <- the environment's own cost")
    print(f"mujoco backend per step: physics (rollout call) {physics_ms:.2f} ms, everything else in sim.step "
          f"{other_ms:.2f} ms ({100 * other_ms / (physics_ms + other_ms):.1f} %)")
    if not a.no_warp:
        for line in warp_rates(g1, a.steps): print(line)
    print(f"env_steps_per_s={best_b:.0f} ceiling_steps_per_s={best_a:.0f} ratio={best_b / best_a:.3f}")
    return 0 if best_b / best_a >= 0.6 else 1


if __name__ == "__main__":
    sys.exit(main())
