"""MuJoCo solver settings (`task.sim.solver`): speed against accuracy, measured in one short run.

For each (iterations, ls_iterations) pair, with the G1 and the default task:
  physics steps/s  MuJoCo C redoing exactly the rollout calls a `TrackingEnv` made over `--steps` control steps
                   with uniform random actions (domain randomization, pushes, resets: contact-rich), `--envs` envs;
                   the settings are measured interleaved, best of `--repeats` (other processes share the cores)
  capped %         share of the substeps of those calls (replayed with mj_step) in which the solver stopped at its
                   iteration cap before converging to `tolerance`
  drift mm         max |qpos| difference (joints in mrad, root in mm) from MuJoCo's defaults (100 / 50) after 25
                   control steps of the same landing-and-arm-swing start (4 envs, randomized physics)
  PD replay        open-loop PD on the reference (joint targets = reference joints, no policy) from frame 0 of
                   the built-in squat, step_in_place and arm_wave clips, 4 s: mean reward per step (x 1/0.02, so
                   the tracking terms' maximum is 5) and mean episode length

(The kinematic replay, `env.step(..., kinematic=True)`, places the robot on the reference instead of
simulating it: its reward does not depend on the solver and is at its maximum for every setting.)

    python bench/solver.py [--envs 128] [--steps 30] [--repeats 3] [--warp]
"""
import argparse, os, pathlib, sys, time
import mujoco
import numpy as np
import torch

shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if shared.is_dir(): os.environ.setdefault("MENAGERIE_ROOT", str(shared))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from g1track.config import task_cfg
from g1track.env import TrackingEnv
from g1track.motion import builtin_motion
from g1track.robot import FREE_LIN_VEL, FREE_POS, QPOS_JOINTS, load_g1
from g1track.sim import sim_cfg
from g1track.sim_factory import make_sim
from env_throughput import env_rate, same_work, random_action

SETTINGS = [(100, 50), (50, 25), (20, 20), (10, 20), (5, 10), (3, 5)]
QUIET = ["task.randomization.enabled=false", "task.observations.noise.enabled=false", "task.reset.joint_pos=[0,0]",
         "task.reset.root_pos=[[0,0],[0,0],[0,0]]", "task.reset.root_rot=[[0,0],[0,0],[0,0]]",
         "task.reset.root_lin_vel=[[0,0],[0,0],[0,0]]", "task.reset.root_ang_vel=[[0,0],[0,0],[0,0]]"]


def solver(it, ls): return [f"task.sim.solver.iterations={it}", f"task.sim.solver.ls_iterations={ls}"]


def recorded_env(it, ls, envs, steps):
    "A default-task env with this solver, and the rollout calls it made over `steps` random-action steps."
    env = TrackingEnv(task_cfg(*solver(it, ls)), num_envs=envs, backend="mujoco", device="cpu")
    env.bench_gen = torch.Generator().manual_seed(0)
    for _ in range(20): env.step(random_action(env))
    return env, env_rate(env, steps)[3]


def physics_rates(envs, steps, repeats) -> list:
    "Physics steps/s per setting: every setting's recorded calls redone, interleaved, best of `repeats` (shared cores)."
    recorded = [recorded_env(it, ls, envs, steps) for it, ls in SETTINGS]
    best = [0.0] * len(SETTINGS)
    for _ in range(repeats):
        for i, (env, calls) in enumerate(recorded): best[i] = max(best[i], same_work(env, calls))
    capped = [100 * cap_hits(env, calls) for env, calls in recorded]
    for env, _ in recorded: env.close()
    return best, capped


def cap_hits(env, calls) -> float:
    "Share of the substeps of the env's last rollout call in which the solver stopped at its iteration cap (not converged)."
    sim = env.sim
    state, ctrl = calls[-1]
    d, hits = mujoco.MjData(sim.model), 0
    for i, m in enumerate(sim._models):
        mujoco.mj_setState(m, d, state[i], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        for k in range(ctrl.shape[1]):
            d.ctrl[:] = ctrl[i, k]
            mujoco.mj_step(m, d)
            hits += int(d.solver_niter[0] >= m.opt.iterations)
    return hits / (len(sim._models) * ctrl.shape[1])


def landing(g1, it, ls, steps=25) -> np.ndarray:
    "qpos [steps, 4, nq] of 4 randomized robots landing from 2 cm and swinging their arms (as tests/test_sim.py)."
    sim = make_sim(g1, 4, backend="mujoco", cfg=sim_cfg(**{"solver.iterations": it, "solver.ls_iterations": ls}))
    sim.set_params([1], friction=torch.tensor([0.3]))
    sim.set_params([2], mass_scale=torch.full((1, len(g1.body_names)), 1.2), com_offset=torch.tensor([[0.03, -0.02, 0.01]]))
    sim.set_params([3], kp_scale=torch.full((1, g1.nj), 0.8), kd_scale=torch.full((1, g1.nj), 1.3))
    gen = torch.Generator().manual_seed(0)
    q = torch.tensor(g1.default_qpos, dtype=torch.float64).repeat(4, 1); q[:, FREE_POS.start + 2] += 0.02   # 2 cm up
    q[:, QPOS_JOINTS] += 0.05 * torch.randn(4, g1.nj, generator=gen, dtype=torch.float64)
    v = torch.zeros(4, sim.nv, dtype=torch.float64)
    v[:, FREE_LIN_VEL][:, :2] = 0.2 * torch.randn(4, 2, generator=gen, dtype=torch.float64)           # a horizontal push
    sim.set_state(torch.arange(4), q, v)
    out = []
    for k in range(steps):
        ctrl = torch.tensor(g1.default_joint_pos, dtype=torch.float32).repeat(4, 1)
        ctrl[:, g1.joint_names.index("left_shoulder_pitch_joint"):] += 0.3 * np.sin(2 * np.pi * 0.02 * k)   # the arms
        sim.step(ctrl)
        out.append(sim.qpos.double().numpy().copy())
    sim.close()
    return np.stack(out)


@torch.no_grad()
def pd_replay(it, ls, seconds=4.0) -> tuple[float, float]:
    "(mean reward per step / 0.02, mean episode length s) of open-loop PD on the reference from frame 0 of 3 clips."
    clips = [builtin_motion(n) for n in ("squat", "step_in_place", "arm_wave")]
    env = TrackingEnv(task_cfg(*QUIET, *solver(it, ls)), num_envs=len(clips), backend="mujoco", device="cpu", clips=clips)
    env.set_fixed_starts(torch.arange(len(clips)))
    env.reset()
    alive = torch.ones(env.num_envs, dtype=torch.bool)
    ret, steps = torch.zeros(env.num_envs), torch.zeros(env.num_envs)
    for _ in range(int(seconds / env.dt)):
        ref = env.motion.get(env.clip, env.frame).joint_pos[:, 0]
        out = env.step((ref - env.default_joint_pos) / env.action_scale)
        ret += alive * out["reward"]; steps += alive
        alive &= ~(out["terminated"] | out["truncated"])
    env.close()
    return float(ret.sum() / steps.sum()) / float(env.c.reward_scale), float(steps.mean()) * env.dt


def warp_line(g1, it, ls, n=32, steps=15) -> str:
    "MuJoCo Warp (on this machine's device) steps/s with random targets from standing, and worlds that hit the cap."
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    sim = make_sim(g1, n, backend="warp", device=dev, cfg=sim_cfg(**{"solver.iterations": it, "solver.ls_iterations": ls}))
    gen = torch.Generator().manual_seed(0)
    base, scale = torch.tensor(g1.default_joint_pos, dtype=torch.float32), torch.tensor(g1.action_scale, dtype=torch.float32)
    target = lambda: (base + scale * (torch.rand(n, g1.nj, generator=gen) * 2 - 1)).to(sim.device)
    for _ in range(3): sim.step(target())
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    sync(); t0 = time.perf_counter()
    for _ in range(steps): sim.step(target())
    sync(); rate = n * steps / (time.perf_counter() - t0)
    capped = int(sim.counters()["solver_iter_limit"])
    sim.close()
    return f"warp {dev} {n} worlds {it:3d}/{ls:2d}: {rate:.0f} steps/s, env-steps at the iteration cap {capped} of {n * (steps + 3)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warp", action="store_true", help="also MuJoCo Warp (on a GPU if there is one) at 100/50, 20/20, 10/20")
    a = ap.parse_args()
    torch.set_num_threads(1)
    g1 = load_g1(visual=False)
    ref = landing(g1, *SETTINGS[0])
    rates, capped_pct = physics_rates(a.envs, a.steps, a.repeats)
    print(f"cpus={len(os.sched_getaffinity(0))} envs={a.envs} steps={a.steps} repeats={a.repeats} (MuJoCo C, best of interleaved repeats)")
    print(f"{'iterations':>10s} {'ls_iter':>7s} {'physics steps/s':>15s} {'speed-up':>8s} {'capped %':>9s} {'drift mm|mrad':>13s} "
          f"{'PD replay reward':>16s} {'PD replay length s':>18s}")
    for (it, ls), rate, capped in zip(SETTINGS, rates, capped_pct):
        base = rates[0]
        drift = 1e3 * np.abs(landing(g1, it, ls) - ref).max()
        reward, length = pd_replay(it, ls)
        print(f"{it:10d} {ls:7d} {rate:15.0f} {rate / base:8.2f} {capped:9.1f} {drift:13.3f} {reward:16.3f} {length:18.2f}",
              flush=True)
    if a.warp:
        for it, ls in [(100, 50), (20, 20), (10, 20)]: print(warp_line(g1, it, ls), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
