"""Networks, observation normalizer, Gaussian head and the deployable student of g1track.modules."""
import io
import warnings

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from g1track.modules import MLP, DiagGaussian, GaussianActor, Normalizer, TrackingPolicy, policy_cfg



DIMS = {"policy": 23, "priv": 11, "critic_priv": 5}
SMALL = ("policy.latent_dim=6", "policy.encoder_priv=[16]", "policy.adapt_module=[16]", "policy.actor=[32,16]",
         "policy.critic=[32]")


def make_obs(*batch, scale=1.0, seed=0, dims=DIMS):
    g = torch.Generator().manual_seed(seed)
    return TensorDict({k: torch.randn(*batch, d, generator=g) * scale for k, d in dims.items()}, batch_size=list(batch))


@pytest.fixture
def policy():
    torch.manual_seed(0)
    return TrackingPolicy(DIMS, 29, policy_cfg(*SMALL))


def test_default_sizes_come_from_the_config():
    cfg = policy_cfg()
    pol = TrackingPolicy(DIMS, 29, cfg)
    linears = [m for m in pol.actor_teacher.mean_net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [*cfg.actor, 29]
    assert linears[0].in_features == DIMS["policy"] + cfg.latent_dim
    assert [m.out_features for m in pol.critic if isinstance(m, torch.nn.Linear)] == [*cfg.critic, 1]
    assert [m.out_features for m in pol.encoder_priv if isinstance(m, torch.nn.Linear)][-1] == cfg.latent_dim
    assert isinstance(pol.critic[1], torch.nn.ELU)
    assert torch.allclose(pol.actor_teacher.log_std.exp(), torch.full((29,), float(cfg.init_std)))
    assert pol.normalizers["priv"].clip == cfg.obs_clip
    assert policy_cfg("policy.latent_dim=7").latent_dim == 7


def test_mlp_and_unknown_activation():
    m = MLP(5, [8, 4], 3, "tanh")
    assert m(torch.randn(2, 7, 5)).shape == (2, 7, 3)
    assert sum(isinstance(x, torch.nn.Tanh) for x in m) == 2
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(5, [8], 3, "swishy")


def test_normalizer_merges_uneven_batches_exactly():
    g = torch.Generator().manual_seed(1)
    data = torch.randn(5000, 4, generator=g) * torch.tensor([0.1, 1, 10, 100]) + torch.tensor([-3.0, 0, 5, 1e3])
    nz = Normalizer(4)
    parts = data.split([3, 1, 996, 4000])
    nz.update(parts[0])
    assert nz.count == 3 and torch.allclose(nz.mean, parts[0].double().mean(0))   # the first batch commits at once
    for p in parts[1:]: nz.update(p)
    assert nz.count == 3                                                           # later ones wait for sync_
    nz.sync_()
    var, mean = torch.var_mean(data.double(), 0, correction=0)
    assert nz.count == 5000 and nz.mean.dtype == torch.float64
    torch.testing.assert_close(nz.mean, mean, rtol=0, atol=1e-10)
    torch.testing.assert_close(nz.var, var, rtol=1e-10, atol=0)
    y = nz(data)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(4), atol=1e-3, rtol=0)
    assert set(nz.state_dict()) == {"mean", "var", "count"}                        # pending stats are not saved


def test_normalizer_clips_and_freezes():
    nz = Normalizer(2, clip=3.0)
    nz.update(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))              # mean 1, std 1
    assert torch.equal(nz(torch.tensor([[100.0, -100.0]])), torch.tensor([[3.0, -3.0]]))
    nz.frozen = True
    before = {k: v.clone() for k, v in nz.state_dict().items()}
    nz.update(torch.randn(100, 2) * 50); nz.sync_()
    assert all(torch.equal(before[k], v) for k, v in nz.state_dict().items())


def test_diag_gaussian_matches_torch_normal():
    mean, log_std = torch.randn(6, 4), torch.randn(4) * 0.3
    d, ref = DiagGaussian(mean, log_std), torch.distributions.Normal(mean, log_std.exp())
    a = torch.randn(6, 4)
    torch.testing.assert_close(d.log_prob(a), ref.log_prob(a).sum(-1))
    torch.testing.assert_close(d.entropy(), ref.entropy().sum(-1))
    torch.manual_seed(0)
    s = DiagGaussian(torch.zeros(200_000, 1), torch.tensor([np.log(0.5)], dtype=torch.float32)).sample()
    assert abs(float(s.std()) - 0.5) < 0.01


def test_initial_actor_is_nearly_state_independent():
    actor = GaussianActor(10, [64, 64], 29, "elu", init_std=0.7)
    mean = actor(torch.randn(256, 10) * 3)
    assert mean.abs().max() < 0.2 and torch.allclose(actor.dist(torch.randn(1, 10)).stddev, torch.full((1, 29), 0.7))


def test_normalizer_ignores_non_finite_rows():
    g = torch.Generator().manual_seed(2)
    data = torch.randn(200, 3, generator=g) * 3 + 1
    data[5, 1], data[17, 0], data[150, 2] = float("nan"), float("inf"), -float("inf")
    nz = Normalizer(3)
    nz.update(data[:10]); nz.update(data[10:]); nz.sync_()
    keep = data.isfinite().all(-1)
    var, mean = torch.var_mean(data[keep].double(), 0, correction=0)
    assert nz.count == 197
    torch.testing.assert_close(nz.mean, mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(nz.var, var, rtol=1e-10, atol=0)
    before = {k: v.clone() for k, v in nz.state_dict().items()}
    nz.update(torch.full((4, 3), float("nan"))); nz.sync_()                     # nothing finite: nothing changes
    assert all(torch.equal(before[k], v) for k, v in nz.state_dict().items())
    fresh = Normalizer(3); fresh.update(torch.full((4, 3), float("nan"))); fresh.sync_()
    assert fresh.count == 0 and fresh.var.eq(1).all() and fresh.mean.eq(0).all()


class HostSyncs(torch.utils._python_dispatch.TorchDispatchMode):
    "Counts the ops that make a device->host synchronization: reading a scalar and nonzero()."
    def __init__(self):
        super().__init__(); self.ops = []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default): self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_policy_act_and_the_normalizer_make_no_host_sync(policy):
    with HostSyncs() as control: bool(torch.zeros(()) == 0)                  # the counter does see a sync
    assert len(control.ops) == 1
    with HostSyncs() as syncs:
        for seed in range(3): policy.act(make_obs(16, seed=seed), "teacher", update_stats=True)
        policy.sync_normalizers_()
        policy.act(make_obs(16, seed=5), "student", update_stats=True)
    assert syncs.ops == [] and policy.normalizers["policy"].count == 48
    loaded = TrackingPolicy(DIMS, 29, policy_cfg(*SMALL)); loaded.load_state_dict(policy.state_dict())
    with HostSyncs() as syncs: loaded.act(make_obs(16), "teacher", update_stats=True)
    assert syncs.ops == [] and loaded.normalizers["policy"].count == 48          # loaded statistics are not "fresh"


def test_shapes_for_rollout_and_storage_batches(policy):
    a, logp, v = policy.act(make_obs(17), "teacher")
    assert a.shape == (17, 29) and logp.shape == v.shape == (17,) and not a.requires_grad
    lp, ent, val = policy.evaluate(make_obs(4, 17), torch.randn(4, 17, 29), "student")
    assert lp.shape == ent.shape == val.shape == (4, 17) and lp.requires_grad and val.requires_grad
    assert policy.latent(make_obs(3)).shape == policy.latent_hat(make_obs(3)).shape == (3, 6)
    a_det, _, _ = policy.act(make_obs(5), "student", deterministic=True)
    torch.testing.assert_close(a_det, policy.dist(make_obs(5), "student").mean)


def test_each_path_reads_the_groups_it_should(policy):
    obs = make_obs(8)
    other_priv = obs.clone(); other_priv["priv"] = other_priv["priv"] + 1.0
    other_cp = obs.clone(); other_cp["critic_priv"] = other_cp["critic_priv"] + 1.0
    mean = lambda o, actor: policy.dist(o, actor).mean
    assert not torch.allclose(mean(obs, "teacher"), mean(other_priv, "teacher"))     # the teacher sees priv via z
    assert torch.equal(mean(obs, "student"), mean(other_priv, "student"))            # the student never does
    assert torch.equal(mean(obs, "teacher"), mean(other_cp, "teacher"))              # critic_priv is critic-only
    assert not torch.allclose(policy.value(obs), policy.value(other_cp))
    assert not torch.allclose(policy.value(obs), policy.value(other_priv))
    with pytest.raises(ValueError, match="actor must be"):
        policy.dist(obs, "expert")


def test_normalize_updates_only_when_asked_and_not_frozen(policy):
    obs = make_obs(64, scale=4.0)
    policy.normalize(obs)
    assert all(nz.count == 0 for nz in policy.normalizers.values())
    policy.act(obs, update_stats=True)
    assert all(nz.count == 64 for nz in policy.normalizers.values())
    n = policy.normalize(obs)
    assert float(n["priv"].std()) == pytest.approx(1.0, abs=0.05)
    policy.set_vecnorm("eval")
    policy.act(make_obs(64, seed=3), update_stats=True); policy.sync_normalizers_()
    assert all(nz.count == 64 for nz in policy.normalizers.values())
    with pytest.raises(ValueError): policy.set_vecnorm("frozen")


def test_copy_teacher_to_student_and_trainable_sets(policy):
    obs = make_obs(10)
    assert not torch.allclose(policy.actor_teacher(torch.randn(3, 29)), policy.actor_student(torch.randn(3, 29)))
    with torch.no_grad(): policy.actor_teacher.log_std.fill_(-1.3)
    policy.copy_teacher_to_student_()
    for a, b in zip(policy.actor_teacher.parameters(), policy.actor_student.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()          # copied, not shared
    x = torch.randn(3, 29)
    assert torch.equal(policy.actor_teacher(x), policy.actor_student(x))
    policy.set_trainable(["actor_student", "critic"])
    assert policy.trainable_names() == ("actor_student", "critic")
    assert not any(p.requires_grad for p in policy.parameters_of(["encoder_priv", "adapt_module", "actor_teacher"]))
    n_params = sum(p.numel() for p in policy.parameters_of("critic"))
    assert n_params == sum(p.numel() for p in policy.critic.parameters())
    with pytest.raises(ValueError, match="unknown networks"):
        policy.parameters_of(["critic", "actor"])
    with pytest.raises(ValueError, match="lacks the groups"):
        TrackingPolicy({"policy": 3}, 29, policy_cfg(*SMALL))


def test_critic_without_critic_priv():
    pol = TrackingPolicy({"policy": 7, "priv": 3}, 4, policy_cfg(*SMALL))
    obs = make_obs(5, dims={"policy": 7, "priv": 3})
    assert pol.value(obs).shape == (5,) and pol.critic[0].in_features == 10


def test_student_export_module_matches_and_is_a_snapshot(policy):
    obs = make_obs(32, scale=3.0)
    policy.act(obs, update_stats=True)
    student = policy.student_onnx_module()
    expected, _, _ = policy.act(obs, "student", deterministic=True)
    torch.testing.assert_close(student(obs["policy"]), expected, atol=1e-6, rtol=0)
    assert all(b.dtype == torch.float32 for b in student.buffers())
    assert not any(p.requires_grad for p in student.parameters())
    with torch.no_grad():
        for p in policy.actor_student.parameters(): p.add_(1.0)
    torch.testing.assert_close(student(obs["policy"]), expected, atol=1e-6, rtol=0)   # later training cannot change it


def test_student_exports_to_onnx_and_runs_in_onnxruntime(policy):
    ort = pytest.importorskip("onnxruntime")
    policy.act(make_obs(64, scale=2.0), update_stats=True)
    student = policy.student_onnx_module()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(student, (torch.randn(2, DIMS["policy"]),), f, dynamo=False, input_names=["obs"],
                          output_names=["action"], dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}})
    x = make_obs(9, scale=2.0, seed=7)["policy"]
    out = ort.InferenceSession(f.getvalue()).run(None, {"obs": x.numpy()})[0]
    np.testing.assert_allclose(out, student(x).numpy(), atol=1e-5, rtol=0)
