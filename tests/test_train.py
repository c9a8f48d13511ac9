"""The three stages and training runs: what trains and what stays frozen, ranks, resume, run resolution, errors."""
import json, os, subprocess, sys, pathlib, types
import pytest
import torch

from g1track.config import compose
from g1track.robot import G1_JOINT_NAMES
from g1track.stages import STAGES, stage_table
from g1track.runs import CheckpointError, env_state_file, load_checkpoint, resolve_checkpoint
from g1track.train import _load_env_state, restore_rng_states, rng_states, train
from g1track.modules import NETWORKS

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["task.num_envs=8", "algo.train_every=8", "algo.num_minibatches=2", "algo.ppo_epochs=2", "task.motions=[builtin:squat]",
        "policy.actor=[64,64]", "policy.critic=[64,64]", "policy.adapt_module=[64]", "policy.encoder_priv=[64]",
        "wandb.mode=offline", "progress=false"]
FRAMES_PER_IT = 8 * 8


def run_stage(tmp, stage, run_id, iterations, *extra, ckpt=None):
    overrides = [f"+exp={stage}", f"run_dir={tmp}", f"wandb.id={run_id}", f"total_frames={iterations * FRAMES_PER_IT}", *TINY, *extra]
    if ckpt: overrides.append(f"checkpoint_path={ckpt}")
    return train(compose(overrides))


def params(state_dict, network):
    return {k: v for k, v in state_dict.items() if k.startswith(network + ".")}


def changed(before, after, network) -> bool:
    a, b = params(before, network), params(after, network)
    assert a.keys() == b.keys() and a
    return any(not torch.equal(a[k], b[k]) for k in a)



@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    "A tiny teacher -> adapt -> finetune pipeline; checkpoints after every iteration."
    tmp = tmp_path_factory.mktemp("runs")
    t = run_stage(tmp, "train", "teach", 3, "save_every=1", "algo.latent_reg=[0.5,1.0]")
    a = run_stage(tmp, "adapt", "adapt", 2, "save_every=1", ckpt="run:g1track/teach")
    f = run_stage(tmp, "finetune", "fine", 4, "save_every=1", "algo.critic_warmup=0.5", ckpt="run:g1track/adapt")
    return tmp, t, a, f


def test_stage_table_matches_the_pipeline_quick_reference():
    table = stage_table()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in table.splitlines()[2:]}
    assert rows["encoder_priv"] == ["trained", "not used", "not used"]
    assert rows["actor_teacher"] == ["trained", "not used", "not used"]
    assert rows["actor_student"][:2] == ["not trained", "frozen"] and rows["actor_student"][2].startswith("trained")
    assert rows["critic"] == ["trained", "frozen", "trained"]
    assert rows["adapt_module"] == ["trained", "trained", "frozen"]
    assert [STAGES[s].actor for s in STAGES] == ["teacher", "student", "student"]


def test_stage_1_trains_exactly_teacher_encoder_critic_and_adapt_module(pipeline):
    tmp, *_ = pipeline
    first = load_checkpoint(tmp / "g1track/teach/checkpoints/ckpt_000001.pt")["policy"]
    last = load_checkpoint(tmp / "g1track/teach/checkpoints/ckpt_000003.pt")["policy"]
    for n in NETWORKS: assert changed(first, last, n) == (n != "actor_student"), n
    assert changed(first, last, "normalizers")                              # vecnorm=train


def test_stage_2_trains_only_adapt_module_and_the_student_is_the_teacher(pipeline):
    tmp, *_ = pipeline
    start = load_checkpoint(tmp / "g1track/teach/checkpoints/latest.pt")["policy"]
    end = load_checkpoint(tmp / "g1track/adapt/checkpoints/latest.pt")["policy"]
    for n in NETWORKS:
        if n == "actor_student": continue
        assert changed(start, end, n) == (n == "adapt_module"), n
    assert not changed(start, end, "normalizers")                           # vecnorm=eval: stage-1 statistics
    teacher, student = params(end, "actor_teacher"), params(end, "actor_student")
    for k, v in teacher.items(): assert torch.equal(student[k.replace("actor_teacher", "actor_student")], v)
    metrics = (tmp / "g1track/adapt/metrics.jsonl").read_text()
    assert "adapt/estimator_loss" in metrics and "adapt/estimator_r2" in metrics and "ppo/policy_loss" not in metrics
    assert "adapt/estimator_r2" in (tmp / "g1track/teach/metrics.jsonl").read_text()        # stage 1 logs it too


def test_stage_3_warms_up_the_critic_then_trains_student_and_critic(pipeline):
    tmp, *_ = pipeline
    start = load_checkpoint(tmp / "g1track/adapt/checkpoints/latest.pt")["policy"]
    warm = load_checkpoint(tmp / "g1track/fine/checkpoints/ckpt_000002.pt")["policy"]     # 2 of 4 iterations = warm-up 50 %
    end = load_checkpoint(tmp / "g1track/fine/checkpoints/ckpt_000004.pt")["policy"]
    for n in NETWORKS: assert changed(start, warm, n) == (n == "critic"), f"warm-up: {n}"
    for n in NETWORKS: assert changed(warm, end, n) == (n in ("critic", "actor_student")), f"after warm-up: {n}"
    assert not changed(start, end, "normalizers")


def test_each_stage_records_its_lineage(pipeline):
    tmp, *_ = pipeline
    ck = load_checkpoint(tmp / "g1track/fine/checkpoints/latest.pt")
    assert [(x["stage"], x["run_id"]) for x in ck["lineage"]] == [("train", "teach"), ("adapt", "adapt"), ("finetune", "fine")]


def test_checkpoint_path_run_resolves_an_offline_wandb_run(pipeline):
    tmp, t, *_ = pipeline
    path = resolve_checkpoint("run:g1track/teach", tmp)
    assert path == tmp / "g1track/teach/checkpoints/latest.pt" and load_checkpoint(path)["stage"] == "train"
    assert list((tmp / "g1track/teach/wandb").glob("offline-run-*-teach"))             # W&B recorded it offline
    assert resolve_checkpoint(tmp / "g1track/teach", tmp) == path                      # a run folder works too
    with pytest.raises(CheckpointError, match="no checkpoint for run g1track/nope"):
        resolve_checkpoint("run:g1track/nope", tmp)


def test_a_checkpoint_from_the_wrong_stage_is_refused(pipeline):
    tmp, *_ = pipeline
    with pytest.raises(CheckpointError, match="from stage 'train'.*needs a 'adapt' checkpoint"):
        run_stage(tmp, "finetune", "bad", 1, ckpt="run:g1track/teach")
    with pytest.raises(CheckpointError, match="starts from a 'train' checkpoint"):
        run_stage(tmp, "adapt", "bad2", 1)


def test_a_checkpoint_with_another_observation_layout_is_refused(pipeline):
    tmp, *_ = pipeline
    with pytest.raises(CheckpointError, match="different 'policy' observation layout"):
        run_stage(tmp, "adapt", "bad3", 1, "task.future_frames=[0,1]", ckpt="run:g1track/teach")


def test_stopping_and_resuming_gives_the_same_next_update(tmp_path):
    det = ("deterministic=true", "save_every=1", "wandb.mode=disabled")
    full = run_stage(tmp_path, "train", "full", 3, *det)
    resumed = run_stage(tmp_path, "train", "resumed", 3, *det, ckpt=tmp_path / "g1track/full/checkpoints/ckpt_000002.pt")
    a, b = full["policy"].state_dict(), resumed["policy"].state_dict()
    assert resumed["iterations"] == 3
    for k in a: assert torch.equal(a[k], b[k]), k
    assert resumed["resumed_env"]
    # through run:PROJECT/RUN_ID the checkpoint is latest.pt (a hard link): its environment state is found too
    again = run_stage(tmp_path, "train", "again", 4, *det, ckpt="run:g1track/full")
    assert again["resumed_env"] and again["iterations"] == 4
    # the control: a fresh run from the same seed but without the saved environment state differs
    other = run_stage(tmp_path, "train", "other", 1, *det, "seed=1")
    assert any(not torch.equal(a[k], other["policy"].state_dict()[k]) for k in a)


def torchrun(out, *overrides, port=29533):
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(ROOT / "tests/scripts/torchrun_train.py"), str(out), *overrides]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ranks=2" in r.stdout
    return [torch.load(out / f"rank{i}.pt") for i in range(2)]


def test_two_torchrun_ranks_end_with_identical_parameters_and_share_one_run(tmp_path):
    "Without wandb.id, rank 0 chooses the run id: both ranks' environment states land in one folder, and a resume finds them."
    common = ["+exp=train", f"run_dir={tmp_path}", *TINY[:-2], "wandb.mode=disabled", "progress=false"]
    r0, r1 = torchrun(tmp_path / "out1", *common, f"total_frames={2 * 2 * FRAMES_PER_IT}")
    for k in r0["params"]: assert torch.equal(r0["params"][k], r1["params"][k]), k
    p0 = r0["params"]
    assert any("normalizers" in k and p0[k].abs().sum() > 0 for k in p0)      # statistics were gathered ...
    assert r0["run_id"] == r1["run_id"]
    runs = list((tmp_path / "g1track").iterdir())
    assert runs == [tmp_path / "g1track" / r0["run_id"]], runs                # one run folder, not one per rank
    ckpts = runs[0] / "checkpoints"
    assert load_checkpoint(ckpts / "latest.pt")["world_size"] == 2
    assert sorted(p.name for p in ckpts.glob("ckpt_*.env*.pt")) == ["ckpt_000002.env0.pt", "ckpt_000002.env1.pt"]
    # ... and each rank saved its envs; resuming (again without wandb.id) finds both
    s0, s1 = torchrun(tmp_path / "out2", *common, f"total_frames={3 * 2 * FRAMES_PER_IT}", f"checkpoint_path={runs[0]}")
    assert s0["resumed_env"] and s1["resumed_env"] and s0["run_id"] == s1["run_id"] != r0["run_id"]
    for k in s0["params"]: assert torch.equal(s0["params"][k], s1["params"][k]), k


def test_cli_reports_bad_checkpoints_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "g1track.train", "+exp=finetune", "checkpoint_path=run:g1track/missing",
                        f"run_dir={tmp_path}", "wandb.mode=disabled"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: no checkpoint for run g1track/missing") and r.stderr.strip().count("\n") == 0
    r = subprocess.run([sys.executable, "-m", "g1track.train", f"run_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "+exp=train" in r.stderr


def test_resume_with_the_adaptive_lr_continues_from_the_saved_lr(tmp_path):
    det = ("deterministic=true", "save_every=1", "wandb.mode=disabled", "algo.lr_schedule=adaptive", "algo.desired_kl=1e-6")
    full = run_stage(tmp_path, "train", "full", 3, *det)
    ck2 = load_checkpoint(tmp_path / "g1track/full/checkpoints/ckpt_000002.pt")
    assert ck2["optimizer"]["lr"] != 5e-4                                       # the schedule moved it
    resumed = run_stage(tmp_path, "train", "resumed", 3, *det, ckpt=tmp_path / "g1track/full/checkpoints/ckpt_000002.pt")
    a, b = full["policy"].state_dict(), resumed["policy"].state_dict()
    for k in a: assert torch.equal(a[k], b[k]), k
    assert full["logs"]["ppo/lr"] == resumed["logs"]["ppo/lr"]


# ---- ready for a GPU: what can be proven on the CPU ----

class _EnvOnAnotherDevice:
    "Stands in for an env whose tensors live on a device that generator states may not (as a GPU)."
    def __init__(self, num_envs):
        self.device, self.num_envs = torch.device("meta"), num_envs
    def load_state_dict(self, sd):
        torch.Generator().set_state(sd["gen"])          # a generator state must be a CPU ByteTensor
        self.loaded = sd


def test_env_state_and_rng_load_to_the_cpu_whatever_the_env_device(tmp_path):
    path = tmp_path / "ckpt_000001.pt"
    rng = rng_states("cpu")
    torch.save(dict(env=dict(clip=torch.zeros(4, dtype=torch.long), gen=torch.Generator().manual_seed(3).get_state()),
                    obs=torch.ones(4, 3), **rng), env_state_file(path, 1, 0))
    expected = torch.rand(5)                             # what the restored CPU generator must draw next
    env, runner = _EnvOnAnotherDevice(4), types.SimpleNamespace(obs=None)
    assert _load_env_state(path, 1, 0, env, runner)      # map_location=env.device made set_state refuse the states
    assert runner.obs.device == env.device               # the rollout observation moved explicitly
    assert torch.equal(torch.rand(5), expected)


def test_the_cuda_rng_state_is_saved_and_restored(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.arange(16, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": calls.append((state, device)))
    st = rng_states("cuda:1")
    assert torch.equal(st["cuda_rng"], torch.arange(16, dtype=torch.uint8)) and rng_states("cpu")["cuda_rng"] is None
    restore_rng_states(st, "cuda:1")
    assert len(calls) == 1 and calls[0][0].device.type == "cpu" and torch.device(calls[0][1]) == torch.device("cuda:1")
    restore_rng_states(st, "cpu")                        # a CPU run leaves the CUDA generator alone
    assert len(calls) == 1


def test_auto_backend_on_a_gpu_machine_without_mujoco_warp_fails_in_one_sentence(monkeypatch):
    # (g1track.sim's resolve_backend; here because it is what `bash train.sh` meets first on a GPU machine)
    import g1track.sim as sim
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sim, "_import_mujoco_warp", lambda: (None, "ImportError: libcuda.so.1 missing"))
    with pytest.raises(sim.SimConfigError) as e:
        sim.resolve_backend("auto", "auto")
    msg = str(e.value)
    assert "ImportError: libcuda.so.1 missing" in msg and "backend=mujoco" in msg and msg.count(". ") == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sim.resolve_backend("auto", "auto")[0] == "mujoco"                  # no GPU: MuJoCo C, as before


# ---- train.sh, without training: a stand-in python records the commands ----

FAKE_PY = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then case "$2" in *device_count*) echo 2;; *) exit "${FAKE_GPU:-0}";; esac; exit 0; fi
echo "$*" >> "$FAKE_LOG"
"""


def run_train_sh(tmp_path, gpu=True, **env_vars):
    fake, log = tmp_path / "fakepy", tmp_path / "calls.log"
    fake.write_text(FAKE_PY); fake.chmod(0o755)
    if log.exists(): log.unlink()
    env = {k: v for k, v in os.environ.items() if k not in ("NNODES", "RDZV_ENDPOINT", "NODE_RANK", "RUN", "NPROC")}
    env.update(PYTHON=str(fake), FAKE_LOG=str(log), FAKE_GPU="0" if gpu else "1", RUN_DIR=str(tmp_path / "runs"), **env_vars)
    r = subprocess.run(["bash", "-u", str(ROOT / "train.sh"), "task.num_envs=64"], env=env, capture_output=True, text=True, timeout=60)
    return r, (log.read_text().splitlines() if log.exists() else [])


def test_train_sh_runs_the_gpu_branch_with_no_preset_under_set_u(tmp_path):
    r, calls = run_train_sh(tmp_path, RUN="r1")
    assert r.returncode == 0, r.stderr
    stages = [c for c in calls if "torch.distributed.run" in c]
    assert len(stages) == 3 and all("--standalone --nproc_per_node=2 -m g1track.train" in c for c in stages)
    assert all("preset" not in c and c.endswith("task.num_envs=64") for c in stages)
    assert "wandb.id=r1_train" in stages[0] and "checkpoint_path=run:g1track/r1_adapt" in stages[2]
    assert any(c.startswith("-m g1track.eval") for c in calls)
    r, calls = run_train_sh(tmp_path, gpu=False, RUN="r2")                      # the CPU branch keeps its preset
    assert r.returncode == 0 and sum("+preset=cpu_demo" in c for c in calls) == 3


def test_train_sh_expands_possibly_empty_arrays_safely_for_old_bash():
    "bash < 4.4 under set -u fails on \"${A[@]}\" of an empty array (bash 5 does not, so this reads the script)."
    text = (ROOT / "train.sh").read_text()
    import re
    maybe_empty = set(re.findall(r"^\s*(\w+)=\(\)", text, re.M))
    assert "PRESET" in maybe_empty
    for name in maybe_empty:
        bare = text.replace('${%s[@]+"${%s[@]}"}' % (name, name), "")
        assert '"${%s[@]}"' % name not in bare, f"train.sh expands the possibly empty array {name} unguarded"


def test_train_sh_spans_several_nodes_with_torchrun_rendezvous(tmp_path):
    r, calls = run_train_sh(tmp_path, NNODES="2", RDZV_ENDPOINT="node0:29400", RUN="big", NODE_RANK="1")
    assert r.returncode == 0, r.stderr
    stages = [c for c in calls if "torch.distributed.run" in c]
    assert len(stages) == 3 and all("--nnodes=2 --rdzv_backend=c10d --rdzv_endpoint=node0:29400 --rdzv_id=big" in c for c in stages)
    assert not any("g1track.eval" in c for c in calls)                          # node 1: the evaluation is node 0's
    r, calls = run_train_sh(tmp_path, NNODES="2", RUN="big")
    assert r.returncode != 0 and "RDZV_ENDPOINT" in r.stderr and not calls
    r, calls = run_train_sh(tmp_path, NNODES="2", RDZV_ENDPOINT="node0:29400")
    assert r.returncode != 0 and "same RUN" in r.stderr and not calls


def test_bench_gpu_says_it_found_no_gpu_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}                             # no GPU, on any machine
    r = subprocess.run([sys.executable, str(ROOT / "bench/gpu.py")], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("bench/gpu.py: no GPU found") and r.stdout.count("\n") == 1


# ---- observation layouts with a history (fast: plain dicts and a stand-in env) ----

NJ = len(G1_JOINT_NAMES)


def layout_env(history):
    "A stand-in env: a policy group with joint_pos and a 3-step actions history, and the terms with a history."
    from g1track.env import GROUPS
    layout = {g: [] for g in GROUPS}
    layout["policy"] = [("joint_pos", slice(0, NJ)), ("actions", slice(NJ, 4 * NJ))]
    return types.SimpleNamespace(layout=layout, **({} if history is None else {"history": {"policy": {"actions": history}}}))


def test_layout_records_each_terms_history_offsets():
    from g1track.runs import layout_of
    assert layout_of(layout_env([0, 1, 2]))["policy"] == [["joint_pos", 0, NJ], ["actions", NJ, 4 * NJ, [0, 1, 2]]]
    assert layout_of(layout_env(None))["policy"] == [["joint_pos", 0, NJ], ["actions", NJ, 4 * NJ]]   # no history: 3 elements


def test_check_layout_refuses_a_checkpoint_differing_only_in_a_terms_history():
    from g1track.runs import check_layout, layout_of
    check_layout({"obs_layout": layout_of(layout_env([0, 1, 2]))}, layout_env([0, 1, 2]))        # the same layout passes
    check_layout({"obs_layout": layout_of(layout_env(None))}, layout_env(None))                  # as do 3-element (old) layouts
    from g1track.env import GROUPS
    saved = {"obs_layout": {**{g: [] for g in GROUPS},                                          # same terms and widths,
                            "policy": [["joint_pos", 0, NJ], ["actions", NJ, 4 * NJ, [0, 2, 4]]]}}  # another history
    w = 3 * NJ
    with pytest.raises(CheckpointError, match=rf"different 'policy' observation layout.*actions: width {w}, history \[0, 2, 4\] "
                                              rf"in the checkpoint, width {w}, history \[0, 1, 2\] now"):
        check_layout(saved, layout_env([0, 1, 2]))
    with pytest.raises(CheckpointError, match=rf"actions: width {w} in the checkpoint, width {w}, history \[0, 1, 2\] now"):
        check_layout({"obs_layout": {**saved["obs_layout"], "policy": [["joint_pos", 0, NJ], ["actions", NJ, 4 * NJ]]}},
                     layout_env([0, 1, 2]))                                                      # an old checkpoint, no history


def test_a_checkpoint_with_another_actor_input_is_refused(pipeline):
    tmp, *_ = pipeline
    with pytest.raises(CheckpointError, match=r"trained with policy.actor_history=False.*pass policy.actor_history=False"):
        run_stage(tmp, "adapt", "bad4", 1, "policy.actor_history=true", ckpt="run:g1track/teach")
    from g1track.runs import check_policy
    from omegaconf import OmegaConf
    old = {"config": "policy: {actor: [64, 64]}"}              # written before actor_history existed: its actors read it all
    check_policy(old, OmegaConf.create({"policy": {"actor": [64, 64], "actor_history": True}}))
    with pytest.raises(CheckpointError, match=r"policy.actor_history=True, but this run sets policy.actor_history=False"):
        check_policy(old, OmegaConf.create({"policy": {"actor": [64, 64], "actor_history": False}}))


def test_actors_read_the_present_step_and_the_estimator_the_history(pipeline):
    "With actor_history=false (the default) the actor heads see the offset-0 block of each history term, adapt_module all of it."
    from g1track.modules import current_step_columns
    from g1track.runs import policy_from_checkpoint
    tmp, t, a, f = pipeline
    ckpt = load_checkpoint(f["checkpoint"])
    layout = ckpt["obs_layout"]["policy"]
    assert any(len(e) > 3 for e in layout), "the default task gives the policy group a history"
    pol = policy_from_checkpoint(ckpt)
    cols = current_step_columns(layout)
    dp = ckpt["obs_dims"]["policy"]
    assert pol.actor_student.mean_net[0].in_features == len(cols) + pol.latent_dim < dp + pol.latent_dim
    past = torch.ones(dp, dtype=torch.bool); past[cols] = False          # the columns of older steps
    g = torch.Generator().manual_seed(0)
    obs = {k: torch.randn(4, d, generator=g) for k, d in ckpt["obs_dims"].items()}
    moved = {**obs, "policy": obs["policy"] + 3.0 * past}
    from tensordict import TensorDict
    td = lambda o: TensorDict(o, batch_size=[4])
    teacher = [pol.act(td(o), "teacher", deterministic=True, with_value=False)[0] for o in (obs, moved)]
    assert torch.equal(teacher[0], teacher[1])                           # the teacher ignores the history
    assert not torch.allclose(pol.latent_hat(td(obs)), pol.latent_hat(td(moved)))   # the estimator reads it


def test_the_update_runs_on_every_cpu_and_the_rollout_on_one_thread(tmp_path, monkeypatch):
    "On a CPU the rollout keeps torch at 1 thread beside MuJoCo's pool; the update gets the process's CPUs, then 1 again."
    from g1track.ppo import PPO
    from g1track.stages import StageRunner, update_threads
    seen = {"update": [], "collect": []}
    ppo_update, collect = PPO.ppo_update, StageRunner.collect
    monkeypatch.setattr(PPO, "ppo_update", lambda self, *a, **k: seen["update"].append(torch.get_num_threads()) or ppo_update(self, *a, **k))
    monkeypatch.setattr(StageRunner, "collect", lambda self: seen["collect"].append(torch.get_num_threads()) or collect(self))
    run_stage(tmp_path, "train", "threads", 2, "update_threads=3")
    assert seen == {"update": [3, 3], "collect": [1, 1]}
    from omegaconf import OmegaConf
    cfg = lambda **kw: OmegaConf.create({"update_threads": None, "deterministic": False, **kw})
    assert update_threads(cfg(), "cuda") is None and update_threads(cfg(deterministic=True), "cpu") is None
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")                   # two ranks on this machine share its CPUs
    assert update_threads(cfg(), "cpu") == max(1, len(os.sched_getaffinity(0)) // 2)


def test_stage_1_pulls_z_towards_the_estimate_on_its_schedule_and_the_student_stages_do_not(pipeline):
    tmp, *_ = pipeline
    rows = lambda run: [json.loads(l) for l in (tmp / f"g1track/{run}/metrics.jsonl").read_text().splitlines() if l.strip()]
    teach = rows("teach")
    # linear from 0.5 to 1.0 over the stage's progress (iteration / iterations: 0, 1/3, 2/3)
    assert [r["ppo/latent_reg"] for r in teach] == pytest.approx([0.5, 2 / 3, 5 / 6])
    assert all(r["ppo/latent_gap"] > 0 for r in teach)
    assert not any("ppo/latent_reg" in r or "ppo/latent_gap" in r for r in rows("adapt") + rows("fine"))


@pytest.mark.parametrize("bad", ["algo.latent_reg=1.0", "algo.latent_reg=[0.0,-1.0]", "algo.latent_reg=[1,2,3]"])
def test_a_malformed_latent_reg_is_refused_in_one_sentence(bad):
    from g1track.config import ConfigError
    from g1track.stages import latent_reg_weights
    assert latent_reg_weights(compose(["+exp=train", "algo.latent_reg=[0.0,1.0]"])) == (0.0, 1.0)
    with pytest.raises(ConfigError, match=r"algo.latent_reg=.* is not a \[start, end\] pair of weights >= 0: pass e.g."):
        latent_reg_weights(compose(["+exp=train", bad]))


# ---- the checkpoint format (g1track.runs): checksum, upgrade, pruning order ----

def test_a_checkpoint_whose_contents_changed_is_refused_by_its_checksum(tmp_path):
    from g1track.runs import CHECKPOINT_FORMAT, atomic_save
    good = {"format": CHECKPOINT_FORMAT, "stage": "train", "iteration": 1, "policy": {"w": torch.arange(4.0)}}
    path = atomic_save(good, tmp_path / "ckpt_000001.pt")
    assert torch.equal(load_checkpoint(path)["policy"]["w"], torch.arange(4.0))
    saved = torch.load(path, weights_only=False)
    saved["policy"]["w"][2] = 2.5                                     # altered weights that still unpickle
    torch.save(saved, tmp_path / "ckpt_000002.pt")
    with pytest.raises(CheckpointError, match=r"ckpt_000002.pt is corrupted: its contents do not match the checksum"):
        load_checkpoint(tmp_path / "ckpt_000002.pt")
    del saved["checksum"]; torch.save(saved, tmp_path / "ckpt_000003.pt")
    with pytest.raises(CheckpointError, match="it has no checksum"):
        load_checkpoint(tmp_path / "ckpt_000003.pt")


def test_a_format_1_checkpoint_is_upgraded_in_one_place(tmp_path):
    "Format 1: no checksum, optimizer states per network, no actor_history or solver settings; it loads as today's format."
    from g1track.runs import CHECKPOINT_FORMAT, checkpoint_config
    old = {"format": "g1track-checkpoint/1", "stage": "train", "iteration": 3,
           "config": "task:\n  sim:\n    max_qvel: 1000.0\npolicy:\n  actor: [64, 64]\n",
           "optimizer": {"actor_teacher": {"state": {}, "param_groups": []}}}
    torch.save(old, tmp_path / "ckpt_000003.pt")
    ck = load_checkpoint(tmp_path / "ckpt_000003.pt")
    assert ck["format"] == CHECKPOINT_FORMAT and ck["lineage"] == []
    assert ck["optimizer"] == {"optimizers": old["optimizer"]}
    cfg = checkpoint_config(ck)
    assert cfg.policy.actor_history is True and cfg.task.sim.solver.iterations == 100


def test_checkpoints_are_pruned_by_iteration_not_by_name(tmp_path):
    from g1track.runs import checkpoint_iterations
    for i in (999999, 1000000, 5): (tmp_path / f"ckpt_{i:06d}.pt").write_bytes(b"")
    (tmp_path / "ckpt_000005.env0.pt").write_bytes(b"")
    assert checkpoint_iterations(tmp_path) == [5, 999999, 1000000]
