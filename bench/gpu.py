"""The GPU check: run it once on a machine with a GPU; it finishes in under 8 minutes on one GPU.

Prints, each on its own line:
  1. MuJoCo Warp env steps/s at 4096 and 8192 envs (the full `TrackingEnv.step`, random actions), and the
     peak GPU memory of each (torch's peak and the device's used memory, which includes Warp's own pool);
  2. host syncs per control step of `env.step` + `policy.act`, counted with `torch.cuda.set_sync_debug_mode`
     (each synchronizing CUDA call warns; the most frequent source lines are printed);
  3. stage-1 training frames/s at 4096 envs over 20 iterations (`g1track.train.train`, the first iterations'
     compilation excluded), its peak GPU memory and host syncs per training iteration;
  4. a CUDA resume round trip: a 3-iteration run, the same run resumed from its iteration-2 checkpoint, and
     (the control) the 3-iteration run repeated; `identical=True` when the resumed parameters equal the
     uninterrupted run's bit for bit (if the repeat differs too, the physics itself is not bit-deterministic);
  5. with 2+ GPUs, a 2-rank NCCL run under torchrun (a subprocess).
On a machine without a GPU it says so and exits 0.

    python bench/gpu.py [--envs 4096 8192] [--iterations 20] [--steps 100]

The last line is `gpu_check ok=<sections that passed>/<sections run>`.
"""
import argparse, collections, json, os, pathlib, subprocess, sys, tempfile, time, traceback, warnings

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # (before CUDA starts) deterministic cuBLAS, if asked
shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if shared.is_dir(): os.environ.setdefault("MENAGERIE_ROOT", str(shared))
ROOT = pathlib.Path(__file__).resolve().parents[1]

import torch

GIB = 2 ** 30
BACKEND, DEVICE = "warp", "cuda"     # (a CPU smoke run of this script's logic swaps them)
SYNC_WARNING = "synchronizing CUDA operation"


class SyncCounter:
    "Counts synchronizing CUDA calls (torch.cuda.set_sync_debug_mode('warn')) inside `with`, by source line."
    def __enter__(self):
        self.n, self.where = 0, collections.Counter()
        self._ctx = warnings.catch_warnings(record=True)
        self._log = self._ctx.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self._ctx.__exit__(*exc)
        for w in self._log:
            if SYNC_WARNING in str(w.message):
                self.n += 1
                self.where[f"{pathlib.Path(w.filename).name}:{w.lineno}"] += 1
        return False

    def top(self, k=5) -> str:
        return ", ".join(f"{w} x{n}" for w, n in self.where.most_common(k)) or "none"


def used_gib() -> float:
    free, total = torch.cuda.mem_get_info()
    return (total - free) / GIB


def section(name, results):
    "Decorator: run a section, print its failure in one line (and the traceback to stderr), keep going."
    def wrap(fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                fn(*a, **k); results.append(True)
            except Exception as e:
                results.append(False)
                traceback.print_exc(file=sys.stderr)
                print(f"{name}: FAILED ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})", flush=True)
            print(f"  ({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
        return run
    return wrap


def env_section(envs, steps):
    "1 + 2: env steps/s, memory, host syncs of env.step + policy.act."
    from g1track.config import task_cfg
    from g1track.env import TrackingEnv
    from g1track.modules import TrackingPolicy, policy_cfg
    for n in envs:
        torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        base = used_gib()
        env = TrackingEnv(task_cfg(), num_envs=n, backend=BACKEND, device=DEVICE)
        gen = torch.Generator(device=env.device).manual_seed(0)
        nj, dev = env.g1.nj, env.device
        act = lambda: torch.rand(n, nj, generator=gen, device=dev) * 2 - 1
        env.reset()
        t0 = time.perf_counter()
        for _ in range(20): env.step(act())             # Warp compiles (or loads its kernel cache) here
        torch.cuda.synchronize()
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps): env.step(act())
        torch.cuda.synchronize()
        rate = n * steps / (time.perf_counter() - t0)
        print(f"env {BACKEND} envs={n} env_steps_per_s={rate:.0f} warmup_s={warm:.1f} torch_peak_gib={torch.cuda.max_memory_allocated() / GIB:.2f} "
              f"device_used_gib={used_gib() - base:.2f}", flush=True)
        if n == envs[0]:
            policy = TrackingPolicy(env.obs_dims, env.g1.nj, policy_cfg()).to(env.device)
            obs = env.reset()
            for _ in range(3): obs = env.step(policy.act(obs, "teacher", update_stats=True)[0])["obs"]
            torch.cuda.synchronize()
            k = 20
            with SyncCounter() as c_env:
                for _ in range(k): env.step(act())
            with SyncCounter() as c_all:
                for _ in range(k):
                    action, _, _ = policy.act(obs, "teacher", update_stats=True)
                    obs = env.step(action)["obs"]
            print(f"host_syncs_per_step env.step={c_env.n / k:.2f} env.step+policy.act={c_all.n / k:.2f} "
                  f"(sources: {c_all.top()})", flush=True)
            del policy, obs
        env.close(); del env


def _train(tmp, run_id, iterations, envs, *extra):
    from g1track.config import compose
    from g1track.train import train
    return train(compose(["+exp=train", f"run_dir={tmp}", f"wandb.id={run_id}", f"task.num_envs={envs}",
                          f"total_frames={iterations * envs * 32}", "algo.train_every=32", "wandb.mode=disabled",
                          "progress=false", f"task.backend={BACKEND}", f"task.device={DEVICE}", *extra]))


def train_section(tmp, envs, iterations):
    "3: stage-1 training frames/s, memory, host syncs per iteration."
    from g1track.stages import StageRunner
    counts, original = [], StageRunner.iteration
    def counted(self, it):
        if it < 2: return original(self, it)           # the first iterations compile kernels: not counted
        with SyncCounter() as c: out = original(self, it)
        counts.append(c.n); counted.last = c
        return out
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    base = used_gib()
    StageRunner.iteration = counted
    try:
        t0 = time.perf_counter()
        out = _train(tmp, "speed", iterations, envs, f"save_every={iterations}")
        wall = time.perf_counter() - t0
    finally:
        StageRunner.iteration = original
    rows = [json.loads(l) for l in (pathlib.Path(out["folder"]) / "metrics.jsonl").read_text().splitlines()]
    fps = [r["perf/frames_per_s"] for r in rows[2:]] or [rows[-1]["perf/frames_per_s"]]
    med = sorted(fps)[len(fps) // 2]
    sync = sorted(counts)[len(counts) // 2] if counts else float("nan")
    print(f"train stage=1 envs={envs} iterations={iterations} frames_per_s={med:.0f} (median of iterations 3..{iterations}; "
          f"with compilation {iterations * envs * 32 / wall:.0f}) torch_peak_gib={torch.cuda.max_memory_allocated() / GIB:.2f} "
          f"device_used_gib={used_gib() - base:.2f}", flush=True)
    last = rows[-1]
    print(f"train collect_s={last.get('perf/collect_s', float('nan')):.2f} update_s={last.get('perf/update_s', float('nan')):.2f} "
          f"host_syncs_per_iteration={sync} (sources: {counted.last.top() if counts else 'n/a'})", flush=True)


def resume_section(tmp, envs):
    "4: CUDA resume round trip."
    full = _train(tmp, "rt_full", 3, envs, "save_every=1")
    ckpt = pathlib.Path(full["folder"]) / "checkpoints" / "ckpt_000002.pt"
    resumed = _train(tmp, "rt_resumed", 3, envs, "save_every=1", f"checkpoint_path={ckpt}")
    repeat = _train(tmp, "rt_repeat", 3, envs, "save_every=1")
    def diff(a, b):
        a, b = a["policy"].state_dict(), b["policy"].state_dict()
        return all(torch.equal(a[k], b[k]) for k in a), max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    same, d = diff(full, resumed)
    same_rep, d_rep = diff(full, repeat)
    print(f"resume cuda identical={same} max_abs_diff={d:.3g} resumed_env={resumed['resumed_env']} "
          f"(control: repeated run identical={same_rep} max_abs_diff={d_rep:.3g})", flush=True)
    if not resumed["resumed_env"]: raise RuntimeError("the resumed run did not find its environment state")


def nccl_section(tmp, envs, iterations=5):
    "5: a 2-rank NCCL run."
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "g1track.train",
           "+exp=train", f"run_dir={tmp}", "wandb.id=nccl", f"task.num_envs={envs}", f"total_frames={iterations * 2 * envs * 32}",
           "algo.train_every=32", "wandb.mode=disabled", "progress=false", "save_every=5", f"task.backend={BACKEND}",
           f"task.device={DEVICE}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    if r.returncode != 0 or "ranks=2" not in r.stdout:
        raise RuntimeError(f"torchrun exited {r.returncode}: {r.stderr.strip()[-400:]}")
    rows = [json.loads(l) for l in (pathlib.Path(tmp) / "g1track/nccl/metrics.jsonl").read_text().splitlines()]
    envs_saved = sorted(p.name for p in (pathlib.Path(tmp) / "g1track/nccl/checkpoints").glob("*.env*.pt"))
    print(f"nccl ranks=2 envs_per_rank={envs} iterations={len(rows)} frames_per_s={rows[-1]['perf/frames_per_s']:.0f} "
          f"wall_s={time.perf_counter() - t0:.0f} env_states={envs_saved}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, nargs="+", default=[4096, 8192], help="env counts of the env-only measurement")
    ap.add_argument("--train-envs", type=int, default=4096)
    ap.add_argument("--iterations", type=int, default=20, help="stage-1 training iterations measured")
    ap.add_argument("--steps", type=int, default=100, help="timed control steps per env count")
    ap.add_argument("--resume-envs", type=int, default=512)
    ap.add_argument("--nccl-envs", type=int, default=1024, help="envs per rank of the 2-rank run")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py: no GPU found (torch.cuda.is_available() is False): nothing to measure here; "
              "run it on a machine with an NVIDIA GPU", flush=True)
        return 0
    print(f"gpu {torch.cuda.get_device_name()} x{torch.cuda.device_count()} torch={torch.__version__}", flush=True)
    results, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        section("env", results)(env_section)(args.envs, args.steps)
        section("train", results)(train_section)(tmp, args.train_envs, args.iterations)
        section("resume", results)(resume_section)(tmp, args.resume_envs)
        if torch.cuda.device_count() >= 2: section("nccl", results)(nccl_section)(tmp, args.nccl_envs)
        else: print("nccl: skipped (one GPU)", flush=True)
    print(f"gpu_check ok={sum(results)}/{len(results)} wall_s={time.perf_counter() - t0:.0f}", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
