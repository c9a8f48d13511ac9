"""Do two training runs started side by side on one machine keep their speed? Stage 1 on the built-in squat with
`+preset=cpu_track` (256 envs), the CPU backend and every thread setting left automatic, as a user starts them.

Measures, in one run of this script, so that all numbers share the machine's state:
1. one run alone: its median training frames/s over the iterations after the first `--skip`;
2. two runs started at the same instant (no `taskset`, no thread settings): each one's median frames/s;
3. with `--baseline`, the same two runs with the threads fixed at the machine's core count each (what every run did
   before runs registered their CPUs: each took the whole machine), for fewer iterations since they crawl.

Ends with exactly `side_by_side=R alone_fps=A pair_fps=P1,P2`: R is the slower run of the pair over the run alone
(target: R >= 0.4; 0.5 would be a perfect split of the cores).

    python bench/side_by_side.py [--iterations 25] [--skip 3] [--baseline] [--baseline-iterations 6] [--tiny]
"""
import argparse, json, os, pathlib, statistics, subprocess, sys, tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if (SHARED / "menagerie").is_dir(): os.environ.setdefault("MENAGERIE_ROOT", str(SHARED / "menagerie"))


SIZE = dict(envs=256, steps=24, small=())      # the measurement: cpu_track's 256 envs x 24 steps per iteration


def command(run_dir: pathlib.Path, name: str, iterations: int, extra=()) -> list:
    frames = iterations * SIZE["envs"] * SIZE["steps"]
    return [sys.executable, "-m", "g1track.train", "+exp=train", "+preset=cpu_track", "task.motions=[builtin:squat]",
            f"task.num_envs={SIZE['envs']}", f"algo.train_every={SIZE['steps']}", f"total_frames={frames}",
            f"save_every={iterations}", "progress=false", "wandb.mode=disabled", f"wandb.id={name}", f"run_dir={run_dir}",
            *SIZE["small"], *extra]


def median_fps(run_dir: pathlib.Path, name: str, skip: int) -> float:
    rows = [json.loads(l) for l in (run_dir / "g1track" / name / "metrics.jsonl").read_text().splitlines() if l.strip()]
    fps = [r["perf/frames_per_s"] for r in rows if r["iteration"] > skip]
    return statistics.median(fps)


def together(run_dir: pathlib.Path, names: list, iterations: int, skip: int, extra=()) -> list:
    "Start one training process per name at the same instant; their median frames/s once all have ended."
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}   # as a user starts them
    procs = [subprocess.Popen(command(run_dir, n, iterations, extra), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for n in names]
    for p in procs:
        _, err = p.communicate()
        if p.returncode: sys.exit(f"error: a training run failed (exit {p.returncode}):\n{err[-2000:]}")
    return [median_fps(run_dir, n, skip) for n in names]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--skip", type=int, default=3, help="first iterations left out of the medians (start-up)")
    ap.add_argument("--baseline", action="store_true", help="also the pair with the threads fixed at the core count (before)")
    ap.add_argument("--baseline-iterations", type=int, default=6)
    ap.add_argument("--tiny", action="store_true", help="8 envs x 4 steps and small networks: checks the script, measures nothing")
    a = ap.parse_args(argv)
    if a.tiny: SIZE.update(envs=8, steps=4, small=("algo.num_minibatches=2", "policy.actor=[16]", "policy.critic=[16]",
                                                   "policy.encoder_priv=[16]", "policy.adapt_module=[16]"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        (alone,) = together(d, ["alone"], a.iterations, a.skip)
        print(f"one run alone:            {alone:7.0f} frames/s  ({cores} cores, threads automatic)", flush=True)
        pair = together(d, ["left", "right"], a.iterations, a.skip)
        print(f"two runs side by side:    {pair[0]:7.0f} + {pair[1]:.0f} frames/s  ({min(pair) / alone:.2f} and "
              f"{max(pair) / alone:.2f} of alone)", flush=True)
        if a.baseline:
            fixed = [f"task.sim.nthread={cores}", f"update_threads={cores}"]
            before = together(d, ["left0", "right0"], a.baseline_iterations, min(a.skip, a.baseline_iterations - 2), fixed)
            print(f"side by side, {cores} threads each (before): {before[0]:7.0f} + {before[1]:.0f} frames/s  "
                  f"({min(before) / alone:.2f} of alone)", flush=True)
    print(f"side_by_side={min(pair) / alone:.2f} alone_fps={alone:.0f} pair_fps={pair[0]:.0f},{pair[1]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
