"""The tracking MDP: layout, reward/reference alignment, terminations, truncations, mirroring, resets, errors."""
import math
import pytest
import torch

from g1track.config import ConfigError, task_cfg
from g1track.env import GROUPS, REWARD_TERMS, TrackingEnv, mirror_qpos, mirror_qvel
from g1track.motion import builtin_motion, canonicalize, load_motion

QUIET = ("task.randomization.enabled=false", "task.observations.noise.enabled=false")
TRACKING = REWARD_TERMS[:6]


def make_env(*overrides, n=4, clips=None, backend=None, seed=0):
    return TrackingEnv(task_cfg(*overrides), num_envs=n, backend=backend, seed=seed, clips=clips)


@pytest.fixture(scope="module")
def squat():
    return builtin_motion("squat")


def test_layout_is_contiguous_and_matches_the_observations(squat):
    env = make_env(*QUIET, clips=[squat])
    obs = env.reset()
    for g in GROUPS:
        slices = [sl for _, sl in env.layout[g]]
        assert slices[0].start == 0 and all(a.stop == b.start for a, b in zip(slices, slices[1:]))
        assert obs[g].shape == (4, env.obs_dims[g]) and torch.isfinite(obs[g]).all()
    # reference joints and anchor orientation over 5 future frames, IMU, joint positions 0-4 and 8 steps back,
    # joint velocities, the last 3 actions
    assert env.obs_dims["policy"] == 5 * 29 * 2 + 5 * 6 + 3 + 3 + 29 * 6 + 29 + 29 * 3
    assert env.history["policy"] == {"joint_pos": [0, 1, 2, 3, 4, 8], "last_action": [0, 1, 2]}
    table = env.layout_table()
    assert "ref_joint_pos" in table and "future_body_pos_error" in table and str(env.obs_dims["priv"]) in table


def test_kinematic_replay_scores_every_tracking_term_at_its_maximum(squat):
    env = make_env(*QUIET, n=4, clips=[squat, builtin_motion("step_in_place")])
    env.reset()
    scale = env.c.reward_scale
    for _ in range(150):
        out = env.step(torch.zeros(4, 29), kinematic=True)
        assert not out["terminated"].any()
        log = env.pop_log()                                          # means over this step's 4 env-steps
        for k in TRACKING:
            assert log[f"reward/{k}"] == pytest.approx(scale * env.c.rewards[k].weight, rel=1e-5), k
        assert log["metrics/body_pos_error_m"] < 1e-5


def test_kinematic_replay_of_a_real_lafan_clip_is_scored_at_maximum(motions_dir):
    clip = load_motion(motions_dir / "lafan1_g1_dance2_subject1.csv", frames="0:900")
    env = make_env(*QUIET, n=2, clips=[clip])
    env.reset()
    worst = 1.0
    for _ in range(100):
        out = env.step(torch.zeros(2, 29), kinematic=True)
        assert not out["terminated"].any()
        log = env.pop_log()
        for k in TRACKING:
            worst = min(worst, log[f"reward/{k}"] / (env.c.reward_scale * env.c.rewards[k].weight))
    assert worst > 1 - 1e-5


def test_a_step_is_scored_against_the_frame_it_reaches_not_the_one_it_started_from(squat):
    "The state after a step is one control period on: its reward and terminations read the reference frame of that instant."
    env = make_env(*QUIET, n=2, clips=[squat])
    env.reset()
    f0 = env.frame.clone()
    env.step(0.5 * torch.ones(2, 29))
    assert (env.frame == f0 + 1).all()
    from g1track.env import tracking_errors
    errors = lambda frame: tracking_errors(env.body_pos, env.body_quat, env.body_lin, env.body_ang, env.motion.get(env.clip, frame, (0,)), env.anchor)
    reached, started = errors(f0 + 1), errors(f0)
    torch.testing.assert_close(env.errors["body_pos"], reached["body_pos"])
    assert not torch.allclose(env.errors["body_pos"], started["body_pos"])


def _reference_actions(env):
    "Actions that put every joint target on the reference: open-loop PD tracking, no feedback."
    ref = env.motion.get(env.clip, env.frame).joint_pos[:, 0]
    return (ref - env.default_joint_pos) / env.action_scale


def test_a_robot_left_to_fall_under_open_loop_pd_is_terminated_within_1_5_s(motions_dir):
    # a real dance under open-loop PD (joint targets on the reference): every robot falls, and its
    # episode ends within 1.5 s of its start, most within half a second (a few calm starts last ~1.4 s)
    clip = load_motion(motions_dir / "lafan1_g1_dance2_subject1.csv")
    env = make_env(*QUIET, n=64, clips=[clip], seed=1)
    env.reset()
    first_end, clip_ended = torch.full((64,), -1), torch.zeros(64, dtype=torch.bool)
    for t in range(int(1.5 / env.dt)):
        out = env.step(_reference_actions(env))
        clip_ended |= (first_end < 0) & out["truncated"]          # started within 1 s of the clip's end
        first_end[(first_end < 0) & out["terminated"]] = t
    assert clip_ended.sum() <= 2
    assert (first_end[~clip_ended] >= 0).all(), f"still going after 1.5 s: {first_end}"
    assert first_end[~clip_ended].float().median() * env.dt < 0.5


def test_a_termination_set_to_null_is_off_and_the_others_still_end_episodes(motions_dir):
    "task.terminations.NAME=null switches one term off: it never ends an episode and has no log key; the rest still work."
    clip = load_motion(motions_dir / "lafan1_g1_dance2_subject1.csv")
    ends = {}
    for off in ("ee_height", "anchor_height"):
        env = make_env(*QUIET, f"task.terminations.{off}=null", n=32, clips=[clip], seed=1)
        env.reset()
        seen = torch.zeros(32, dtype=torch.bool)
        for _ in range(int(1.5 / env.dt)):
            seen |= env.step(_reference_actions(env))["terminated"]
        log = env.pop_log()
        assert off not in env.terminations and f"termination/{off}" not in log
        ends[off] = (int(seen.sum()), {k: v for k, v in log.items() if k.startswith("termination/")})
    # the falls still end with the other terms on (a falling robot's anchor drops and tilts, its feet leave their marks)
    assert ends["ee_height"][0] >= 28 and ends["anchor_height"][0] >= 28, ends
    assert ends["ee_height"][1]["termination/anchor_height"] > 0 and ends["anchor_height"][1]["termination/ee_height"] > 0, ends


def test_a_fallen_robot_never_lies_on_the_floor_with_its_episode_running():
    env = make_env(*QUIET, n=16, clips=[builtin_motion("step_in_place"), builtin_motion("stand")])
    env.reset()
    ended = 0
    for _ in range(int(3.0 / env.dt)):
        pelvis_before = env.sim.qpos[:, 2].clone()
        out = env.step(_reference_actions(env))
        running = ~(out["terminated"] | out["truncated"])
        assert (env.sim.qpos[running, 2] > 0.45).all(), "an episode kept running with the robot on the floor"
        ended += int(out["terminated"].sum())
    assert ended >= 16                                   # under open-loop PD every robot falls at least once
    log = env.pop_log()
    assert log["termination/anchor_tilt"] + log["termination/anchor_height"] + log["termination/ee_height"] > 0


def test_mirrored_state_gives_mirrored_observations():
    from g1track.robot import load_g1
    wave, g1 = builtin_motion("arm_wave"), load_g1(visual=False)           # an asymmetric motion
    mirrored = canonicalize(mirror_qpos(g1, torch.tensor(wave.qpos)).numpy(), wave.fps, g1, "arm_wave_mirrored")
    env = make_env("task.observations.noise.enabled=false", n=2, clips=[wave, mirrored])
    env.push_timer[:] = math.inf
    one = torch.tensor([1])
    # env 1 gets the mirror image of env 0's physical parameters ...
    p = env.params
    mp = dict(friction=p["friction"][:1], mass_scale=p["mass_scale"][:1, g1.body_mirror], com_offset=p["com_offset"][:1] * torch.tensor([1.0, -1, 1]),
              kp_scale=p["kp_scale"][:1, g1.mirror_perm], kd_scale=p["kd_scale"][:1, g1.mirror_perm])
    env.sim.set_params(one, **mp)
    for k, v in mp.items(): p[k][1] = v[0]
    env.joint_offset[1] = g1.mirror_joints(env.joint_offset[0]); env.action_delay[1] = env.action_delay[0]
    # ... of its state, slightly off the reference and moving ...
    gen = torch.Generator().manual_seed(3)
    frame = 150
    q0 = torch.tensor(wave.qpos[frame], dtype=torch.float32); q0[7:] += 0.05 * torch.randn(29, generator=gen)
    v0 = torch.tensor(wave.qvel[frame], dtype=torch.float32) + 0.2 * torch.randn(35, generator=gen)
    qpos, qvel = torch.stack([q0, mirror_qpos(g1, q0)]), torch.stack([v0, mirror_qvel(g1, v0)])
    env.clip[:] = torch.tensor([0, 1]); env.frame[:] = frame
    env.sim.set_state(torch.arange(2), qpos, qvel)
    env.target[:] = env.default_joint_pos + env.joint_offset
    env.last_action[:] = torch.stack([a := 0.3 * torch.randn(29, generator=gen), g1.mirror_joints(a)])
    env._read_state()
    env.restart_history()                             # the history starts at the state placed by hand
    static = env.observe()
    mirrored_static = env.mirror.obs(static[:1])
    for g in GROUPS:                                  # the same state, before any physics: exact mirror images
        torch.testing.assert_close(static[g][1], mirrored_static[g][0], atol=1e-4, rtol=0)
    # ... and of its action; one physics step later its observations are the mirror image.
    a0 = 0.3 * torch.randn(29, generator=gen)
    out = env.step(torch.stack([a0, g1.mirror_joints(a0)]))
    assert not (out["terminated"] | out["truncated"]).any()
    # the G1 model is symmetric to ~10 um, so one physics step later the two agree to ~0.2 %
    mirrored_obs = env.mirror.obs(out["obs"][:1])
    for g in GROUPS:
        assert out["obs"][g][0].abs().max() > 0.1
        for name, sl in env.layout[g]:
            x, y = out["obs"][g][1, sl], mirrored_obs[g][0, sl]
            assert (x - y).abs().max() <= 5e-3 * (1 + out["obs"][g][0, sl].abs().max()), f"{g}/{name}"
    assert out["reward"][0] == pytest.approx(float(out["reward"][1]), rel=1e-3)
    twice = env.mirror.obs(env.mirror.obs(out["obs"]))
    for g in GROUPS: torch.testing.assert_close(twice[g], out["obs"][g])
    torch.testing.assert_close(env.mirror.action(env.mirror.action(a0)), a0)


def test_an_env_poisoned_with_nan_is_reset_alone_and_counted(squat):
    env = make_env(*QUIET, n=4, clips=[squat])
    env.reset()
    for _ in range(3): env.step(torch.zeros(4, 29))
    qpos = env.sim.qpos.clone(); qpos[2, 10] = float("nan")
    env.sim.set_state(torch.tensor([2]), qpos[2:3], env.sim.qvel[2:3].clone())
    before = env.episode_step.clone()
    out = env.step(torch.zeros(4, 29))
    assert out["terminated"].tolist() == [False, False, True, False]
    assert env.unstable_total == 1 and env.sim.unstable.tolist() == [False, False, True, False]
    assert (env.episode_step[[0, 1, 3]] == before[[0, 1, 3]] + 1).all() and env.episode_step[2] == 0
    for g in GROUPS: assert torch.isfinite(out["obs"][g]).all()
    assert env.pop_log()["sim/unstable_total"] == 1


def test_a_truncated_episode_returns_its_final_observation(squat):
    env = make_env(*QUIET, n=2, clips=[squat])
    env.reset()
    last = squat.num_frames - 1
    env.frame[:] = last - 2
    out = env.step(torch.zeros(2, 29), kinematic=True)
    assert not out["truncated"].any() and (env.frame == last - 1).all()
    out = env.step(torch.zeros(2, 29), kinematic=True)            # reaches and scores the last frame: the clip ends
    assert out["truncated"].all() and not out["terminated"].any()
    sl = dict(env.layout["policy"])["ref_joint_pos"]
    final_ref = out["final_obs"]["policy"][:, sl].reshape(2, env.F, 29)
    expected = torch.tensor(squat.qpos[last, 7:], dtype=torch.float32) - env.default_joint_pos
    torch.testing.assert_close(final_ref, expected.expand(2, env.F, 29), atol=1e-5, rtol=0)  # future frames clamp at the end
    assert not torch.allclose(out["obs"]["policy"], out["final_obs"]["policy"])             # the new episodes started
    assert (env.episode_step == 0).all()


def test_reset_gives_real_observations_and_reference_state_starts(squat):
    env = make_env(*QUIET, n=16, clips=[squat])
    obs = env.reset()
    grav = dict(env.layout["policy"])["projected_gravity"]
    g = obs["policy"][:, grav]
    assert (g[:, 2] < -0.95).all()                                  # upright, not a zero vector
    ref = env.motion.qpos(env.clip, env.frame)
    err = (env.sim.qpos[:, 7:] - ref[:, 7:]).abs()
    assert err.max() <= 0.1 + 1e-5 and err.max() > 0.01             # the reference frame plus joint noise
    assert len(set(env.frame.tolist())) > 4                          # starts spread over the clip


def test_failure_weighted_start_sampling():
    env = make_env(*QUIET, n=64, clips=[builtin_motion("squat"), builtin_motion("stand")])
    K = env.motion.num_bins
    p = env.start_distribution()
    assert torch.allclose(p, torch.full((K,), 1.0 / K))
    env.fail[3] = 10.0                                   # ten failures in bin 3 (seen for under a step: rate 10)
    p = env.start_distribution()
    u = env.c.sampling.uniform_floor
    k = list(env.sampler.kernel)
    assert k == [1.0, 0.5]                               # the default: half of a bin's rate goes to the bin before it
    assert p[3] == pytest.approx(u / K + (1 - u) / 1.5) and p[2] == pytest.approx(u / K + (1 - u) * 0.5 / 1.5)
    assert p.min() == pytest.approx(u / K)
    clip, frame = env._sample_starts(2000)
    assert (env.motion.bin_index(clip, frame) == 3).float().mean() > 0.55
    entropy = env.pop_log()["sampling/entropy"]
    assert 0 < entropy < 0.5
    # failures are attributed to the bins where they happen
    env.fail.zero_(); env.reset()
    for _ in range(40): env.step(torch.zeros(64, 29))
    assert env.fail.sum() > 0


def test_action_delay_holds_the_previous_target_for_the_first_substeps(squat):
    env = make_env(n=2, clips=[squat])
    env.action_delay[:] = torch.tensor([0.0, 2 * env.physics_dt])
    prev = env.target.clone()
    ctrl = env._ctrl(torch.ones(2, 29))
    assert ctrl.shape == (2, env.decimation, 29)
    torch.testing.assert_close(ctrl[0], env.target[0].expand(env.decimation, 29))
    torch.testing.assert_close(ctrl[1, :2], prev[1].expand(2, 29))
    torch.testing.assert_close(ctrl[1, 2:], env.target[1].expand(env.decimation - 2, 29))


def test_environment_state_round_trips_bit_identically(squat):
    a, b = make_env(n=3, clips=[squat], seed=1), make_env(n=3, clips=[squat], seed=2)
    gen = torch.Generator().manual_seed(0)
    actions = [0.3 * torch.randn(3, 29, generator=gen) for _ in range(8)]
    for act in actions[:4]: a.step(act)
    b.load_state_dict(a.state_dict())
    for act in actions[4:]:
        oa, ob = a.step(act), b.step(act)
        for g in GROUPS: assert torch.equal(oa["obs"][g], ob["obs"][g])
        assert torch.equal(oa["reward"], ob["reward"])


@pytest.mark.parametrize("override, message", [
    ("task.observations.policy=[joint_pos,jiont_vel]", "unknown observation term"),
    ("task.robot.tracked_bodies=[pelvis,torso_link,left_hand]", "unknown body names"),
    ("task.future_frames=[1,2]", "future_frames must start with 0"),
    ("task.backend=physx", "physx"),
])
def test_bad_config_fails_at_construction_with_one_clear_sentence(squat, override, message):
    with pytest.raises((ConfigError, ValueError)) as e:
        make_env(override, clips=[squat])
    assert message in str(e.value) and "\n" not in str(e.value).strip()


def test_cuda_without_a_gpu_is_refused_clearly(squat):
    if torch.cuda.is_available(): pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="(?i)cuda"):
        make_env("task.device=cuda", clips=[squat])


def test_the_environment_runs_on_the_warp_backend(squat):
    env = make_env(*QUIET, n=2, clips=[squat], backend="warp")
    ref = make_env(*QUIET, n=2, clips=[squat])
    assert env.obs_dims == ref.obs_dims
    for _ in range(3): out = env.step(torch.zeros(2, 29))
    for g in GROUPS: assert torch.isfinite(out["obs"][g]).all()


def test_warp_overflow_is_logged_and_resets_the_envs_that_lost_contacts(squat):
    "Deliberately tiny Warp buffers: the envs are reset (terminated) and the counters reach the trainer's log."
    pytest.importorskip("mujoco_warp")
    env = make_env(*QUIET, "task.sim.warp.nconmax=2", n=2, clips=[squat], backend="warp")
    out = env.step(torch.zeros(2, 29))
    assert out["terminated"].all()
    log = env.pop_log()
    assert log["sim/overflow_contact"] == 2 and log["sim/overflow_constraint"] == 0 and log["sim/unstable_total"] == 2
    assert "sim/solver_iter_limit" in log
    ok = make_env(*QUIET, n=2, clips=[squat], backend="warp")          # the sized buffers never overflow here
    for _ in range(3): ok.step(torch.zeros(2, 29))
    log = ok.pop_log()
    assert log["sim/overflow_contact"] == 0 and log["sim/overflow_constraint"] == 0


# ---- observation history ----------------------------------------------------------------------------------------
HIST = "task.observations.policy=[{joint_vel:{noise:0.5}},{joint_pos:{history:[0,1,3],noise:0.01}},{last_action:{history:2}}]"


def test_a_history_term_stacks_past_values_offset_major_and_starts_from_the_reset_state(squat):
    env = make_env(*QUIET, HIST, n=3, clips=[squat])
    nj = env.nj
    env.set_fixed_starts(torch.zeros(3))
    obs = env.reset()
    jp = dict(env.layout["policy"])["joint_pos"]
    assert jp.stop - jp.start == 3 * nj
    first = obs["policy"][:, jp].view(3, 3, nj)
    assert torch.equal(first[:, 0], first[:, 1]) and torch.equal(first[:, 0], first[:, 2])   # reset: repeated
    seen = [first[:, 0]]
    for t in range(5):
        a = 0.2 * torch.randn(3, nj)
        out = env.step(a)
        assert not out["terminated"].any() and not out["truncated"].any()
        now = out["obs"]["policy"]
        seen.append(now[:, jp][:, :nj].clone())
        blocks = now[:, jp].view(3, 3, nj)
        for k, off in enumerate((0, 1, 3)):
            assert torch.equal(blocks[:, k], seen[max(len(seen) - 1 - off, 0)]), (t, off)
        la = now[:, dict(env.layout["policy"])["last_action"]].view(3, 2, nj)
        assert torch.allclose(la[:, 0], a)


def test_a_reset_env_history_restarts_while_the_others_keep_theirs(squat):
    env = make_env(*QUIET, HIST, n=2, clips=[squat])
    env.set_fixed_starts(torch.zeros(2))
    env.reset()
    for _ in range(4): out = env.step(0.3 * torch.randn(2, env.nj))
    jp = dict(env.layout["policy"])["joint_pos"]
    env.reset(torch.tensor([0]))
    obs = env.observe()["policy"][:, jp].view(2, 3, env.nj)
    assert torch.equal(obs[0, 0], obs[0, 2]) and torch.equal(obs[0, 0], obs[0, 1])       # env 0: its new start, repeated
    assert not torch.equal(obs[1, 0], obs[1, 2])                                           # env 1: still its past


def test_history_noise_is_drawn_once_when_recorded(squat):
    env = make_env("task.randomization.enabled=false", HIST, n=2, clips=[squat])
    env.reset()
    jp = dict(env.layout["policy"])["joint_pos"]
    nj = env.nj
    prev = env.step(torch.zeros(2, nj))["obs"]["policy"][:, jp].view(2, 3, nj)
    now = env.step(torch.zeros(2, nj))["obs"]["policy"][:, jp].view(2, 3, nj)
    assert torch.equal(now[:, 1], prev[:, 0])                # the noisy value of one step ago, not a new draw
    assert env._noise["policy"][jp].abs().sum() == 0         # the group's per-observation noise skips the history


def test_noise_belongs_to_the_group_entry_so_the_critic_reads_the_same_term_clean(squat):
    env = make_env("task.randomization.enabled=false", n=2, clips=[squat])
    obs = env.step(torch.zeros(2, env.nj))["obs"]
    pol, crit = dict(env.layout["policy"])["base_ang_vel"], dict(env.layout["critic_priv"])["base_ang_vel"]
    true = env.qvel[:, 3:6]
    assert torch.equal(obs["critic_priv"][:, crit], true)                       # no noise entry in critic_priv
    err = (obs["policy"][:, pol] - true).abs()
    assert err.max() <= 0.2 + 1e-6 and err.max() > 0.01                         # {base_ang_vel: {noise: 0.2}} in policy
    quiet = make_env("task.randomization.enabled=false", "task.observations.noise.enabled=false", n=2, clips=[squat])
    assert quiet._noise == {}
    o = quiet.step(torch.zeros(2, quiet.nj))["obs"]
    assert torch.equal(o["policy"][:, pol], quiet.qvel[:, 3:6])


def test_history_appears_in_the_layout_table_and_mirrors_block_by_block(squat):
    env = make_env(*QUIET, HIST, n=2, clips=[squat])
    table = env.layout_table()
    assert "0, 1, 3" in table.splitlines()[2] and "0, 1" in table.splitlines()[3]
    obs = env.reset()
    for _ in range(3): obs = env.step(0.2 * torch.randn(2, env.nj))["obs"]
    jp = dict(env.layout["policy"])["joint_pos"]
    m = env.mirror.obs(obs)["policy"][:, jp].view(2, 3, env.nj)
    for k in range(3):
        block = obs["policy"][:, jp].view(2, 3, env.nj)[:, k]
        assert torch.allclose(m[:, k], env.mirror.action(block), atol=1e-6)        # joint vectors mirror like actions


@pytest.mark.parametrize("entry, message", [
    ("{joint_pos:{history:0}}", "history of observation term 'joint_pos'"),
    ("{joint_pos:{history:[0,0]}}", "distinct offsets"),
    ("{joint_pos:{hist:3}}", "unknown keys"),
    ("{joint_pos:{noise:-0.1}}", "amplitude >= 0"),
    ("{joint_pos:{noise:loud}}", "amplitude >= 0"),
    ("joint_pos,{joint_pos:{history:2}}", "appear twice"),
])
def test_a_bad_history_fails_at_construction_with_one_clear_sentence(squat, entry, message):
    with pytest.raises(ConfigError, match=message):
        make_env(f"task.observations.policy=[{entry}]", clips=[squat])


def test_history_round_trips_with_the_environment_state(squat):
    a = make_env(*QUIET, HIST, n=2, clips=[squat])
    a.reset()
    for _ in range(5): a.step(0.2 * torch.randn(2, a.nj))
    sd = a.state_dict()
    b = make_env(*QUIET, HIST, n=2, clips=[squat])
    b.load_state_dict(sd)
    torch.manual_seed(1); x = 0.2 * torch.randn(2, a.nj)
    assert torch.equal(a.step(x)["obs"]["policy"], b.step(x)["obs"]["policy"])


# ---- MDP fixes ----------------------------------------------------------------------------------------------
def test_failure_counts_decay_per_control_step_with_the_configured_half_life(squat):
    env = make_env(*QUIET, clips=[squat])
    hl = float(env.c.sampling.failure_half_life_s)
    assert env.sampler.decay == pytest.approx(0.5 ** (env.dt / hl))
    env.sampler.counts.zero_(); env.sampler.counts[2] = 8.0
    no = torch.zeros(env.num_envs, dtype=torch.bool)
    for _ in range(round(hl / env.dt)): env.sampler.record(env.clip, env.frame, no)
    assert env.sampler.counts[2].item() == pytest.approx(4.0, rel=1e-3)     # half after one half-life of steps
    assert hl >= 10.0                                                        # tens of seconds, not ~1 s of experience


def test_start_weights_follow_the_failure_rate_not_the_count(squat):
    """A bin drawn often collects many failures even when it is easy; weighting counts drifts the starts to the end
    of the clip (each failure lands at or after its start bin). Failures per step spent in the bin do not."""
    env = make_env(*QUIET, "task.sampling.failure_kernel=[1.0]", n=4, clips=[squat])
    s, zero = env.sampler, torch.zeros(4, dtype=torch.long)
    at = lambda sec: torch.full((4,), round(sec / env.dt))
    for t in range(50): s.record(zero, at(2.5), torch.tensor([t % 2 == 0, False, False, False]))   # 25 in 200 steps
    for t in range(400): s.record(zero, at(7.5), torch.tensor([t % 8 == 0, False, False, False]))  # 50 in 1600 steps
    assert s.counts[7] > s.counts[2]                     # more failures at 7 s ...
    p = env.start_distribution()
    assert p[2] > 3 * p[7]                               # ... but at 2 s the rate is four times higher


def test_failure_kernel_spreads_back_within_a_clip_only(squat):
    env = make_env(*QUIET, n=4, clips=[squat, builtin_motion("stand")])
    first_stand = int(env.motion.clip_first_bin[1])
    env.fail[first_stand] = 4.0                          # failures at 0 s of the second clip
    p, floor = env.start_distribution(), env.c.sampling.uniform_floor / env.motion.num_bins
    assert p[first_stand - 1] == pytest.approx(floor)    # the squat's last second is not the stand's approach
    env.fail.zero_(); env.fail[first_stand - 1] = 4.0    # failures in the squat's last second
    p = env.start_distribution()
    # a weighted mean of the rates: (0 + 0.5 r) / 1.5 before it; the squat's last second has no later bin of its clip (r / 1)
    assert p[first_stand - 2] == pytest.approx(floor + (p[first_stand - 1] - floor) / 3)


def test_sampler_state_round_trips_with_the_env(squat):
    env = make_env(*QUIET, "task.sampling.settle_s=0.0", n=4, clips=[squat])      # every step counts from the start
    for _ in range(30): env.step(torch.zeros(4, env.nj))
    sd = env.state_dict()
    other = make_env(*QUIET, "task.sampling.settle_s=0.0", n=4, clips=[squat])
    other.load_state_dict(sd)
    assert env.fail_visits.sum() == pytest.approx(4 * 30, rel=0.01)       # every env-step is counted once (decayed)
    assert torch.equal(other.fail_visits, env.fail_visits) and torch.equal(other.fail, env.fail)


def test_undesired_contacts_skip_hands_and_feet_and_need_a_force_above_the_threshold(squat):
    env = make_env(*QUIET, clips=[squat])
    bodies = list(env.cfg.robot.undesired_contact_bodies)
    assert not [b for b in bodies if "wrist" in b or "ankle" in b]
    from g1track.rewards import undesired_contacts
    env.touch = torch.tensor([[0.0] * len(bodies), [0.5] + [0.0] * (len(bodies) - 1), [2.0, 3.0] + [0.0] * (len(bodies) - 2),
                              [1.0] * len(bodies)])
    assert undesired_contacts(env, None, None, threshold_n=1.0).tolist() == [0.0, 0.0, 2.0, 0.0]
    assert env.c.rewards.undesired_contacts.threshold_n == 1.0


def test_after_a_reset_the_delayed_substeps_hold_the_pose_the_robot_was_placed_in(squat):
    env = make_env("task.observations.noise.enabled=false", n=3, clips=[squat])
    env.reset()
    placed = env.qpos[:, 7:].clone()
    assert torch.allclose(env.target, placed)
    env.action_delay.fill_(0.01)                                     # two of four substeps hold the previous target
    ctrl = env._ctrl(torch.zeros(3, env.nj))
    assert torch.allclose(ctrl[:, 0], placed) and torch.allclose(ctrl[:, -1], env.default_joint_pos + env.joint_offset)


def test_each_step_returns_its_weighted_reward_terms_summing_to_the_reward(squat):
    env = make_env(*QUIET, clips=[squat])
    env.reset()
    out = env.step(torch.zeros(4, env.nj))
    terms = out["reward_terms"]
    assert sorted(terms.keys()) == sorted(REWARD_TERMS)
    assert torch.allclose(sum(terms[k] for k in terms.keys()), out["reward"], atol=1e-6)


def test_a_reward_parameter_the_term_does_not_take_is_refused(squat):
    with pytest.raises(ConfigError, match="rewards.body_pos has parameters"):
        make_env("+task.rewards.body_pos.width=2", clips=[squat])


def test_host_rows_give_the_rollout_of_the_device_path(squat):
    """With the MuJoCo C engine the step computes the final observations, the critic's bootstrap values and the FK after
    resets for the rows that need them (`index_rows`); the device path computes every row and selects. Both must give the
    same rollout: the observation noise is drawn for all envs either way, so the generators stay in step."""
    from g1track.modules import TrackingPolicy, actor_columns
    from g1track.ppo import RolloutStorage, collect_rollout
    from g1track.config import compose
    from g1track.runs import layout_of
    # 20-step episodes (many truncations) and wild actions (falls: terminations)
    cfg = compose(["task=G1/G1_tracking", "+exp=train", "task.episode_length_s=0.4", "policy.init_std=2.5"])
    rollouts = []
    for index_rows in (True, False):
        env = TrackingEnv(cfg.task, num_envs=12, clips=[squat], seed=3)
        assert env.index_rows                                   # the MuJoCo C engine on the CPU: host memory
        env.index_rows = index_rows
        torch.manual_seed(0)
        pol = TrackingPolicy(env.obs_dims, env.nj, cfg.policy, actor_columns(layout_of(env)["policy"], cfg.policy))
        st = RolloutStorage(50, env.num_envs, env.obs_dims, env.nj)
        last = collect_rollout(env, pol, st, env.reset(), "teacher", update_stats=True)
        rollouts.append((st, last, env.body_pos.clone()))
    (a, last_a, pos_a), (b, last_b, pos_b) = rollouts
    cut = a.truncated & ~a.terminated
    assert cut.sum() >= 12 and a.terminated.sum() >= 1                       # both kinds of reset happened
    for g in a.obs.keys(): assert torch.equal(a.obs[g], b.obs[g]), g
    for g in last_a.keys(): assert torch.equal(last_a[g], last_b[g]), g
    for k in ("actions", "rewards", "terminated", "truncated", "values"): assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert torch.equal(pos_a, pos_b)
    # the critic of a few rows and of all rows may round differently in the last bit (a matrix product of another shape)
    torch.testing.assert_close(a.bootstrap_values, b.bootstrap_values, rtol=1e-5, atol=1e-5)   # measured: 3e-6
    assert (a.bootstrap_values[cut] != 0).all() and (a.bootstrap_values[~cut] == 0).all()
