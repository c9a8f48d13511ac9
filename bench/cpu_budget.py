"""Where a CPU training iteration's time goes, and the best `vs_physics` (bench/learn.py) this machine allows for it.

One stage-1 iteration of a preset (default `cpu_track`: 256 envs x 24 steps) is taken apart, each part timed alone on an
otherwise idle machine (medians of `--repeats`):
- the rollout: its MuJoCo C calls (as training makes them, `task.sim.nthread` threads) and everything else (observations,
  rewards, FK, resets, the policy: Python and torch on one thread);
- the same MuJoCo C calls redone on one thread (their CPU-seconds);
- the PPO update and the adapt_module update (torch on all CPUs of the process, then on one thread: their CPU-seconds),
  and, for information, the same update under bfloat16 autocast;
- with `--compile-fk`: the env's forward kinematics eager and under `torch.compile`, and the compilation's own time.
The bound: if every core were busy for the whole iteration, it would last (CPU-seconds of all parts) / cores, and
`vs_physics` = (physics wall at training's threads) / that. No overlap of collection, update or halves of the envs can
beat it without taking CPU-seconds out of one of the parts.

    python bench/cpu_budget.py [--preset cpu_track] [--envs N] [--repeats 3] [--compile-fk]
The last line: `physics_s=.. rest_s=.. update_s=.. cpu_s=.. iteration_s=.. vs_physics=.. bound_vs_physics=..`.
"""
import argparse, os, pathlib, statistics, sys, time
import numpy as np
import torch

shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if shared.is_dir(): os.environ.setdefault("MENAGERIE_ROOT", str(shared))

from mujoco import rollout as mj_rollout
from g1track.config import compose
from g1track.env import TrackingEnv
from g1track.modules import TrackingPolicy, actor_columns
from g1track.ppo import PPO, RolloutStorage, collect_rollout
from g1track.runs import layout_of
from g1track.sim import cpu_share


class Calls:
    "Times the env's `mujoco.rollout` calls and keeps their inputs, so they can be redone on another thread count."
    def __init__(self, sim):
        self.sim, self.seconds, self.recorded = sim, 0.0, []
        original = sim._rollout.rollout
        def timed(models, datas, initial_state, control, **kw):
            self.recorded.append((list(models), initial_state.copy(), control.copy(), kw.get("control_spec")))
            t = time.perf_counter(); out = original(models, datas, initial_state, control, **kw)
            self.seconds += time.perf_counter() - t
            return out
        sim._rollout.rollout = timed

    def redo(self, nthread: int) -> float:
        "Seconds for MuJoCo C to redo the recorded calls on `nthread` threads, nothing in between."
        sim, pool = self.sim, mj_rollout.Rollout(nthread=nthread)
        import mujoco
        datas = [mujoco.MjData(sim.model) for _ in range(nthread)]
        total = 0.0
        for models, state, ctrl, spec in self.recorded:
            out = np.empty((len(state), sim.decimation, sim._nstate)); sens = np.empty((len(state), sim.decimation, sim.nsensordata))
            t = time.perf_counter()
            pool.rollout(models, datas, state, ctrl, control_spec=spec, skip_checks=True, nstep=sim.decimation, state=out,
                         sensordata=sens, initial_warmstart=None, chunk_size=None)
            total += time.perf_counter() - t
        pool.close()
        return total


def update_seconds(ppo, storage, threads: int, bf16: bool = False) -> float:
    "One stage-1 update (PPO on the teacher, encoder and critic; MSE on adapt_module) with `threads` torch threads."
    before = torch.get_num_threads(); torch.set_num_threads(threads)
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ppo.ppo_update(storage, "teacher", ["actor_teacher", "encoder_priv", "critic"], 0.005, None, latent_reg=0.5)
        ppo.adapt_update(storage)
    d = time.perf_counter() - t
    torch.set_num_threads(before)
    return d


def fk_milliseconds(env, compile_: bool, calls: int = 50) -> tuple[float, float]:
    "(ms per call, s to build) of the env's forward kinematics of all envs with velocities, eager or compiled."
    qpos, qvel = env.sim.qpos.clone(), env.sim.qvel.clone()
    t = time.perf_counter()
    fk = torch.compile(env.fk.forward, dynamic=False) if compile_ else env.fk
    fk(qpos, qvel); built = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(calls): fk(qpos, qvel)
    return 1e3 * (time.perf_counter() - t) / calls, built


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu_track")
    ap.add_argument("--envs", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile-fk", action="store_true", help="also time torch.compile of the forward kinematics (~1 min to compile)")
    a = ap.parse_args()
    cfg = compose(["task=G1/G1_tracking", "+exp=train", f"+preset={a.preset}", "task.motions=[builtin:squat]",
                   *([f"task.num_envs={a.envs}"] if a.envs else [])])
    cores = cpu_share()
    env = TrackingEnv(cfg.task)
    policy = TrackingPolicy(env.obs_dims, env.nj, cfg.policy, actor_columns(layout_of(env)["policy"], cfg.policy))
    storage = RolloutStorage(int(cfg.algo.train_every), env.num_envs, env.obs_dims, env.nj, env.device)
    policy.set_trainable(["actor_teacher", "encoder_priv", "critic", "adapt_module"])
    ppo = PPO(policy, cfg.algo)
    frames = storage.T * env.num_envs
    obs = collect_rollout(env, policy, storage, env.reset(), update_stats=True)            # warm-up
    calls = Calls(env.sim)
    rows = []
    for _ in range(a.repeats):
        calls.seconds, calls.recorded = 0.0, []
        t = time.perf_counter(); obs = collect_rollout(env, policy, storage, obs, update_stats=True); wall = time.perf_counter() - t
        one = calls.redo(1)
        rows.append(dict(collect=wall, physics=calls.seconds, rest=wall - calls.seconds, physics_1thread=one,
                         update=update_seconds(ppo, storage, cores), update_1thread=update_seconds(ppo, storage, 1),
                         update_bf16=update_seconds(ppo, storage, cores, bf16=True)))
    m = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    cpu_s = m["physics_1thread"] + m["rest"] + m["update_1thread"]
    iteration = m["collect"] + m["update"]
    print(f"{a.preset}: {env.num_envs} envs x {storage.T} steps = {frames} frames per iteration, {cores} cores, "
          f"MuJoCo C on {env.sim.nthread} threads; medians of {a.repeats}")
    print(f"rollout {m['collect']:.2f} s = MuJoCo C {m['physics']:.2f} s + the rest (observations, rewards, FK, resets, policy) {m['rest']:.2f} s")
    print(f"update {m['update']:.2f} s on {cores} threads, {m['update_1thread']:.2f} s on 1; under bfloat16 autocast {m['update_bf16']:.2f} s")
    if a.compile_fk:
        (eager, _), (compiled, built) = fk_milliseconds(env, False), fk_milliseconds(env, True)
        print(f"forward kinematics of {env.num_envs} envs: {eager:.2f} ms eager, {compiled:.2f} ms compiled ({built:.0f} s to compile)")
    print(f"CPU-seconds: physics {m['physics_1thread']:.2f} (its calls redone on one thread), the rest {m['rest']:.2f}, "
          f"update {m['update_1thread']:.2f}; all {cpu_s:.2f} on {cores} cores")
    print(f"physics_s={m['physics']:.2f} rest_s={m['rest']:.2f} update_s={m['update']:.2f} cpu_s={cpu_s:.2f} iteration_s={iteration:.2f} "
          f"vs_physics={m['physics'] / iteration:.2f} bound_vs_physics={m['physics'] / (cpu_s / cores):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
