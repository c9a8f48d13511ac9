"""What stage 1 learns from, checked on the real environment: the PPO update starts on-policy, time-outs bootstrap and
terminations do not, the start sampler measures the motion rather than the start, the curriculum and the
reference-relative actions do what their configs say."""
import pytest
import torch

from g1track.config import ConfigError, compose, task_cfg
from g1track.env import TrackingEnv
from g1track.modules import TrackingPolicy
from g1track.motion import MotionLibrary, builtin_motion
from g1track.sampler import StartSampler
from g1track.stages import StageRunner

QUIET = ("task.randomization.enabled=false", "task.observations.noise.enabled=false")


@pytest.fixture(scope="module")
def squat():
    return builtin_motion("squat")


def _runner(squat, *overrides, n=8, T=12):
    cfg = compose(["+exp=train", "+preset=cpu_track", f"task.num_envs={n}", f"algo.train_every={T}", "total_frames=100000",
                   *overrides])
    env = TrackingEnv(cfg.task, num_envs=n, clips=[squat])
    policy = TrackingPolicy(env.obs_dims, env.nj, cfg.policy)
    return StageRunner(env, policy, cfg, generator=torch.Generator().manual_seed(0)), env


def test_the_first_minibatch_of_every_update_is_on_policy(squat):
    "Ratio exactly 1 and KL 0 before the first step of each update, while the normalizers learn and z is regularized."
    runner, env = _runner(squat, "algo.ppo_epochs=1", "algo.num_minibatches=1", "algo.latent_reg=[1.0,1.0]")
    for it in range(3):
        logs = runner.iteration(it)
        # float rounding of batched vs per-step log-probs only (a normalizer or latent off by one update gives > 1e-4)
        assert logs["ppo/approx_kl"] < 1e-8 and logs["ppo/clip_fraction"] == 0.0, logs


def test_time_outs_bootstrap_and_terminations_do_not(squat):
    runner, env = _runner(squat, "task.episode_length_s=0.1", *QUIET)      # 5-step episodes: time-outs in every rollout
    runner.collect()
    st = runner.storage
    env.frame[:2] = env.motion.num_frames[env.clip[:2]] - 3                  # two clip ends inside the next rollout
    runner.collect()
    cut = st.truncated & ~st.terminated
    assert cut.sum() >= 2 and (st.bootstrap_values[cut] != 0).all() and (st.bootstrap_values[~cut] == 0).all()
    # a terminated step never bootstraps, even when the time limit falls on it
    assert not (st.terminated & (st.bootstrap_values != 0)).any()


def _population(settle_s, steps=3000, n=512, seed=0):
    "Episodes on a clip of uniform difficulty: a hazard of 5 % a step for 0.5 s after each (kicked) start, then 0.2 %."
    lib = MotionLibrary([builtin_motion("squat")])
    g, dt = torch.Generator().manual_seed(seed), 0.02
    s = StartSampler(lib, {"uniform_floor": 0.1, "failure_half_life_s": 30.0, "failure_kernel": [1.0, 0.5],
                           "settle_s": settle_s}, dt, g)
    clip, frame = s.sample(n)
    age, last = torch.zeros(n, dtype=torch.long), lib.num_frames[clip] - 1
    for _ in range(steps):
        frame, age = torch.minimum(frame + 1, last), age + 1
        failed = torch.rand(n, generator=g) < torch.where(age * dt < 0.5, 0.05, 0.002)
        s.record(clip, frame, failed, age * dt >= s.settle_s)
        done = failed | (frame >= last)
        c2, f2 = s.sample(n)
        clip, frame, age = torch.where(done, c2, clip), torch.where(done, f2, frame), torch.where(done, 0, age)
    return s.distribution()


def test_start_sampling_measures_the_motion_not_the_start():
    "On a clip equally hard everywhere the starts spread evenly; counting the start's own failures piles them up."
    p = _population(settle_s=0.5)
    assert p.max() / p.min() < 1.5, p
    biased = _population(settle_s=0.0)
    assert biased[0] > 2.0 / len(biased), biased         # the first second: only fresh starts are ever in it


def test_a_clips_last_bin_is_not_weighed_down_by_the_kernel():
    "Equal failure rates give equal weights, the last bin included (it has no later bin to borrow from)."
    lib = MotionLibrary([builtin_motion("squat"), builtin_motion("stand")])
    s = StartSampler(lib, {"uniform_floor": 0.0, "failure_half_life_s": 30.0, "failure_kernel": [1.0, 0.5]}, 0.02,
                     torch.Generator().manual_seed(0))
    s.counts[:] = 1.0; s.visits[:] = 10.0
    torch.testing.assert_close(s.distribution(), torch.full((lib.num_bins,), 1.0 / lib.num_bins))


def test_the_curriculum_scales_the_start_noise_the_limits_and_the_action_rate_penalty(squat):
    cfg = task_cfg(*QUIET, "task.curriculum.reset_noise=[0.0,1.0]", "task.curriculum.termination_scale=[3.0,1.0]",
                   "task.curriculum.action_rate=[0.0,1.0]", "task.curriculum.span=0.5")
    env = TrackingEnv(cfg, num_envs=4, clips=[squat])
    assert env.curriculum["reset_noise"] == 1.0                          # built at the end values (evaluation)
    env.curriculum.set_progress(0.0)
    env.reset()
    torch.testing.assert_close(env.sim.qpos, env.motion.qpos(env.clip, env.frame))   # no start noise at all
    torch.testing.assert_close(env.sim.qvel, env.motion.qvel(env.clip, env.frame))
    out = env.step(torch.randn(4, 29, generator=torch.Generator().manual_seed(1)))
    assert (out["reward_terms"]["action_rate"] == 0).all()              # the penalty ramps in from zero
    lim = env._terminations(env.motion.get(env.clip, env.frame, (0,)))
    env.curriculum.set_progress(0.25)
    assert env.curriculum["termination_scale"] == 2.0 and env.curriculum["reset_noise"] == 0.5
    ref = env.motion.get(env.clip, env.frame, (0,))
    env.body_pos[:, env.anchor, 2] = ref.body_pos_w[:, 0, env.anchor, 2] + 0.4   # past 0.25 m, within 2 x 0.25 m
    assert not env._terminations(ref)["anchor_height"].any()
    env.curriculum.set_progress(1.0)
    assert env._terminations(ref)["anchor_height"].all()
    assert not any(v.any() for v in lim.values())


def test_the_stage_1_runner_moves_the_curriculum_and_the_later_stages_do_not(squat):
    runner, env = _runner(squat, "task.curriculum.reset_noise=[0.0,1.0]", n=4, T=4)
    runner.iteration(0)
    assert env.curriculum["reset_noise"] == 0.0
    runner.iteration(runner.total_iterations // 4)
    assert 0.0 < env.curriculum["reset_noise"] < 1.0


@pytest.mark.parametrize("bad,fragment", [("task.curriculum.reset_noise=[1.0]", "not a [start, end] pair"),
                                          ("task.curriculum.span=0", "task.curriculum.span"),
                                          ("+task.curriculum.asist=[1,0]", "unknown task.curriculum key"),
                                          ("task.curriculum.assist=[1.0,0.5]", "must end at 0"),
                                          ("task.action.relative_to=ref", "action.relative_to"),
                                          ("task.future_frames=[0,2,4]", "needs 1 in future_frames")])
def test_a_bad_curriculum_or_action_base_is_refused_in_one_sentence(squat, bad, fragment):
    extra = ("task.action.relative_to=reference",) if "future_frames" in bad else ()
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        TrackingEnv(task_cfg(bad, *extra), num_envs=2, clips=[squat])


def test_reference_relative_actions_hold_the_reference_at_zero(squat):
    "relative_to=reference: a zero action targets the reference joints of the frame the step reaches."
    env = TrackingEnv(task_cfg(*QUIET, "task.action.relative_to=reference"), num_envs=3, clips=[squat])
    env.set_fixed_starts(torch.zeros(3), torch.tensor([10, 100, 200]))      # away from the clip's end
    env.reset()
    f0 = env.frame.clone()
    env.step(torch.zeros(3, 29))
    torch.testing.assert_close(env.target, env.motion.qpos(env.clip, f0 + 1)[:, 7:])
    default = TrackingEnv(task_cfg(*QUIET), num_envs=3, clips=[squat])
    default.set_fixed_starts(torch.zeros(3), torch.tensor([10, 100, 200]))
    default.reset(); default.step(torch.zeros(3, 29))
    torch.testing.assert_close(default.target, default.default_joint_pos.expand(3, -1))


def test_a_linear_rate_goes_from_lr_to_lr_end_over_the_stage(squat):
    runner, env = _runner(squat, "algo.lr_schedule=linear", "algo.lr=3e-4", "algo.lr_end=1e-4", "algo.ppo_epochs=1", *QUIET)
    runner.total_iterations = 4
    for it, want in ((0, 3e-4), (2, 2e-4), (3, 1.5e-4)):
        assert runner.iteration(it)["ppo/lr"] == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="algo.lr_end"):
        _runner(squat, "algo.lr_schedule=linear", "algo.lr_end=null")
