"""Does the teacher learn, and how close to the physics does it train? Stage 1 on the built-in `squat` clip with the
CPU backend for a fixed frame budget.

Prints, before and after training, a fixed deterministic evaluation of the teacher (starts every 0.5 s
along the clip, no noise, no randomization, up to 4 s each): success rate (survived the 4 s or reached
the clip end), mean episode length and mean body-position error; then the training frames/s against two
references measured in the same run, after every training iteration, so that all three are timed under the same
machine load (other processes may share the cores) and their time is not counted as training time:
- env-only steps/s: a second env of the same task stepped alone with random actions for `--probe-steps` steps;
- the same-physics ceiling: MuJoCo C redoing the first `--physics-calls` rollout calls that the training env made in
  that iteration (its own per-env models, the same input states with every reset and push, the same PD targets),
  with nothing but the call loop in between (as `bench/env_throughput.py` measures it).
The last line ends with `ratio=R1 vs_physics=R2`: training frames/s over env-only steps/s, and over the
same-physics ceiling (everything the training adds to the physics: observations, rewards, the policy, the update).

    python bench/learn.py [--frames 2000000] [--preset cpu_demo] [--envs 128] [--probe-steps 4] [--physics-calls 4]
"""
import argparse, os, pathlib, sys, tempfile, time
import numpy as np
import torch

shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if shared.is_dir(): os.environ.setdefault("MENAGERIE_ROOT", str(shared))

from g1track.config import compose
from g1track.env import TrackingEnv
from g1track.modules import TrackingPolicy
from g1track.train import train

QUIET = ["task.randomization.enabled=false", "task.observations.noise.enabled=false", "task.reset.joint_pos=[0,0]",
         "task.reset.root_pos=[[0,0],[0,0],[0,0]]", "task.reset.root_rot=[[0,0],[0,0],[0,0]]",
         "task.reset.root_lin_vel=[[0,0],[0,0],[0,0]]", "task.reset.root_ang_vel=[[0,0],[0,0],[0,0]]"]


@torch.no_grad()
def evaluate(policy, task_cfg, horizon_s=4.0, every_s=0.5) -> dict:
    "Deterministic teacher from starts every `every_s` s along clip 0, each for up to `horizon_s` s."
    probe = TrackingEnv(task_cfg, num_envs=1)
    n_frames, dt = int(probe.motion.num_frames[0]), probe.dt
    starts = list(range(0, max(1, n_frames - int(1.0 / dt)), int(every_s / dt)))
    env = TrackingEnv(task_cfg, num_envs=len(starts), clips=None)
    env.reset()
    ids = torch.arange(env.num_envs)
    env.clip[:] = 0; env.frame[:] = torch.tensor(starts)
    env.sim.set_state(ids, env.motion.qpos(env.clip, env.frame), env.motion.qvel(env.clip, env.frame))
    env.target[:] = env.default_joint_pos; env.last_action[:] = 0; env._read_state()
    obs = env.observe()
    alive = torch.ones(env.num_envs, dtype=torch.bool)
    steps, err, success = torch.zeros(env.num_envs), torch.zeros(env.num_envs), torch.zeros(env.num_envs, dtype=torch.bool)
    for _ in range(int(horizon_s / dt)):
        action, _, _ = policy.act(obs, "teacher", deterministic=True, with_value=False)
        out = env.step(action)
        steps += alive; err += alive * env.body_pos_error
        success |= alive & out["truncated"]
        alive &= ~(out["terminated"] | out["truncated"])
        obs = out["obs"]
        if not alive.any(): break
    success |= alive
    return dict(success=success.float().mean().item(), length_s=(steps * dt).mean().item(),
                body_pos_error_cm=100 * (err.sum() / steps.sum()).item(), starts=len(starts))


class EnvOnly:
    """The same environment stepped alone with random actions, a few steps after every training iteration, so
    that it is timed under the same machine load as the training (other processes share the cores; a burst
    measured before or after the run alone gave ratios from 0.48 to 0.60 for the same code)."""
    def __init__(self, task_cfg, steps_per_iteration: int):
        self.env, self.k = TrackingEnv(task_cfg), int(steps_per_iteration)
        self.env.reset()
        for _ in range(5): self.step()
        self.seconds, self.steps = 0.0, 0

    def step(self): self.env.step(0.3 * torch.randn(self.env.num_envs, 29))

    def run(self):
        t0 = time.perf_counter()
        for _ in range(self.k): self.step()
        self.seconds += time.perf_counter() - t0; self.steps += self.k * self.env.num_envs

    @property
    def steps_per_s(self) -> float: return self.steps / self.seconds


class SamePhysics:
    """The physics ceiling of the training env itself: its first `calls` rollout calls of each iteration are recorded
    (inputs copied, ~0.1 ms each, inside the training's time), then redone by MuJoCo C after the iteration with nothing
    in between; control steps/s summed over the run."""
    def __init__(self, calls: int):
        self.k, self.sim, self.recorded, self.seconds, self.steps = int(calls), None, [], 0.0, 0

    def attach(self, sim) -> None:
        "Record the rollout calls of `sim` (once: the training env's simulator)."
        if self.sim is not None: return
        self.sim, original = sim, sim._rollout.rollout
        def recording(models, datas, initial_state, control, **kw):
            if len(self.recorded) < self.k: self.recorded.append((list(models), initial_state.copy(), control.copy()))
            return original(models, datas, initial_state, control, **kw)
        sim._rollout.rollout = recording

    def run(self) -> None:
        "Redo this iteration's recorded calls (same models, states and controls) and time them."
        sim = self.sim
        for models, state, ctrl in self.recorded:
            out = np.empty((len(state), sim.decimation, sim._nstate))
            sens = np.empty((len(state), sim.decimation, sim.nsensordata))
            t0 = time.perf_counter()
            sim._rollout.rollout(models, sim._datas, state, ctrl, skip_checks=True, nstep=sim.decimation,
                                 state=out, sensordata=sens, initial_warmstart=None, chunk_size=None)
            self.seconds += time.perf_counter() - t0; self.steps += len(state)
        self.recorded = []

    @property
    def steps_per_s(self) -> float: return self.steps / self.seconds if self.seconds else float("nan")


def interleaved(env_only: EnvOnly, physics: SamePhysics):
    "Patch `StageRunner.iteration` to run both probes after each training iteration; returns the undo."
    import g1track.stages as stages
    original = stages.StageRunner.iteration
    def iteration(self, it):
        physics.attach(self.env.sim)
        out = original(self, it)
        physics.run()
        env_only.run()
        return out
    stages.StageRunner.iteration = iteration
    return lambda: setattr(stages.StageRunner, "iteration", original)


def show(tag, m):
    print(f"{tag:6s} success={m['success']:.2f}  mean_episode_length_s={m['length_s']:.2f}  "
          f"body_pos_error_cm={m['body_pos_error_cm']:.1f}  (over {m['starts']} starts)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=float, default=2e6)
    ap.add_argument("--preset", default="cpu_demo", help="'' for the seed's full-scale settings")
    ap.add_argument("--envs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-steps", type=int, default=4, help="env-only steps after each training iteration")
    ap.add_argument("--physics-calls", type=int, default=4, help="rollout calls of each iteration redone by MuJoCo C alone")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["+exp=train", *([f"+preset={a.preset}"] if a.preset else []), "task.motions=[builtin:squat]",
                     "task.backend=mujoco", f"total_frames={int(a.frames)}", f"run_dir={tmp}", "wandb.mode=disabled",
                     "wandb.id=learn", f"seed={a.seed}", "save_every=1000000", "progress=false",
                     *([f"task.num_envs={a.envs}"] if a.envs else [])]
        cfg = compose(overrides)
        quiet = compose(overrides + QUIET).task
        torch.manual_seed(a.seed)
        probe = TrackingEnv(cfg.task, num_envs=1)
        start = evaluate(TrackingPolicy(probe.obs_dims, 29, cfg.policy), quiet)
        print(f"stage 1 on builtin:squat, {cfg.task.num_envs} envs, {int(a.frames)} frames, preset={a.preset or 'none'}, "
              f"load average {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} cpus", flush=True)
        show("start", start)
        env_only, physics = EnvOnly(cfg.task, a.probe_steps), SamePhysics(a.physics_calls)
        undo = interleaved(env_only, physics)
        t0 = time.perf_counter()
        try: result = train(cfg)
        finally: undo()
        wall = time.perf_counter() - t0 - env_only.seconds - physics.seconds          # the training's own time
        end = evaluate(result["policy"].cpu().eval(), quiet)
        show("end", end)
    env_sps = env_only.steps_per_s
    train_fps = result["iterations"] * cfg.task.num_envs * cfg.algo.train_every / wall
    print(f"success {start['success']:.2f}->{end['success']:.2f}  length_s {start['length_s']:.2f}->{end['length_s']:.2f}  "
          f"body_pos_error_cm {start['body_pos_error_cm']:.1f}->{end['body_pos_error_cm']:.1f}")
    print(f"env only (random actions, {a.probe_steps} steps after each iteration, {env_only.steps} env-steps in "
          f"{env_only.seconds:.1f} s): {env_sps:.0f} steps/s; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"same physics (MuJoCo C redoing {physics.steps} env-steps of the training env's own rollout calls in "
          f"{physics.seconds:.1f} s): {physics.steps_per_s:.0f} steps/s")
    print(f"train_wall_s={wall:.0f} train_frames_per_s={train_fps:.0f} env_only_steps_per_s={env_sps:.0f} "
          f"physics_steps_per_s={physics.steps_per_s:.0f} ratio={train_fps / env_sps:.2f} vs_physics={train_fps / physics.steps_per_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
