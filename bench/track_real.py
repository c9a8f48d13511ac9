"""Does the teacher learn to track real human motion? Stage 1 on a window of a real third-party clip.

Trains the teacher (stage 1) on a window of a clip (default: 10 s of the LAFAN1 dance in ../shared/motions)
and evaluates the checkpoints written at 5 points during training, as they appear:

* nominal_success: deterministic actions, nominal physics, no noise; one episode from frame 0 of the window
  and one from every further second, each to the window's end; the fraction that succeed by the field's
  definition (no termination, and the mean tracked-body error in the world frame never above 0.5 m).
  Also MPKPE and root-relative MPKPE (mm) over all evaluated frames of those episodes.
* robust_success: the `robust` protocol (training physics randomization, observation noise and action delay,
  pushes off) from frame 0, 32 seeded episodes.

It prints one line per point, writes the curve as PNG and JSON into --out, and ends with exactly
`final nominal_success=S1 robust_success=S2 mpkpe_mm=M r_mpkpe_mm=R frames=F wall_s=W`.
On a CPU it trains with `+preset=cpu_track`; on a GPU with the full-scale settings (same command).

    python bench/track_real.py [--motion FILE] [--fps 30] [--frames 300:600] [--budget 8e6 | --minutes 90] [--preset auto]
                               [--points 5] [--out DIR] [Hydra overrides for training, e.g. algo.lr=1e-4]
"""
import argparse, json, os, pathlib, subprocess, sys, time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if (SHARED / "menagerie").is_dir(): os.environ.setdefault("MENAGERIE_ROOT", str(SHARED / "menagerie"))

import torch
from g1track.config import compose
from g1track.motion import load_motion, save_clip
from g1track.eval.core import eval_cfg, evaluate_checkpoint

DEFAULT_MOTION = SHARED / "motions" / "lafan1_g1_dance2_subject1.csv"
CPU_FRAMES_PER_S = 3400      # one training process on 2 idle cores (cpu_track, measured): sizes the schedules of a --minutes run


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", default=str(DEFAULT_MOTION), help="a motion file (CSV, npz) or builtin:NAME")
    ap.add_argument("--fps", type=float, default=None, help="frame rate of a CSV (default 30)")
    ap.add_argument("--frames", default="300:600", help="source frames START:END of the window (default: 10 s of a 30-fps clip, "
                                                         "seconds 10-20 of the LAFAN1 dance, where the dancing starts)")
    ap.add_argument("--budget", type=float, default=None, help="training frames (default 8e6 on a CPU, 2e8 on a GPU; with --minutes, "
                                                                "what that many minutes give at 3400 frames/s on a CPU, 2e8 on a GPU)")
    ap.add_argument("--minutes", type=float, default=None, help="a training wall-clock budget: training stops after the iteration that "
                                                                 "passes it (time_limit_s) and the last checkpoint is evaluated; the "
                                                                 "schedules still follow --budget")
    ap.add_argument("--preset", default="auto", help="auto: cpu_track on a CPU, none (full scale) on a GPU; or a preset name; '' for none")
    ap.add_argument("--points", type=int, default=5, help="evaluation points along training (4-6 make a curve)")
    ap.add_argument("--robust_episodes", type=int, default=32)
    ap.add_argument("--out", default=None, help="folder for the run, the window, the curve (default: runs/track_real/<time>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for training (e.g. algo.lr=1e-4)")
    return ap.parse_args(argv)


def window(a, out: pathlib.Path) -> pathlib.Path:
    "The chosen window of the clip as a canonical npz (what training and evaluation both read)."
    clip = load_motion(a.motion, fps=a.fps, frames=a.frames or None)
    return save_clip(clip, out / "window.npz")


def evaluate(ckpt: pathlib.Path, out: pathlib.Path, robust_episodes: int) -> dict:
    nominal = evaluate_checkpoint(ckpt, eval_cfg("protocol=nominal", "starts_every_s=1.0"), actor="teacher", out_dir=out)
    robust = evaluate_checkpoint(ckpt, eval_cfg("protocol=robust", f"episodes_per_clip={robust_episodes}"), actor="teacher", out_dir=out)
    n, r = nominal.results["teacher"]["overall"], robust.results["teacher"]["overall"]
    return dict(nominal_success=n["success"], robust_success=r["success"], mpkpe_mm=n["mpkpe_mm"], r_mpkpe_mm=n["mpkpe_root_mm"],
                nominal_survival=n["survival"], robust_mpkpe_mm=r["mpkpe_mm"], nominal_episodes=n["episodes"],
                nominal_length_s=n["length_s"], robust_length_s=r["length_s"])


def plan_points(iterations: int, points: int) -> tuple[int, list[int]]:
    """(save_every, the iterations to evaluate): every `save_every`-th checkpoint up to the last, which training always
    writes. The marks are exactly the checkpoints training writes, so none is waited for in vain."""
    save_every = max(1, iterations // max(1, points))
    marks = [k * save_every for k in range(1, max(1, points)) if k * save_every < iterations] + [iterations]
    return save_every, marks


def train_logs(run: pathlib.Path, iteration: int) -> dict:
    "The training log line of `iteration` (mean training episode length etc.)."
    f = run / "metrics.jsonl"
    if not f.is_file(): return {}
    rows = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    recent = [r for r in rows if iteration - 10 < r["iteration"] <= iteration]
    mean = lambda k: sum(r.get(k, float("nan")) for r in recent) / max(len(recent), 1)
    return dict(train_episode_s=mean("episode/length_s"), train_fps=mean("perf/frames_per_s"))


def plot(curve: list, path: pathlib.Path, title: str) -> None:
    "Success, errors and how long the robot stays up, against training frames."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    f = [p["frames"] / 1e6 for p in curve]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
    ax[0].plot(f, [p["nominal_success"] for p in curve], "o-", label="nominal success")
    ax[0].plot(f, [p["robust_success"] for p in curve], "s-", label="robust success")
    ax[0].set_ylim(-0.05, 1.05); ax[0].legend()
    ax[1].plot(f, [p["mpkpe_mm"] for p in curve], "o-", label="MPKPE (nominal)")
    ax[1].plot(f, [p["r_mpkpe_mm"] for p in curve], "s-", label="root-rel. MPKPE (nominal)")
    ax[1].set_ylabel("mm"); ax[1].legend()
    ax[2].plot(f, [p["nominal_length_s"] for p in curve], "o-", label="nominal episode (eval)")
    ax[2].plot(f, [p["robust_length_s"] for p in curve], "s-", label="robust episode (eval)")
    ax[2].plot(f, [p.get("train_episode_s", float("nan")) for p in curve], "^-", label="training episode")
    ax[2].set_ylabel("s"); ax[2].legend()
    for a in ax: a.set_xlabel("training frames (M)"); a.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9); fig.tight_layout(); fig.savefig(path, dpi=80); plt.close(fig)


if __name__ == "__main__" and sys.argv[1:2] == ["--replot"]:
    # python bench/track_real.py --replot OUT_DIR: redraw curve.png from curve.json
    d = pathlib.Path(sys.argv[2]); r = json.loads((d / "curve.json").read_text())
    plot(r["curve"], d / "curve.png", f"teacher on {pathlib.Path(r['motion']).name} [{r['frames']}], preset {r['preset'] or 'none'}")
    sys.exit(0)


def main(argv=None) -> int:
    a = parse(argv)
    t0 = time.perf_counter()
    gpu = torch.cuda.is_available()
    preset = ("" if gpu else "cpu_track") if a.preset == "auto" else a.preset
    if a.minutes is not None and not a.minutes > 0: sys.exit(f"error: --minutes {a.minutes} must be > 0")
    cpu_default = 8e6 if a.minutes is None else a.minutes * 60 * CPU_FRAMES_PER_S
    budget = int(a.budget or (2e8 if gpu else cpu_default))
    out = pathlib.Path(a.out or ROOT / "runs" / "track_real" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clip_file = window(a, out)
    overrides = ["task=G1/G1_tracking", "+exp=train", *([f"+preset={preset}"] if preset else []), f"task.motions=[{clip_file}]",
                 f"total_frames={budget}", f"run_dir={out}", "wandb.mode=disabled", "wandb.id=teacher", f"seed={a.seed}",
                 "keep_checkpoints=0", "progress=false", *([f"time_limit_s={a.minutes * 60}"] if a.minutes else []), *a.overrides]
    cfg = compose(overrides)
    per_it = int(cfg.task.num_envs) * int(cfg.algo.train_every) * int(os.environ.get("WORLD_SIZE", 1))
    iterations = -(-budget // per_it)
    save_every, marks = plan_points(iterations, a.points)
    overrides.append(f"save_every={save_every}")
    print(f"track_real: {a.motion} frames {a.frames} -> {clip_file.name}; preset={preset or 'none (full scale)'}; "
          f"{cfg.task.num_envs} envs x {cfg.algo.train_every} steps = {per_it} frames/iteration, {iterations} iterations, "
          f"evaluations at iterations {marks}", flush=True)
    run = out / "g1track" / "teacher"
    cmd = [sys.executable, "-m", "g1track.train", *overrides]
    log = open(out / "train.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    curve, pending = [], list(marks)
    torch.set_num_threads(1)
    try:
        while pending:
            ckpt = run / "checkpoints" / f"ckpt_{pending[0]:06d}.pt"
            if ckpt.is_file():
                time.sleep(1.0)                                     # the env-state files are written before, latest.pt after
                m = evaluate(ckpt, out / "eval", a.robust_episodes)
                m.update(iteration=pending.pop(0), frames=m_frames(ckpt), wall_s=time.perf_counter() - t0)
                m.update(train_logs(run, m["iteration"]))
                curve.append(m)
                print(f"frames={m['frames']:>9d} nominal_success={m['nominal_success']:.2f} robust_success={m['robust_success']:.2f} "
                      f"mpkpe_mm={m['mpkpe_mm']:.1f} r_mpkpe_mm={m['r_mpkpe_mm']:.1f} nominal_survival={m['nominal_survival']:.2f} "
                      f"nominal_length_s={m['nominal_length_s']:.2f} train_episode_s={m.get('train_episode_s', float('nan')):.2f} "
                      f"wall_s={m['wall_s']:.0f}", flush=True)
                continue
            if proc.poll() is not None and not ckpt.is_file():
                final = last_checkpoint(run)
                if proc.returncode == 0 and a.minutes and final is not None and final[0] > (curve[-1]["iteration"] if curve else 0):
                    pending = [final[0]]            # the time limit stopped training before this mark: evaluate where it stopped
                    continue
                print(f"error: training stopped (exit {proc.returncode}) before iteration {pending[0]}; see {out / 'train.log'}",
                      file=sys.stderr)
                return 1
            time.sleep(5.0)
        proc.wait()
    finally:
        if proc.poll() is None: proc.kill()
        log.close()
    (out / "curve.json").write_text(json.dumps(dict(motion=a.motion, frames=a.frames, preset=preset, budget=budget,
                                                    overrides=overrides, curve=curve), indent=1))
    plot(curve, out / "curve.png", f"teacher on {pathlib.Path(a.motion).name} [{a.frames}], preset {preset or 'none'}")
    print(f"curve: {out / 'curve.png'}", flush=True)
    f = curve[-1]
    print(f"final nominal_success={f['nominal_success']:.2f} robust_success={f['robust_success']:.2f} mpkpe_mm={f['mpkpe_mm']:.1f} "
          f"r_mpkpe_mm={f['r_mpkpe_mm']:.1f} frames={f['frames']} wall_s={time.perf_counter() - t0:.0f}")
    return 0


def last_checkpoint(run: pathlib.Path):
    "(iteration, path) of the newest ckpt_*.pt of a run, or None."
    found = sorted((int(p.stem.split("_")[1]), p) for p in (run / "checkpoints").glob("ckpt_*.pt") if p.stem.split("_")[1].isdigit())
    return found[-1] if found else None


def m_frames(ckpt: pathlib.Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["frames"])


if __name__ == "__main__":
    sys.exit(main())
