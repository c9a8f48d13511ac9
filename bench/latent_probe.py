"""What the teacher's latent knows: linear probes of privileged terms from z = encoder_priv(priv) and from
z_hat = adapt_module(policy observations), on rollouts of the deterministic teacher.

Stage 1 pulls z towards z_hat (`algo.latent_reg`) so that the student can reproduce what the teacher relies on; what
z_hat cannot estimate from the policy observations (e.g. where the robot is in the world) is then squeezed out of z.
For each checkpoint: 64 envs (nominal: no noise, no randomization) run the deterministic teacher for 300 control steps
from the start sampler's starts on `--motion`; every third step z, z_hat and the raw privileged terms are kept; a ridge
regression is fitted on the first half of the samples and scored (R², per component) on the second.

    python bench/latent_probe.py CKPT [CKPT ...] --motion WINDOW.npz [--terms anchor_pos_error base_lin_vel]
One line per checkpoint: `CKPT iteration=I TERM_from_z=[..] TERM_from_z_hat=[..] ... gap_rms=G z_rms=Z`.
"""
import argparse, os, pathlib, sys
import numpy as np
import torch

shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if shared.is_dir(): os.environ.setdefault("MENAGERIE_ROOT", str(shared))

from g1track.env import TrackingEnv
from g1track.runs import checkpoint_config, load_checkpoint, policy_from_checkpoint


def r2(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    "R² per column of `y` of a ridge regression from `x`, fitted on the first half of the rows and scored on the second."
    n, xa = len(x) // 2, np.c_[x, np.ones(len(x))]
    w = np.linalg.solve(xa[:n].T @ xa[:n] + ridge * np.eye(xa.shape[1]), xa[:n].T @ y[:n])
    err, spread = ((y[n:] - xa[n:] @ w) ** 2).sum(0), ((y[n:] - y[n:].mean(0)) ** 2).sum(0)
    return 1 - err / spread


@torch.no_grad()
def samples(path, motion: str, envs: int = 64, steps: int = 300, every: int = 3, seed: int = 1) -> dict:
    "z, z_hat and the raw privileged terms along rollouts of the checkpoint's deterministic teacher."
    ckpt = load_checkpoint(path); policy = policy_from_checkpoint(ckpt)
    task = checkpoint_config(ckpt).task.copy()
    task.motions, task.randomization.enabled, task.observations.noise.enabled = [motion], False, False
    env = TrackingEnv(task, num_envs=envs, seed=seed)
    obs, rows = env.reset(), {"z": [], "z_hat": [], "priv": []}
    for t in range(steps):
        if t % every == 0:
            rows["z"].append(policy.latent(obs)); rows["z_hat"].append(policy.latent_hat(obs)); rows["priv"].append(obs["priv"])
        obs = env.step(policy.act(obs, "teacher", deterministic=True, with_value=False)[0])["obs"]
    out = {k: torch.cat(v).numpy() for k, v in rows.items()}
    out["layout"], out["iteration"] = {name: slice(a, b) for name, a, b, *_ in ckpt["obs_layout"]["priv"]}, ckpt.get("iteration")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--motion", required=True, help="the motion the teacher was trained on (e.g. bench/track_real.py's window.npz)")
    ap.add_argument("--terms", nargs="+", default=["anchor_pos_error", "base_lin_vel"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    for path in a.checkpoints:
        s = samples(path, a.motion)
        unknown = [t for t in a.terms if t not in s["layout"]]
        if unknown: raise SystemExit(f"{path}: no privileged term {unknown}; it has {list(s['layout'])}")
        fmt = lambda v: "[" + ",".join(f"{x:.2f}" for x in v) + "]"
        probes = " ".join(f"{t}_from_{k}={fmt(r2(s[k], s['priv'][:, s['layout'][t]]))}" for t in a.terms for k in ("z", "z_hat"))
        gap, size = np.sqrt(((s["z"] - s["z_hat"]) ** 2).mean()), np.sqrt((s["z"] ** 2).mean())
        print(f"{path} iteration={s['iteration']} {probes} gap_rms={gap:.3f} z_rms={size:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
