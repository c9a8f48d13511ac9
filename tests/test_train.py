"""The three stages and training runs: what trains and what stays frozen, ranks, resume, run resolution, errors."""
import os, subprocess, sys, pathlib
import pytest
import torch

from g1track.config import compose
from g1track.stages import STAGES, stage_table
from g1track.train import (CheckpointError, load_checkpoint, resolve_checkpoint, train)

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


NETWORKS = ("encoder_priv", "actor_teacher", "actor_student", "critic", "adapt_module")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    "A tiny teacher -> adapt -> finetune pipeline; checkpoints after every iteration."
    tmp = tmp_path_factory.mktemp("runs")
    t = run_stage(tmp, "train", "teach", 3, "save_every=1")
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
    assert "adapt/estimator_loss" in metrics and "ppo/policy_loss" not in metrics


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


def test_two_torchrun_ranks_end_with_identical_parameters(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    overrides = ["+exp=train", f"run_dir={tmp_path}", "wandb.id=ddp", f"total_frames={2 * 2 * FRAMES_PER_IT}", *TINY[:-2],
                 "wandb.mode=disabled", "progress=false"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(ROOT / "tests/scripts/torchrun_train.py"), str(tmp_path), *overrides]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ranks=2" in r.stdout
    p0, p1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in p0: assert torch.equal(p0[k], p1[k]), k
    assert any("normalizers" in k and p0[k].abs().sum() > 0 for k in p0)      # statistics were gathered ...
    assert load_checkpoint(tmp_path / "g1track/ddp/checkpoints/latest.pt")["world_size"] == 2
    assert list((tmp_path / "g1track/ddp/checkpoints").glob("ckpt_*.env1.pt"))   # ... and each rank saved its envs


def test_cli_reports_bad_checkpoints_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "g1track.train", "+exp=finetune", "checkpoint_path=run:g1track/missing",
                        f"run_dir={tmp_path}", "wandb.mode=disabled"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: no checkpoint for run g1track/missing") and r.stderr.strip().count("\n") == 0
    r = subprocess.run([sys.executable, "-m", "g1track.train", f"run_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "+exp=train" in r.stderr
