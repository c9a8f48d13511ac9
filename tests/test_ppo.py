"""GAE, rollout storage, PPO and adaptation updates, frozen networks, symmetry and a 2-rank gloo run (g1track.ppo)."""
import copy
import math
import os
import time

import pytest
import torch
import torch.multiprocessing as mp
from tensordict import TensorDict

from g1track.modules import TrackingPolicy, policy_cfg
from g1track.ppo import PPO, RolloutStorage, algo_cfg, collect_rollout, compute_gae, latent_gap, linear_schedule
from g1track.toy import TOY_POLICY, ToyReach, train_toy



NETS = ("encoder_priv", "adapt_module", "actor_teacher", "actor_student", "critic")


def gae_reference(r, v, last, term, trunc, boot, gamma, lam):
    "Scalar, per-env transcription of the GAE definition."
    T, N = r.shape
    adv = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        a = 0.0
        for t in reversed(range(T)):
            if term[t, n]: nxt, carry = 0.0, 0.0
            elif trunc[t, n]: nxt, carry = float(boot[t, n]), 0.0
            else: nxt, carry = float(v[t + 1, n]) if t + 1 < T else float(last[n]), a
            a = float(r[t, n]) + gamma * nxt - float(v[t, n]) + gamma * lam * carry
            adv[t, n] = a
    return adv


def test_gae_hand_computed_case():
    r = torch.tensor([[1., 0], [2, 0], [3, 1]])
    v = torch.tensor([[0.5, 0.2], [1.0, 0.3], [1.5, 0.4]])
    term = torch.tensor([[False, False], [False, False], [False, True]])
    trunc = torch.tensor([[False, False], [True, False], [False, False]])
    boot = torch.tensor([[0., 0], [4, 0], [0, 0]])
    adv, ret = compute_gae(r, v, torch.tensor([2.0, 9.0]), term, trunc, boot, 0.9, 0.8)
    torch.testing.assert_close(adv, torch.tensor([[4.712, 0.42424], [4.6, 0.492], [3.3, 0.6]]))
    torch.testing.assert_close(ret, adv + v)


def test_gae_matches_scalar_definition_with_random_flags():
    g = torch.Generator().manual_seed(0)
    T, N = 9, 6
    r, v, last, boot = (torch.randn(*s, generator=g) for s in ((T, N), (T, N), (N,), (T, N)))
    term = torch.rand(T, N, generator=g) < 0.2
    trunc = torch.rand(T, N, generator=g) < 0.2          # some steps are both: they count as terminated
    assert (term & trunc).any()
    adv, _ = compute_gae(r, v, last, term, trunc, boot, 0.97, 0.9)
    torch.testing.assert_close(adv.double(), gae_reference(r, v, last, term, trunc, boot, 0.97, 0.9), atol=1e-5, rtol=0)


def test_storage_fills_and_refuses_overflow():
    st = RolloutStorage(3, 4, {"policy": 5, "priv": 2}, 29)
    with pytest.raises(RuntimeError, match="holds 0 of 3"):
        st.compute_returns(0.99, 0.95)
    for t in range(3):
        obs = TensorDict({"policy": torch.full((4, 5), float(t)), "priv": torch.zeros(4, 2)}, batch_size=[4])
        st.add(obs, torch.ones(4, 29) * t, torch.zeros(4), torch.zeros(4), torch.ones(4),
               torch.zeros(4, dtype=torch.bool), torch.tensor([False, True, False, False]))
    with pytest.raises(RuntimeError, match="full"):
        st.add(obs, torch.ones(4, 29), torch.zeros(4), torch.zeros(4), torch.ones(4),
               torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))
    assert st.obs["policy"][:, 0, 0].tolist() == [0, 1, 2] and st.actions[2].eq(2).all()
    assert st.truncated[:, 1].all() and st.bootstrap_values.eq(0).all() and st.rewards.shape == (3, 4)
    st.compute_returns(0.5, 1.0)
    # env 0: r = 1 each step, last value 0 → 1.75, 1.5, 1; env 1 is cut every step without a bootstrap value → 1
    torch.testing.assert_close(st.returns[:, 0], torch.tensor([1.75, 1.5, 1.0]))
    torch.testing.assert_close(st.returns[:, 1], torch.ones(3))


def test_linear_schedule():
    assert linear_schedule(0.01, 0.0025, 0.0) == 0.01
    assert linear_schedule(0.01, 0.0025, 1.0) == 0.0025
    assert linear_schedule(0.01, 0.0025, 0.5) == pytest.approx(0.00625)
    assert linear_schedule(0.01, 0.0025, 7.0) == 0.0025 and linear_schedule(0.01, 0.0025, -1) == 0.01


def small_setup(num_envs=64, T=8, seed=0, **algo):
    torch.manual_seed(seed)
    env = ToyReach(num_envs, seed=seed)
    pol = TrackingPolicy(env.obs_dims, env.action_dim, policy_cfg(*TOY_POLICY))
    cfg = algo_cfg(f"algo.train_every={T}", *(f"algo.{k}={v}" for k, v in algo.items()), stage="train")
    storage = RolloutStorage(T, num_envs, env.obs_dims, env.action_dim)
    return env, pol, cfg, storage


def test_collect_rollout_bootstraps_exactly_the_truncated_steps():
    env, pol, cfg, storage = small_setup(num_envs=64, T=20)
    obs = collect_rollout(env, pol, storage, env.reset(), "teacher")
    cut = storage.truncated & ~storage.terminated
    assert cut[15].sum() > 0 and not cut[:15].any()                   # the 16-step time limit
    assert (storage.bootstrap_values[cut] != 0).all() and (storage.bootstrap_values[~cut] == 0).all()
    # the first observation after the cut belongs to a new episode (time left 1), not the final one
    assert (storage.obs["critic_priv"][16][cut[15]] == 1).all()
    torch.testing.assert_close(storage.last_values, pol.value(obs))


def snapshot(pol):
    return {n: [p.detach().clone() for p in getattr(pol, n).parameters()] for n in NETS}


def changed(pol, snap):
    return {n for n in NETS if not all(torch.equal(a, b) for a, b in zip(snap[n], getattr(pol, n).parameters()))}


@pytest.mark.parametrize("actor,trainable", [("teacher", ["actor_teacher", "encoder_priv", "critic"]),
                                             ("student", ["critic"]),
                                             ("student", ["actor_student", "critic"])])
def test_ppo_changes_exactly_the_trainable_networks(actor, trainable):
    env, pol, cfg, storage = small_setup()
    pol.copy_teacher_to_student_()
    pol.set_trainable(trainable)
    ppo = PPO(pol, cfg)
    collect_rollout(env, pol, storage, env.reset(), actor, update_stats=True)
    snap, stats = snapshot(pol), {k: v.clone() for k, v in pol.normalizers.state_dict().items()}
    logs = ppo.ppo_update(storage, actor, trainable, entropy_coef=0.01)
    assert changed(pol, snap) == set(trainable)
    assert all(p.grad is None for p in pol.parameters())
    assert {n for n, opt in ppo.optimizers.items() if opt.state} == set(trainable)
    # the rollout's pending statistics were committed at the end of the update (vecnorm=train)
    assert not torch.equal(stats["policy.count"], pol.normalizers["policy"].count)
    for k in ("ppo/policy_loss", "ppo/value_loss", "ppo/entropy", "ppo/approx_kl", "ppo/clip_fraction",
              "ppo/grad_norm", "ppo/action_std", "ppo/explained_variance", "ppo/entropy_coef", "ppo/lr"):
        assert isinstance(logs[k], float), k


def test_the_latent_regularizer_pulls_z_towards_the_detached_estimate():
    env, pol, cfg, storage = small_setup(num_envs=128, T=16)
    pol.set_vecnorm("eval")
    collect_rollout(env, pol, storage, env.reset(), "teacher")
    trainable = ["actor_teacher", "encoder_priv", "critic"]
    pol.set_trainable(trainable)
    start, nobs = copy.deepcopy(pol.state_dict()), pol.normalize(storage.data["obs"].reshape(-1))
    gaps, logs = {}, {}
    for lam in (0.0, 5.0):
        pol.load_state_dict(start)
        logs[lam] = PPO(pol, cfg, generator=torch.Generator().manual_seed(0)).ppo_update(storage, "teacher", trainable, 0.01, latent_reg=lam)
        with torch.no_grad(): gaps[lam] = latent_gap(pol, nobs).item()
        assert all(torch.equal(a, b) for a, b in zip(params_of(start, "adapt_module"), pol.adapt_module.state_dict().values()))
    assert gaps[5.0] < 0.85 * gaps[0.0]
    assert logs[5.0]["ppo/latent_reg"] == 5.0 and logs[5.0]["ppo/latent_gap"] > 0
    assert "ppo/latent_reg" not in logs[0.0] and "ppo/latent_gap" not in logs[0.0]
    # with mirror augmentation the twins are pulled towards their own (mirrored) estimates
    pol.load_state_dict(start)
    mcfg = algo_cfg("algo.train_every=16", "algo.symmetry=true", stage="train")
    logs = PPO(pol, mcfg, generator=torch.Generator().manual_seed(0)).ppo_update(storage, "teacher", trainable, 0.01, env.mirror, latent_reg=5.0)
    with torch.no_grad(): assert latent_gap(pol, nobs).item() < 0.85 * gaps[0.0] and logs["ppo/latent_gap"] > 0


def params_of(state_dict, network):
    return [v for k, v in state_dict.items() if k.startswith(network + ".")]


def test_adapt_update_trains_adapt_module_only_and_loss_falls():
    env, pol, cfg, storage = small_setup(num_envs=128, T=16)
    pol.set_vecnorm("eval")
    collect_rollout(env, pol, storage, env.reset(), "teacher")
    pol.set_trainable(["adapt_module"])
    ppo = PPO(pol, cfg)
    snap = snapshot(pol)
    losses = [ppo.adapt_update(storage)["adapt/estimator_loss"] for _ in range(15)]
    assert changed(pol, snap) == {"adapt_module"}
    assert {n for n, opt in ppo.optimizers.items() if opt.state} == {"adapt_module"}
    assert losses[-1] < 0.5 * losses[0]
    # 2 mini-epochs x num_minibatches Adam steps per call
    assert ppo.optimizers["adapt_module"].state[pol.adapt_module[0].weight]["step"] == 15 * 2 * cfg.num_minibatches


def test_the_estimator_r2_is_the_explained_variance_and_rises_as_the_estimator_fits():
    from g1track.ppo import explained_variance
    z = torch.randn(256, 8)
    assert explained_variance(z, z).item() == pytest.approx(1.0)
    assert explained_variance(z.mean(0).expand_as(z), z).item() == pytest.approx(0.0, abs=1e-6)
    assert explained_variance(z + 0.5 * torch.randn(256, 8), z).item() == pytest.approx(0.75, abs=0.1)
    env, pol, cfg, storage = small_setup(num_envs=128, T=16)
    pol.set_vecnorm("eval")
    collect_rollout(env, pol, storage, env.reset(), "teacher")
    pol.set_trainable(["adapt_module"])
    ppo = PPO(pol, cfg)
    r2 = [ppo.adapt_update(storage)["adapt/estimator_r2"] for _ in range(15)]    # measured before each update
    assert r2[-1] > r2[0] + 0.2 and r2[-1] <= 1.0


def test_mirror_critic_false_trains_the_critic_on_the_original_rows_only():
    "algo.mirror_critic=false: a critic-only update with mirror augmentation is the update without it, bit for bit."
    env, pol, cfg, storage = small_setup(num_envs=64, T=8)
    collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    start = {k: v.clone() for k, v in pol.state_dict().items()}
    def critic_after(*overrides):
        pol.load_state_dict(start)
        c = algo_cfg("algo.train_every=8", *overrides, stage="train")
        PPO(pol, c, generator=torch.Generator().manual_seed(0)).ppo_update(storage, "teacher", ["critic"], 0.0, env.mirror)
        return [p.detach().clone() for p in pol.critic.parameters()]
    plain = critic_after("algo.symmetry=false")
    originals_only = critic_after("algo.symmetry=true", "algo.mirror_critic=false")
    with_twins = critic_after("algo.symmetry=true", "algo.mirror_critic=true")
    assert all(torch.equal(a, b) for a, b in zip(plain, originals_only))
    assert not all(torch.equal(a, b) for a, b in zip(plain, with_twins))


def test_wrong_or_frozen_trainable_sets_are_refused():
    env, pol, cfg, storage = small_setup()
    collect_rollout(env, pol, storage, env.reset(), "student")
    ppo = PPO(pol, cfg)
    with pytest.raises(ValueError, match="cannot train"):
        ppo.ppo_update(storage, "student", ["encoder_priv", "critic"], 0.0)
    pol.set_trainable(["critic"])
    with pytest.raises(ValueError, match="requires_grad=False"):
        ppo.ppo_update(storage, "student", ["actor_student", "critic"], 0.0)
    cfg_sym = algo_cfg("algo.symmetry=true")
    with pytest.raises(ValueError, match="mirror"):
        PPO(pol, cfg_sym).ppo_update(storage, "student", ["critic"], 0.0)


def test_first_epoch_ratio_is_one_while_normalizer_learns():
    "Collection and update see the same normalization: the first minibatch's KL is zero, iteration after iteration."
    env, pol, cfg, storage = small_setup(ppo_epochs=1, num_minibatches=1)
    ppo = PPO(pol, cfg)
    obs = env.reset()
    for _ in range(3):
        obs = collect_rollout(env, pol, storage, obs, "teacher", update_stats=True)
        logs = ppo.ppo_update(storage, "teacher", ["actor_teacher", "encoder_priv", "critic"], 0.0)
        assert logs["ppo/approx_kl"] < 1e-10 and logs["ppo/clip_fraction"] == 0.0
    assert pol.normalizers["policy"].count == 3 * storage.T * storage.N


def test_gradient_is_clipped_to_max_grad_norm():
    env, pol, cfg, storage = small_setup(ppo_epochs=1, num_minibatches=1, max_grad_norm=1e-3)
    collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    ppo = PPO(pol, cfg)
    ppo.optimizers["critic"] = torch.optim.SGD(pol.critic.parameters(), lr=1.0)   # SGD: the step is the gradient
    before = torch.cat([p.detach().flatten().clone() for p in pol.critic.parameters()])
    logs = ppo.ppo_update(storage, "teacher", ["critic"], 0.0)
    step = torch.cat([p.detach().flatten() for p in pol.critic.parameters()]) - before
    assert logs["ppo/grad_norm"] > 1e-2
    assert float(step.norm()) == pytest.approx(1e-3, rel=1e-3)


def test_optimizer_state_round_trip_keeps_the_new_stage_lr():
    env, pol, cfg, storage = small_setup()
    collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    ppo = PPO(pol, cfg)
    ppo.ppo_update(storage, "teacher", ["actor_teacher", "encoder_priv", "critic"], 0.01)
    state = ppo.state_dict()
    ppo2 = PPO(pol, algo_cfg(stage="finetune"))
    ppo2.load_state_dict(state)
    assert ppo2.optimizers["critic"].param_groups[0]["lr"] == 1e-4
    w = pol.critic[0].weight
    assert torch.equal(ppo2.optimizers["critic"].state[w]["exp_avg"], ppo.optimizers["critic"].state[w]["exp_avg"])
    assert not ppo2.optimizers["actor_student"].state
    ppo2.reset_optimizers(["critic"])
    assert not ppo2.optimizers["critic"].state


def asymmetry(pol, seed=123):
    env = ToyReach(1024, seed=seed)
    obs = env.reset()
    for _ in range(3): obs = env.step(torch.randn(1024, 2, generator=torch.Generator().manual_seed(seed)))["obs"]
    a, _, _ = pol.act(obs, "teacher", deterministic=True)
    am, _, _ = pol.act(env.mirror.obs(obs), "teacher", deterministic=True)
    return float((am - env.mirror.action(a)).norm(dim=-1).mean() / a.norm(dim=-1).mean())


def test_ppo_learns_the_toy_task_and_mirror_augmentation_makes_it_symmetric():
    pol, h = train_toy(30, num_envs=256, symmetry=False, seed=0)
    pol_sym, h_sym = train_toy(30, num_envs=256, symmetry=True, seed=0)
    r, r_sym = h["ppo/reward_mean"], h_sym["ppo/reward_mean"]
    assert r[0] < 0.15 and r[-1] > 0.6 and r_sym[-1] > 0.6, (r[::5], r_sym[::5])   # about 0.8 after 30 iterations
    assert h["adapt/estimator_loss"][-1] < 0.3 * h["adapt/estimator_loss"][0]
    assert "ppo/mirror_ratio_dev" in h_sym and "ppo/mirror_ratio_dev" not in h
    a_plain, a_sym = asymmetry(pol), asymmetry(pol_sym)
    assert a_sym < 0.6 * a_plain and a_sym < 0.04, (a_plain, a_sym)      # 0.056 vs 0.025 at seed 0


# ---- two ranks on gloo ----

def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    from g1track.ppo import broadcast_module_
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)                      # different initial weights: broadcast must fix that
        env = ToyReach(32, seed=10 + rank)                  # different data on every rank
        pol = TrackingPolicy(env.obs_dims, env.action_dim, policy_cfg(*TOY_POLICY))
        broadcast_module_(pol)
        init = [p.detach().clone() for p in pol.parameters()]
        cfg = algo_cfg("algo.train_every=8", "algo.ppo_epochs=2", "algo.num_minibatches=4", "algo.symmetry=true",
                       "algo.lr_schedule=adaptive")   # every rank must pick the same lr from its own data
        storage = RolloutStorage(cfg.train_every, env.N, env.obs_dims, env.action_dim)
        ppo = PPO(pol, cfg, generator=torch.Generator().manual_seed(rank))
        obs = collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
        logs = ppo.ppo_update(storage, "teacher", ["actor_teacher", "encoder_priv", "critic"], 0.01, mirror=env.mirror)
        logs.update(ppo.adapt_update(storage))
        torch.save({"params": [p.detach() for p in pol.parameters()], "init": init,
                    "norm": {k: v for k, v in pol.normalizers.state_dict().items()},
                    "obs": storage.obs.to_dict(), "logs": logs}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _two_ranks(worker, tmp_path, timeout_s: float = 120.0) -> tuple:
    "Run `worker` on 2 spawned gloo ranks (killed after `timeout_s`) and load what each saved."
    ctx = mp.start_processes(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.time() + timeout_s
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes: p.kill()
            pytest.fail(f"the 2-rank run did not finish in {timeout_s:.0f} s")
    return tuple(torch.load(tmp_path / f"rank{i}.pt") for i in range(2))


def test_two_ranks_stay_identical_and_share_normalizer_statistics(tmp_path):
    r0, r1 = _two_ranks(_ddp_worker, tmp_path)
    assert not torch.equal(r0["obs"]["policy"], r1["obs"]["policy"])                  # the ranks saw different data
    assert all(torch.equal(a, b) for a, b in zip(r0["init"], r1["init"]))              # broadcast at start
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"]))          # identical after the updates
    assert not all(torch.equal(a, b) for a, b in zip(r0["init"], r0["params"]))        # ... and they did learn
    assert r0["logs"] == r1["logs"]                                                    # logs are rank means
    assert r0["logs"]["ppo/lr"] != pytest.approx(5e-4)                                 # the adaptive lr moved, alike
    for group in ("policy", "priv", "critic_priv"):
        data = torch.cat([r["obs"][group].reshape(-1, r["obs"][group].shape[-1]) for r in (r0, r1)]).double()
        var, mean = torch.var_mean(data, 0, correction=0)
        for r in (r0, r1):
            n = r["norm"]
            assert n[f"{group}.count"] == data.shape[0]
            torch.testing.assert_close(n[f"{group}.mean"], mean, atol=1e-9, rtol=0)
            torch.testing.assert_close(n[f"{group}.var"], var, atol=1e-9, rtol=1e-9)
        assert torch.equal(r0["norm"][f"{group}.mean"], r1["norm"][f"{group}.mean"])


# ---- the KL-targeted adaptive learning rate ----

TEACHER_NETS = ["actor_teacher", "encoder_priv", "critic"]


@pytest.mark.parametrize("desired_kl", [1e-9, 1e3])
def test_adaptive_lr_goes_down_when_the_kl_is_above_target_and_up_below(desired_kl):
    env, pol, cfg, storage = small_setup(lr_schedule="adaptive", desired_kl=desired_kl, ppo_epochs=2, num_minibatches=2)
    ppo = PPO(pol, cfg)
    collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    lr0 = float(ppo.lr)
    logs = ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
    assert logs["ppo/lr"] == pytest.approx(float(ppo.lr)) and logs["ppo/kl"] >= 0
    if desired_kl < 1:   # the first minibatch sees KL 0 (x1.5), the other three a KL far above 2e-9 (/1.5 each)
        assert float(ppo.lr) == pytest.approx(lr0 / 1.5 ** 2, rel=1e-5)
    else:                # every minibatch is far below the target: x1.5 four times
        assert float(ppo.lr) == pytest.approx(lr0 * 1.5 ** 4, rel=1e-5)
    # the PPO-trained optimizers use the schedule's lr; adapt_module's MSE keeps algo.lr
    assert float(ppo.optimizers["critic"].param_groups[0]["lr"]) == pytest.approx(float(ppo.lr))
    assert ppo.optimizers["adapt_module"].param_groups[0]["lr"] == cfg.lr


def test_adaptive_lr_stays_within_its_bounds_and_fixed_never_moves():
    env, pol, cfg, storage = small_setup(lr_schedule="adaptive", desired_kl=1e3, lr_bounds="[1e-4,6e-4]")
    ppo = PPO(pol, cfg)
    collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
    assert float(ppo.lr) == pytest.approx(6e-4)
    env, pol, cfg, storage = small_setup(desired_kl=1e-9)                       # lr_schedule=fixed (the default)
    ppo = PPO(pol, cfg)
    collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    logs = ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
    assert ppo.lr == torch.tensor(cfg.lr) and logs["ppo/lr"] == pytest.approx(cfg.lr) and "ppo/kl" not in logs
    with pytest.raises(ValueError, match="lr_schedule"):
        PPO(pol, algo_cfg("algo.lr_schedule=cosine"))


def test_the_adaptive_lr_holds_still_while_only_the_critic_learns():
    "Finetune's critic warm-up: the actor does not change, its KL stays 0, which must not drive the critic's rate up."
    env, pol, cfg, storage = small_setup(lr_schedule="adaptive", desired_kl=0.01)
    pol.set_trainable(["critic"])
    ppo = PPO(pol, cfg)
    collect_rollout(env, pol, storage, env.reset(), "student", update_stats=True)
    logs = ppo.ppo_update(storage, "student", ["critic"], 0.0)
    assert float(ppo.lr) == pytest.approx(cfg.lr) and "ppo/kl" not in logs


def test_the_adaptive_lr_is_saved_and_restored():
    env, pol, cfg, storage = small_setup(lr_schedule="adaptive", desired_kl=1e3)
    ppo = PPO(pol, cfg)
    collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
    state = ppo.state_dict()
    assert state["lr"] == float(ppo.lr) != cfg.lr
    again = PPO(pol, cfg); again.load_state_dict(state)
    assert float(again.lr) == state["lr"]                                        # adaptive: resumes where it was
    assert float(again.optimizers["critic"].param_groups[0]["lr"]) == state["lr"]
    fixed = PPO(pol, algo_cfg(stage="finetune")); fixed.load_state_dict(state)
    assert float(fixed.lr) == pytest.approx(1e-4)                                # fixed: the stage's lr


def test_the_adaptive_lr_follows_the_kl_averaged_over_ranks(monkeypatch):
    import g1track.ppo as ppo_module
    env, pol, cfg, storage = small_setup(lr_schedule="adaptive", desired_kl=0.01, ppo_epochs=1, num_minibatches=2)
    ppo = PPO(pol, cfg)
    collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    lr0 = float(ppo.lr)
    def other_rank_far_off(x):        # the gradient all-reduce (gradients, loss, KL last): the mean KL is large
        if x.numel() > 1000: x[-1] = 1.0
        return x
    monkeypatch.setattr(ppo_module, "all_reduce_mean_", other_rank_far_off)
    ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
    assert float(ppo.lr) == pytest.approx(lr0 / 1.5 ** 2, rel=1e-5)        # this rank's own KL (0 at first) would raise it


def test_gaussian_kl_matches_torch():
    from g1track.ppo import gaussian_kl
    g = torch.Generator().manual_seed(0)
    m0, m1, s0, s1 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.randn(3, generator=g), torch.randn(3, generator=g)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m0, s0.exp()), torch.distributions.Normal(m1, s1.exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(m0, s0.expand(5, 3), m1, s1.expand(5, 3)), ref)


# ---- NaN guards ----

def params_finite(pol):
    return all(p.isfinite().all() for p in pol.parameters())


def test_a_non_finite_loss_skips_the_update_and_training_goes_on():
    env, pol, cfg, storage = small_setup(ppo_epochs=2, num_minibatches=2)
    ppo = PPO(pol, cfg)
    obs = collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    storage.data["rewards"][3, 5] = float("nan")                # poisons every advantage through the normalization
    snap = snapshot(pol)
    logs = ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
    assert logs["ppo/skipped_updates"] == 4 and changed(pol, snap) == set() and params_finite(pol)
    assert all(float(s["step"]) == 0 for s in ppo.optimizers["critic"].state.values())   # Adam did not count them
    collect_rollout(env, pol, storage, obs, "teacher", update_stats=True)
    logs = ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
    assert logs["ppo/skipped_updates"] == 0 and changed(pol, snap) == set(TEACHER_NETS) and params_finite(pol)


def test_a_non_finite_gradient_skips_the_update_and_training_goes_on():
    env, pol, cfg, storage = small_setup(ppo_epochs=1, num_minibatches=2)
    ppo = PPO(pol, cfg)
    obs = collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    hook = pol.critic[0].weight.register_hook(lambda g: g * float("inf"))  # finite loss, infinite gradient
    snap = snapshot(pol)
    logs = ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
    assert logs["ppo/skipped_updates"] == 2 and changed(pol, snap) == set() and params_finite(pol)
    assert logs["ppo/policy_loss"] == logs["ppo/policy_loss"]                  # the loss itself was finite
    hook.remove()
    collect_rollout(env, pol, storage, obs, "teacher", update_stats=True)
    logs = ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
    assert logs["ppo/skipped_updates"] == 0 and changed(pol, snap) == set(TEACHER_NETS) and params_finite(pol)
    # the adaptation update has the same guard
    hook = pol.adapt_module[0].weight.register_hook(lambda g: g * float("nan"))
    pol.set_trainable(["adapt_module"])
    before = [p.detach().clone() for p in pol.adapt_module.parameters()]
    assert ppo.adapt_update(storage)["adapt/skipped_updates"] == 2 * cfg.num_minibatches
    assert all(torch.equal(a, b) for a, b in zip(before, pol.adapt_module.parameters()))
    hook.remove()


def test_log_std_stays_within_its_bounds():
    env, pol, cfg, storage = small_setup(ppo_epochs=2, num_minibatches=2, lr=0.5)
    lo, hi = pol.actor_teacher.log_std_bounds
    with torch.no_grad(): pol.actor_teacher.log_std.fill_(hi + 3)              # e.g. a corrupted checkpoint
    assert torch.allclose(pol.actor_teacher.std(), torch.full((2,), math.exp(hi)))
    ppo = PPO(pol, cfg)
    collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
    ppo.ppo_update(storage, "teacher", TEACHER_NETS, entropy_coef=100.0)        # a huge entropy bonus pushes the std up
    ls = pol.actor_teacher.log_std
    assert ls.isfinite().all() and (ls <= hi).all() and (ls >= lo).all()
    ppo.ppo_update(storage, "teacher", TEACHER_NETS, entropy_coef=-100.0)       # ... and a negative one down
    assert (pol.actor_teacher.log_std >= lo).all() and params_finite(pol)
    with pytest.raises(ValueError, match="log_std_bounds"):
        TrackingPolicy(env.obs_dims, env.action_dim, policy_cfg(*TOY_POLICY, "policy.log_std_bounds=[-1,-0.5]"))


def _poison_worker(rank, world, init_file, out_dir):
    "Rank 1's rollout holds a NaN reward: both ranks must skip the same updates and stay identical."
    import torch.distributed as dist
    from g1track.ppo import broadcast_module_
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        env = ToyReach(32, seed=10 + rank)
        pol = TrackingPolicy(env.obs_dims, env.action_dim, policy_cfg(*TOY_POLICY))
        broadcast_module_(pol)
        cfg = algo_cfg("algo.train_every=8", "algo.ppo_epochs=1", "algo.num_minibatches=2")
        storage = RolloutStorage(cfg.train_every, env.N, env.obs_dims, env.action_dim)
        ppo = PPO(pol, cfg, generator=torch.Generator().manual_seed(rank))
        obs = collect_rollout(env, pol, storage, env.reset(), "teacher", update_stats=True)
        if rank == 1: storage.data["rewards"][2, 3] = float("inf")
        init = [p.detach().clone() for p in pol.parameters()]
        first = ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
        after_fault = [p.detach().clone() for p in pol.parameters()]
        collect_rollout(env, pol, storage, obs, "teacher", update_stats=True)
        second = ppo.ppo_update(storage, "teacher", TEACHER_NETS, 0.01)
        torch.save({"init": init, "after_fault": after_fault, "params": [p.detach() for p in pol.parameters()],
                    "skipped": [first["ppo/skipped_updates"], second["ppo/skipped_updates"]]}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_a_fault_on_one_rank_skips_the_update_on_every_rank(tmp_path):
    r0, r1 = _two_ranks(_poison_worker, tmp_path)
    assert r0["skipped"] == r1["skipped"] == [2, 0]
    for r in (r0, r1): assert all(torch.equal(a, b) for a, b in zip(r["init"], r["after_fault"]))
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"]))
    assert all(p.isfinite().all() for p in r0["params"]) and not all(torch.equal(a, b) for a, b in zip(r0["init"], r0["params"]))
