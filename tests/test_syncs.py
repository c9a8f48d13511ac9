"""Device->host synchronizations in the hot loop, counted on the CPU.

On a GPU, every read of a device value by the host (`.item()`, `float(t)`, `bool(t)`, `if t.any()`,
`nonzero`, indexing with a boolean mask, ...) stalls the CPU until the GPU has drained its queue. On the
CPU nothing stalls, but the same operations pass through torch's dispatcher, so a `TorchDispatchMode`
sees them: `aten._local_scalar_dense` (what `.item()`, `float()`, `int()` and `bool()` of a tensor
become), `aten.nonzero`, boolean-mask indexing (`aten.index` / `aten.index_put_` with a bool index,
`aten.masked_select`), and ops whose CUDA kernels read their input on the host before launching
(`aten.multinomial`'s validity check, `aten.repeat_interleave` without `output_size`, `aten.unique`).
`Tensor.tolist()` does not dispatch, so it is counted by patching it.

Budget: `env.step` (both engines, MuJoCo Warp on the CPU device included) and `policy.act` in the rollout
make **zero** (on Warp, the device-resident path, not even a tensor built from host data); the MuJoCo C engine copies its inputs to numpy once per step (`.numpy()`, not a sync on
the CPU and unavoidable for a CPU engine), and the env finds the few rows that need a final observation or a fresh FK
with numpy too (`TrackingEnv.index_rows`: host memory, nothing to wait for; Warp keeps the select-everything path). A whole training iteration makes at most `ITERATION_BUDGET`,
one per statistics read-out (see `test_a_training_iteration_reads_the_device_a_few_times`).
"""
from collections import Counter
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from g1track.config import compose, task_cfg
from g1track.env import TrackingEnv
from g1track.modules import TrackingPolicy
from g1track.motion import builtin_motion

ALWAYS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.multinomial", "aten.unique",
          "aten._unique", "aten._unique2", "aten.unique_consecutive", "aten.unique_dim"}
MASK_INDEXED = {"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"}

# One training iteration of stage 1 reads the device this many times at most (each a single transfer):
#   PPO logs (_reduce_logs: one .tolist()), adapt_module MSE logs (one .tolist()), the env's statistics
#   (pop_log: one .tolist()); the remaining slack is for per-update guards (e.g. a skipped-update flag).
ITERATION_BUDGET = 5


class SyncCounter(TorchDispatchMode):
    """Counts the ops that would make the host wait for a GPU, by name. `host_data`: also count tensors made from
    Python or numpy arrays (`aten.lift_fresh` of a tensor with dimensions; a 0-d one is a wrapped scalar, which
    kernels take by value): on a GPU each is a host->device copy, and one from pageable memory waits for the
    stream. (The MuJoCo C engine's data lives on the host, so only device-resident paths count them.)"""
    def __init__(self, host_data: bool = False):
        super().__init__()
        self.ops, self.host_data = Counter(), host_data

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in ALWAYS: self.ops[name] += 1
        elif name == "aten.lift_fresh" and self.host_data and args[0].dim() > 0: self.ops[name] += 1   # 0-d: a wrapped scalar
        elif name == "aten.repeat_interleave" and (kwargs or {}).get("output_size") is None and isinstance(args[0], torch.Tensor):
            self.ops[name] += 1
        elif name in MASK_INDEXED and any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                                          for i in (args[1] if len(args) > 1 else ()) or ()):
            self.ops[f"{name} (bool mask)"] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int: return sum(self.ops.values())


@pytest.fixture
def count_syncs(monkeypatch):
    "A fresh SyncCounter factory; Tensor.tolist is counted too while the test runs."
    counters = []
    original = torch.Tensor.tolist
    def tolist(self, *a, **k):
        for c in counters: c.ops["Tensor.tolist"] += 1
        return original(self, *a, **k)
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    def make(**kw):
        c = SyncCounter(**kw); counters.append(c)
        return c
    return make


def test_the_counter_sees_the_usual_syncs(count_syncs):
    "The counter must be able to fail: each usual way of reading the device is seen."
    x = torch.randn(16); m = x > 0
    for f in (lambda: x.sum().item(), lambda: float(x.sum()), lambda: bool(m.any()), lambda: m.nonzero(),
              lambda: x[m], lambda: x.masked_fill(m, 0.0)[m], lambda: torch.multinomial(x.abs(), 3), lambda: m.tolist()):
        with count_syncs() as c: f()
        assert c.total >= 1
    with count_syncs(host_data=True) as c:
        torch.where(m, x, 0.0); x[torch.arange(3)]; x.cumsum(0); torch.searchsorted(x.sort().values, x)
    assert c.total == 0, c.ops
    with count_syncs(host_data=True) as c: torch.as_tensor([[0.0, 1.0]]) + x[:1]
    assert c.ops["aten.lift_fresh"] == 1


def _busy_env(backend, n=6):
    """The default training task (randomization, pushes, action delay, noise) with episodes about to end in
    every way: some at the clip's end (truncation), pushes due, one env poisoned with NaN (instability)."""
    env = TrackingEnv(task_cfg(), num_envs=n, backend=backend, device="cpu", seed=3,
                      clips=[builtin_motion("squat"), builtin_motion("step_in_place")])
    env.reset()
    for _ in range(2): env.step(torch.zeros(n, 29))
    last = env.motion.num_frames[env.clip] - 1
    env.frame[:2] = last[:2] - 1                                     # envs 0, 1 reach the clip end in the window
    env.push_timer[2:4] = 0.5 * env.dt                               # envs 2, 3 are pushed in the window
    q = env.sim.qpos.clone(); q[4, 9] = float("nan")
    env.sim.set_state([4], q[4:5], env.sim.qvel[4:5].clone())        # env 4 is unstable in the window
    return env


@pytest.mark.parametrize("backend", ["mujoco", "warp"])
def test_env_step_makes_no_host_sync(backend, count_syncs):
    if backend == "warp": pytest.importorskip("mujoco_warp")
    env = _busy_env(backend)
    gen = torch.Generator().manual_seed(0)
    actions = [2.0 * torch.randn(env.num_envs, 29, generator=gen) for _ in range(6)]
    truncated = terminated = 0
    qvel_before = env.sim.qvel[2:4].clone()
    with count_syncs(host_data=backend == "warp") as c:
        for a in actions:
            out = env.step(a)
            truncated = truncated + out["truncated"]; terminated = terminated + out["terminated"]
    assert c.total == 0, f"env.step on {backend} read the device: {dict(c.ops)}"
    # the window really went through truncation, termination (instability) and pushes
    assert truncated[:2].all() and terminated[4] >= 1 and env.unstable_total >= 1
    assert not torch.equal(qvel_before, env.sim.qvel[2:4])
    log = env.pop_log()
    assert log["sim/unstable_total"] >= 1 and "episode/return" in log


def test_policy_act_in_the_rollout_makes_no_host_sync(count_syncs):
    env = _busy_env("mujoco")
    cfg = compose(["+exp=train", "+preset=cpu_demo"])
    policy = TrackingPolicy(env.obs_dims, 29, cfg.policy)
    policy.set_vecnorm("train")
    obs = env.observe()
    policy.act(obs, "teacher", update_stats=True)                    # the first batch commits the statistics at once
    with count_syncs() as c:
        for actor in ("teacher", "student"):
            for _ in range(3): policy.act(obs, actor, update_stats=True)
    assert c.total == 0, f"policy.act read the device: {dict(c.ops)}"


def _runner(stage="train", n=4, T=4):
    from g1track.stages import StageRunner
    cfg = compose([f"+exp={stage}", "+preset=cpu_demo", "task.backend=mujoco", f"task.num_envs={n}",
                   f"algo.train_every={T}", "algo.num_minibatches=2", "algo.ppo_epochs=2", "total_frames=1000"])
    env = TrackingEnv(cfg.task, num_envs=n, backend="mujoco", device="cpu", clips=[builtin_motion("squat")])
    policy = TrackingPolicy(env.obs_dims, 29, cfg.policy)
    return StageRunner(env, policy, cfg, generator=torch.Generator().manual_seed(0)), env


def test_the_rollout_makes_no_host_sync(count_syncs):
    runner, env = _runner()
    runner.collect()                                                 # the first collect resets (and commits stats)
    env.frame[:2] = env.motion.num_frames[env.clip[:2]] - 2          # truncations inside the rollout
    with count_syncs() as c: runner.collect()
    assert c.total == 0, f"the rollout read the device: {dict(c.ops)}"


def test_a_training_iteration_reads_the_device_a_few_times(count_syncs):
    runner, env = _runner()
    runner.iteration(0); env.pop_log()                               # warm: first reset, first statistics
    with count_syncs() as c:
        runner.iteration(1)
        env.pop_log()
    print("syncs in one stage-1 iteration:", dict(c.ops))
    assert 0 < c.total <= ITERATION_BUDGET, f"{c.total} device reads in one iteration: {dict(c.ops)}"
