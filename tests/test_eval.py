"""Evaluation, export and sim2sim: metrics on hand-built cases, a real tiny pipeline evaluated, exported,
checked against onnxruntime, replayed in the plain MuJoCo loop, and the errors a user can run into."""
import json, shutil, subprocess, sys
import numpy as np
import pytest
import torch

from g1track.eval.metrics import (Episode, summarize, evaluate_episodes, ratios, comparison_table, metrics_table, save_json,
                                  mpkpe, mpkpe_root_relative, joint_position_error)

BODIES = ("pelvis", "torso_link", "left_wrist_yaw_link", "right_wrist_yaw_link", "left_ankle_roll_link", "right_ankle_roll_link")
HANDS, FEET = BODIES[2:4], BODIES[4:6]


# ---------------------------------------------------------------------------------------------------------------
# metrics on hand-built cases with known answers

def _episode(pos, ref, q=None, q_ref=None, terminated=False, reward=None, clip="c", dt=0.02):
    T = len(pos)
    q = np.zeros((T, 29)) if q is None else q
    q_ref = np.zeros((T, 29)) if q_ref is None else q_ref
    return Episode(clip, BODIES, np.asarray(pos), np.asarray(ref), q, q_ref, terminated, dt, reward)


def test_translation_counts_in_mpkpe_not_in_root_relative():
    ref = np.random.default_rng(0).normal(size=(25, len(BODIES), 3))
    assert mpkpe(ref + [0.03, 0.04, 0.0], ref) == pytest.approx(0.05)
    assert mpkpe_root_relative(ref + [0.03, 0.04, 0.0], ref) == pytest.approx(0.0, abs=1e-12)
    assert mpkpe(ref + [0.03, 0.04, 0.0], ref, bodies=[0]) == pytest.approx(0.05)
    m = summarize([_episode(ref + [0.03, 0.04, 0.0], ref)], hands=HANDS, feet=FEET)
    assert m["mpkpe_mm"] == pytest.approx(50.0)
    assert m["mpkpe_root_mm"] == pytest.approx(0.0, abs=1e-9)
    assert m["hand_error_mm"] == pytest.approx(50.0) and m["foot_error_mm"] == pytest.approx(50.0)


def test_rotation_about_the_root_counts_in_root_relative():
    # every body 1 m from the pelvis along x; the robot turned by 180 degrees about z: each is 2 m off
    ref = np.zeros((10, len(BODIES), 3)); ref[:, 1:, 0] = 1.0
    pos = ref.copy(); pos[:, 1:, 0] = -1.0
    m = summarize([_episode(pos, ref)])
    assert m["mpkpe_root_mm"] == pytest.approx(2000.0 * 5 / 6)
    assert m["mpkpe_mm"] == pytest.approx(2000.0 * 5 / 6)


def test_end_effectors_joints_return_and_length():
    ref = np.random.default_rng(1).normal(size=(40, len(BODIES), 3))
    pos = ref.copy(); pos[:, BODIES.index("left_wrist_yaw_link"), 2] += 0.01
    q_ref = np.zeros((40, 29)); q = q_ref.copy(); q[:, :10] = -0.3
    m = summarize([_episode(pos, ref, q, q_ref, reward=np.full(40, 0.25))], hands=HANDS, feet=FEET)
    assert m["hand_error_mm"] == pytest.approx(5.0) and m["foot_error_mm"] == pytest.approx(0.0)
    assert m["mpkpe_mm"] == pytest.approx(10.0 / len(BODIES))
    assert m["joint_error_rad"] == pytest.approx(0.3 * 10 / 29) == pytest.approx(joint_position_error(q, q_ref))
    assert m["return"] == pytest.approx(10.0) and m["length_s"] == pytest.approx(0.8) and m["success"] == 1.0


def test_errors_are_frame_weighted_success_episode_weighted():
    ref = np.zeros((30, len(BODIES), 3))
    short = _episode(ref[:10] + [0.010, 0, 0], ref[:10], terminated=True, clip="a")
    long = _episode(ref + [0.050, 0, 0], ref, clip="b")
    r = evaluate_episodes([short, long])
    assert r["overall"]["mpkpe_mm"] == pytest.approx(40.0)          # (10*10 + 30*50) / 40, not (10 + 50) / 2
    assert r["overall"]["success"] == 0.5 and r["overall"]["frames"] == 40 and r["overall"]["episodes"] == 2
    assert r["clips"]["a"]["success"] == 0.0 and r["clips"]["b"]["mpkpe_mm"] == pytest.approx(50.0)
    assert "overall" in metrics_table(r) and np.isnan(r["overall"]["return"])  # no rewards recorded: n/a, not 0


def test_ratios_table_and_json_without_nan(tmp_path):
    t = dict(success=1.0, mpkpe_mm=40.0, mpkpe_root_mm=30.0, joint_error_rad=0.05, hand_error_mm=50.0, foot_error_mm=0.0,
             length_s=8.0, **{"return": 20.0})
    s = dict(t, success=0.9, mpkpe_mm=44.0, **{"return": 18.0})
    r = ratios(s, t)
    assert r["mpkpe_mm"] == pytest.approx(1.1) and r["return"] == pytest.approx(0.9) and np.isnan(r["foot_error_mm"])
    assert "student/teacher" in comparison_table(s, t)
    f = save_json(tmp_path / "m.json", {"r": r, "a": np.float32(1.5)})
    assert json.loads(f.read_text()) == {"r": {**{k: v for k, v in r.items() if k != "foot_error_mm"}, "foot_error_mm": None}, "a": 1.5}


def test_unknown_body_is_named():
    ref = np.zeros((5, len(BODIES), 3))
    with pytest.raises(KeyError, match="left_hand_palm"):
        summarize([_episode(ref, ref)], hands=["left_hand_palm"])


# ---------------------------------------------------------------------------------------------------------------
# a real tiny pipeline: train -> adapt, evaluated and exported

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "A tiny stage-1 and stage-2 run on the squat (seconds; the policies fall, the machinery is what is tested)."
    from g1track.config import compose
    from g1track.train import train
    root = tmp_path_factory.mktemp("runs")
    common = ["task.num_envs=8", "algo.train_every=16", f"run_dir={root}", "task.motions=[builtin:squat]", "progress=false",
              "wandb.mode=disabled"]
    torch.set_num_threads(1)
    train(compose(["+exp=train", "total_frames=1024", "wandb.id=ev_train", *common]))
    train(compose(["+exp=adapt", "total_frames=256", "wandb.id=ev_adapt", "checkpoint_path=run:g1track/ev_train", *common]))
    return root


@pytest.fixture(scope="module")
def evaluation(runs):
    from g1track.eval.core import evaluate_checkpoint, eval_cfg
    return evaluate_checkpoint("g1track/ev_adapt", eval_cfg(f"run_dir={runs}"), record_obs=True)


@pytest.fixture(scope="module")
def exported(runs, evaluation):
    from g1track.eval.core import eval_cfg
    from g1track.eval.export import export_student
    obs = np.concatenate([e.extras["obs"] for e in evaluation.episodes["student"]])
    return export_student("g1track/ev_adapt", eval_cfg(f"run_dir={runs}"), obs=obs)


def test_a_checkpoint_with_the_older_noise_table_reads_as_todays_entries(runs, tmp_path):
    "Before noise sat on group entries, it was a table by term, and the critic read `*_clean` aliases: such a checkpoint loads,"
    "checks against today's environment, and exports the same noise amplitudes."
    from omegaconf import OmegaConf
    from g1track.runs import load_checkpoint, atomic_save, checkpoint_config, check_layout
    from g1track.eval.export import deployment_metadata
    from g1track.env import TrackingEnv
    path = runs / "g1track" / "ev_adapt" / "checkpoints" / "latest.pt"
    now = load_checkpoint(path)
    old = torch.load(path, weights_only=False)
    cfg = OmegaConf.create(old["config"])
    obs = cfg.task.observations
    obs.policy = [e if isinstance(e, str) else ({k: {x: y for x, y in v.items() if x != "noise"}} if set(v) - {"noise"} else k)
                  for e in OmegaConf.to_container(obs.policy) for k, v in ([(e, None)] if isinstance(e, str) else e.items())]
    obs.critic_priv = [f"{e}_clean" if e in ("base_ang_vel", "projected_gravity", "joint_pos", "joint_vel") else e for e in obs.critic_priv]
    obs.noise = {"enabled": True, "ref_anchor_ori": 0.05, "base_ang_vel": 0.2, "projected_gravity": 0.05, "joint_pos": 0.01, "joint_vel": 0.5}
    old["config"] = OmegaConf.to_yaml(cfg)
    old["obs_layout"]["critic_priv"] = [[f"{t[0]}_clean" if t[0] in ("base_ang_vel", "joint_pos") else t[0], *t[1:]]
                                        for t in old["obs_layout"]["critic_priv"]]
    atomic_save(old, tmp_path / "ckpt_000001.pt")
    upgraded = load_checkpoint(tmp_path / "ckpt_000001.pt")
    assert checkpoint_config(upgraded).task.observations == checkpoint_config(now).task.observations
    assert upgraded["obs_layout"] == now["obs_layout"]
    env = TrackingEnv(checkpoint_config(upgraded).task, num_envs=2)
    check_layout(upgraded, env)                                        # today's environment accepts it
    amp = lambda ck: deployment_metadata(ck, tmp_path)["observation"]["noise_amplitudes"]
    assert amp(upgraded) == amp(now) and amp(now)["base_ang_vel"] == 0.2 and amp(now)["ref_joint_pos"] == 0.0


def env_qpos_of(ev, e, frame):
    from g1track.motion import builtin_motion
    return builtin_motion("squat").qpos[frame]


def test_evaluation_of_an_adapt_checkpoint_has_teacher_and_student(evaluation, runs):
    ev = evaluation
    assert set(ev.results) == {"student", "teacher"} and ev.stage == "adapt"
    assert ev.teacher_from == "g1track/ev_train" and "stage-1 run g1track/ev_train" in ev.report()
    assert "student/teacher" in ev.report()
    clip_frames = 401                                   # builtin:squat: 8 s at 50 Hz
    for actor, eps in ev.episodes.items():
        (e,) = eps
        assert e.clip == "squat" and 1 <= e.num_steps <= clip_frames - 1
        assert e.terminated or e.num_steps == clip_frames - 1
        assert np.array_equal(e.extras["frame"], np.arange(e.num_steps))                 # from frame 0, one frame per step
        # each step's state is paired with the frame it reached (1, 2, ...), the one its reward scored
        np.testing.assert_allclose(e.extras["ref_qpos"][0], env_qpos_of(ev, e, 1), atol=1e-5)
        # the episode starts exactly on the reference: the first step's error is what one control step of drift makes
        assert np.linalg.norm(e.body_pos[0] - e.ref_body_pos[0], axis=-1).mean() < 0.03
        from g1track.env import REWARD_TERMS
        assert list(e.extras["reward_terms"]) == list(REWARD_TERMS)
        assert np.allclose(sum(e.extras["reward_terms"].values()), e.reward, atol=1e-5)
        assert ev.results[actor]["overall"]["return"] == pytest.approx(float(e.reward.sum()), rel=1e-6)
    saved = json.loads(ev.json_path.read_text())
    assert ev.json_path == runs / "g1track" / "ev_adapt" / "eval" / "metrics_adapt.json"
    assert set(saved["actors"]) == {"student", "teacher"} and set(saved["student_over_teacher"]) >= {"mpkpe_mm", "success"}
    assert saved["actors"]["student"]["overall"]["mpkpe_mm"] == pytest.approx(ev.results["student"]["overall"]["mpkpe_mm"])


def test_evaluation_is_deterministic_and_motions_can_be_chosen(runs, evaluation):
    from g1track.eval.core import evaluate_checkpoint, eval_cfg
    again = evaluate_checkpoint("g1track/ev_adapt", eval_cfg(f"run_dir={runs}"), actor="student", out_dir=runs / "again")
    a, b = again.results["student"], evaluation.results["student"]
    assert _same(a["overall"], b["overall"]) and a["clips"].keys() == b["clips"].keys()
    assert all(_same(a["clips"][c], b["clips"][c]) for c in b["clips"]) and a["definitions"] == b["definitions"]
    other = evaluate_checkpoint("g1track/ev_train", eval_cfg(f"run_dir={runs}"), motions=["builtin:stand", "builtin:arm_wave"],
                                out_dir=runs / "other")
    assert list(other.results) == ["teacher"] and list(other.results["teacher"]["clips"]) == ["stand", "arm_wave"]


def test_train_checkpoint_refuses_the_untrained_student(runs):
    from g1track.eval.core import evaluate_checkpoint, eval_cfg
    from g1track.eval.export import export_student, ExportError
    from g1track.runs import CheckpointError
    with pytest.raises(CheckpointError, match="never been trained"):
        evaluate_checkpoint("g1track/ev_train", eval_cfg(f"run_dir={runs}"), actor="student")
    with pytest.raises(ExportError, match=r"stage 'train'.*\+exp=adapt"):
        export_student("g1track/ev_train", eval_cfg(f"run_dir={runs}"))


def test_export_matches_onnxruntime_and_carries_deployment_metadata(exported, runs):
    import onnxruntime as ort, yaml
    from g1track.runs import load_checkpoint, policy_from_checkpoint, checkpoint_config
    ex = exported
    assert ex.onnx_path == runs / "g1track" / "ev_adapt" / "export" / "policy.onnx"
    assert ex.parity_max_abs <= 1e-5 and ex.torch_vs_policy_max_abs <= 1e-5 and ex.num_obs > 0
    assert not [p for p in ex.onnx_path.parent.iterdir() if p.name.startswith(".")]     # no temporary files left
    # an independent check: a fresh session, batches of 1 and 7, against the checkpoint's student in torch
    ckpt = load_checkpoint(runs / "g1track" / "ev_adapt" / "checkpoints" / "latest.pt")
    student = policy_from_checkpoint(ckpt).student_onnx_module()
    sess = ort.InferenceSession(str(ex.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["policy_obs"] and [o.name for o in sess.get_outputs()] == ["action"]
    x = (np.random.default_rng(0).normal(size=(7, ckpt["obs_dims"]["policy"])) * 2).astype(np.float32)
    for batch in (x[:1], x):
        got = sess.run(None, {"policy_obs": batch})[0]
        assert got.shape == (len(batch), 29)
        assert np.abs(got - student(torch.from_numpy(batch)).detach().numpy()).max() <= 1e-5
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    task = checkpoint_config(ckpt).task
    from g1track.robot import load_g1
    g1 = load_g1(task.robot, visual=False)
    assert meta["joint_names"] == list(g1.joint_names)
    assert np.allclose(meta["default_joint_pos"], g1.default_joint_pos) and np.allclose(meta["kp"], g1.kp)
    assert np.allclose(meta["kd"], g1.kd) and np.allclose(meta["action_scale"], g1.action_scale)
    assert np.allclose(meta["effort_limit"], g1.effort)
    assert meta["control_dt"] == pytest.approx(0.02) and meta["decimation"] == 4 and meta["physics_dt"] == pytest.approx(0.005)
    # every layout entry, a term's history (steps back) included, as the checkpoint has it
    assert [[t["name"], t["start"], t["stop"], *([t["history"]] if "history" in t else [])]
            for t in meta["observation"]["terms"]] == ckpt["obs_layout"]["policy"]
    assert meta["observation"]["future_frames"] == list(task.future_frames) and meta["anchor_body"] == "torso_link"
    assert meta["tracked_bodies"] == list(task.robot.tracked_bodies)
    assert meta["source"]["stage"] == "adapt" and meta["source"]["run"] == "g1track/ev_adapt" and meta["g1track_version"]
    deploy = yaml.safe_load(ex.yaml_path.read_text())
    assert deploy["onnx"] == "policy.onnx" and deploy["kp"] == meta["kp"] and deploy["observation"] == meta["observation"]
    import hashlib
    assert deploy["sha256"] == hashlib.sha256(ex.onnx_path.read_bytes()).hexdigest()


def _observation_parity(meta, model, ref, env_ep):
    "sim2sim's observation of each state the env's episode went through, from its start (histories rebuilt step by step), equals the env's."
    import mujoco
    from g1track.eval import sim2sim as s2s
    d = mujoco.MjData(model)
    s = s2s.State(model, d, meta, ref)
    observer = s2s.Observer(s2s.metadata_layout(meta))
    for k in range(env_ep.num_steps):
        qpos, qvel = (ref.qpos[0], ref.qvel[0]) if k == 0 else (env_ep.extras["qpos"][k - 1], env_ep.extras["qvel"][k - 1])
        d.qpos[:], d.qvel[:] = qpos, qvel
        mujoco.mj_kinematics(model, d)
        s.frame = int(env_ep.extras["frame"][k])
        s.last_action = np.zeros(len(meta["joint_names"])) if k == 0 else env_ep.extras["action"][k - 1]
        assert np.abs(observer(s) - env_ep.extras["obs"][k]).max() < 1e-4, f"step {k}"


def _reproduces_rollout(onnx_path, meta, model, ref, env_ep, atol=1e-4):
    "From the state the environment starts from (its reference is stored in float32), the loop reproduces the env's rollout."
    from g1track.eval import sim2sim as s2s
    start = s2s.Reference(**{**ref.__dict__, "qpos": ref.qpos.astype(np.float32).astype(np.float64)})
    start.qpos[:, 3:7] /= np.linalg.norm(start.qpos[:, 3:7], axis=1, keepdims=True)
    ep = s2s.run_episode(onnx_path, start, session=None, meta=meta, model=model)
    assert ep.num_steps == env_ep.num_steps and ep.terminated == env_ep.terminated
    assert np.abs(ep.extras["qpos"] - env_ep.extras["qpos"]).max() < atol


def test_sim2sim_observes_and_moves_like_the_environment(exported, evaluation):
    from g1track.eval import sim2sim as s2s
    meta = s2s.read_metadata(exported.onnx_path)
    model = s2s.deployment_model(meta)
    ref = s2s.load_reference("builtin:squat", meta)
    env_ep = evaluation.episodes["student"][0]
    # 1. every policy term, computed from MjData in numpy, equals the environment's on the same states
    _observation_parity(meta, model, ref, env_ep)
    # 2. from the state the environment starts from (its reference is stored in float32), the loop reproduces the rollout
    _reproduces_rollout(exported.onnx_path, meta, model, ref, env_ep)
    # 3. the plain run reports the same metrics, from the clip's own start state
    r = s2s.sim2sim(exported.onnx_path, ["builtin:squat"])
    env_m, s2s_m = evaluation.results["student"]["overall"], r["overall"]
    assert set(s2s_m) >= {"success", "mpkpe_mm", "mpkpe_root_mm", "joint_error_rad", "hand_error_mm", "foot_error_mm"}
    assert s2s_m["success"] == env_m["success"] and abs(s2s_m["mpkpe_mm"] - env_m["mpkpe_mm"]) < 5.0


def test_sim2sim_command_needs_only_the_onnx_file(exported, tmp_path):
    model = tmp_path / "copied.onnx"
    shutil.copy(exported.onnx_path, model)                  # away from the run, its checkpoint and its config
    out = tmp_path / "m.json"
    script = ("import sys, runpy; sys.argv = ['sim2sim', sys.argv[1], '--motion', 'builtin:squat', '--json', sys.argv[2]]\n"
              "try: runpy.run_module('g1track.eval.sim2sim', run_name='__main__')\n"
              "except SystemExit as e: code = e.code\n"
              "used = [m for m in ('g1track.env', 'g1track.modules', 'g1track.train', 'g1track.eval.core') if m in sys.modules]\n"
              "print('USED', used); sys.exit(code)")
    r = subprocess.run([sys.executable, "-c", script, str(model), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "USED []" in r.stdout and "MPKPE mm" in r.stdout
    assert json.loads(out.read_text())["clips"]["squat"]["mpkpe_mm"] > 0


def test_sim2sim_errors_are_one_sentence(exported, tmp_path):
    import onnx
    from g1track.eval import sim2sim as s2s
    with pytest.raises(s2s.DeploymentError, match="does not exist"):
        s2s.read_metadata(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(s2s.DeploymentError, match="not a readable ONNX model"):
        s2s.read_metadata(tmp_path / "junk.onnx")
    m = onnx.load(str(exported.onnx_path))
    for p in m.metadata_props:
        if p.key == "observation":
            obs = json.loads(p.value); obs["terms"][3]["name"] = "base_lin_vel"; p.value = json.dumps(obs)
    onnx.save(m, str(tmp_path / "bad_term.onnx"))
    from g1track.eval.sim2sim_cli import main
    assert main([str(tmp_path / "bad_term.onnx"), "--motion", "builtin:squat"]) == 2
    with pytest.raises(s2s.DeploymentError, match=r"\['base_lin_vel'\].*cannot compute"):
        s2s.sim2sim(tmp_path / "bad_term.onnx", ["builtin:squat"])
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "bare.onnx"))
    with pytest.raises(s2s.DeploymentError, match="no g1track metadata"):
        s2s.read_metadata(tmp_path / "bare.onnx")


# ---------------------------------------------------------------------------------------------------------------
# observation history: [term, start, stop, offsets] in the layout, `history` in the metadata, rebuilt by sim2sim

def _toy_state(t: int):
    "A stand-in for sim2sim.State that the last_action and joint_vel terms can read: values t and -t, 10 t and 20 t."
    from types import SimpleNamespace
    return SimpleNamespace(last_action=np.array([t, -t], float), data=SimpleNamespace(qvel=np.array([10.0 * t, 20.0 * t])), dadr=[0, 1])


def test_sim2sim_rebuilds_a_history_from_the_metadata_alone():
    from g1track.eval import sim2sim as s2s
    meta = {"observation": {"terms": [{"name": "last_action", "start": 0, "stop": 8, "history": [0, 1, 3, 2]},
                                      {"name": "joint_vel", "start": 8, "stop": 10}],
                            "noise_amplitudes": {"last_action": 0.0, "joint_vel": 0.0}}}
    layout = s2s.metadata_layout(meta)
    assert layout == [("last_action", 0, 8, (0, 1, 3, 2)), ("joint_vel", 8, 10, ())]
    obs = s2s.Observer(layout)
    for t in range(7):
        o = obs(_toy_state(t))
        # block k is the value offsets[k] steps back, in the listed order; before the start, the first value (t = 0)
        for k, off in enumerate((0, 1, 3, 2)):
            assert np.array_equal(o[2 * k:2 * k + 2], [max(t - off, 0), -max(t - off, 0)]), (t, off)
        assert np.array_equal(o[8:], [10.0 * t, 20.0 * t])
    # the first observation of an episode: every block is the state's own value (the reset fill)
    assert np.array_equal(s2s.observe(_toy_state(5), layout)[:8], [5, -5] * 4)
    # a slice that is not len(offsets) x the term's size is refused in one sentence
    with pytest.raises(s2s.DeploymentError, match="'last_action' has 2 values here but 9 .*3 history steps"):
        s2s.Observer([("last_action", 0, 9, (0, 1, 2)), ("joint_vel", 9, 11)])(_toy_state(1))


def test_history_noise_is_drawn_once_when_a_value_is_recorded():
    from g1track.eval import sim2sim as s2s
    meta = {"observation": {"terms": [{"name": "last_action", "start": 0, "stop": 6, "history": [0, 1, 2]},
                                      {"name": "joint_vel", "start": 6, "stop": 8}],
                            "noise_amplitudes": {"last_action": 0.1, "joint_vel": 0.5}}}
    layout = s2s.metadata_layout(meta)
    amp = s2s.noise_amplitudes(meta, layout)
    assert np.array_equal(amp, [0.1] * 6 + [0.5] * 2)
    obs = s2s.Observer(layout, amp, seed=3)
    seen = [obs(_toy_state(t)) for t in range(5)]
    for t, o in enumerate(seen):
        noise = o[:2] - [t, -t]
        assert 0 < np.abs(noise).max() <= 0.1 and np.abs(o[6:] - [10.0 * t, 20.0 * t]).max() <= 0.5
        if t == 0: assert np.array_equal(o[2:4], o[:2]) and np.array_equal(o[4:6], o[:2])     # the fill repeats the noisy first value
        else:
            assert np.array_equal(o[2:4], seen[t - 1][:2])          # one step back: exactly what was recorded then, noise included
            assert np.array_equal(o[4:6], seen[max(t - 2, 0)][:2])
    # the same seed draws the same noise; another seed other noise
    again = s2s.Observer(layout, amp, seed=3)
    assert all(np.array_equal(again(_toy_state(t)), seen[t]) for t in range(5))
    assert not np.array_equal(s2s.Observer(layout, amp, seed=4)(_toy_state(0)), seen[0])


def _env_has_history() -> bool:
    import g1track.env
    return hasattr(g1track.env, "has_history")              # the env side of issue 10


HISTORY_POLICY = ("[ref_joint_pos,ref_joint_vel,{ref_anchor_ori:{noise:0.05}},{base_ang_vel:{noise:0.2}},{projected_gravity:{noise:0.05}},"
                  "{joint_pos:{history:[0,1,2],noise:0.01}},{joint_vel:{noise:0.5}},{last_action:{history:2}}]")


@pytest.fixture(scope="module")
def history_runs(tmp_path_factory):
    "A tiny train -> adapt run whose policy keeps joint_pos 0, 1, 2 steps back and last_action 0, 1 (history: 2)."
    from g1track.config import compose
    from g1track.train import train
    root = tmp_path_factory.mktemp("hruns")
    common = ["task.num_envs=8", "algo.train_every=16", f"run_dir={root}", "task.motions=[builtin:squat]", "progress=false",
              "wandb.mode=disabled", f"task.observations.policy={HISTORY_POLICY}"]
    torch.set_num_threads(1)
    train(compose(["+exp=train", "total_frames=512", "wandb.id=hist_train", *common]))
    train(compose(["+exp=adapt", "total_frames=256", "wandb.id=hist_adapt", "checkpoint_path=run:g1track/hist_train", *common]))
    return root


def _evaluate_and_export(root, run):
    "The student's first evaluation episode of `run`, and its export checked on that episode's observations."
    from g1track.eval.core import evaluate_checkpoint, eval_cfg
    from g1track.eval.export import export_student
    cfg = eval_cfg(f"run_dir={root}")
    env_ep = evaluate_checkpoint(run, cfg, actor="student", record_obs=True).episodes["student"][0]
    ex = export_student(run, cfg, obs=env_ep.extras["obs"])
    assert ex.parity_max_abs <= 1e-5 and ex.torch_vs_policy_max_abs <= 1e-5
    return cfg, env_ep, ex


@pytest.mark.skipif(not _env_has_history(), reason="the environment has no observation history yet (issue 10, env side)")
def test_a_history_layout_exports_and_sim2sim_observes_it_like_the_environment(history_runs):
    import yaml
    from g1track.runs import load_checkpoint
    from g1track.eval.core import evaluate_checkpoint, eval_cfg
    from g1track.eval.export import export_student, observation_table, ExportError
    from g1track.eval.beyondmimic import beyondmimic_observation_names
    from g1track.eval import sim2sim as s2s
    ckpt = load_checkpoint(history_runs / "g1track" / "hist_adapt" / "checkpoints" / "latest.pt")
    entries = {t[0]: t for t in ckpt["obs_layout"]["policy"]}
    J = entries["joint_vel"][2] - entries["joint_vel"][1]          # the robot's joint count
    assert entries["joint_pos"][3] == [0, 1, 2] and entries["joint_pos"][2] - entries["joint_pos"][1] == 3 * J
    assert entries["last_action"][3] == [0, 1] and len(entries["joint_vel"]) == 3
    cfg, env_ep, ex = _evaluate_and_export(history_runs, "g1track/hist_adapt")
    # the metadata and deploy.yaml carry the history, and only where there is one
    meta = s2s.read_metadata(ex.onnx_path)
    terms = {t["name"]: t for t in meta["observation"]["terms"]}
    assert terms["joint_pos"]["history"] == [0, 1, 2] and terms["last_action"]["history"] == [0, 1]
    assert not [n for n, t in terms.items() if "history" in t and n not in ("joint_pos", "last_action")]
    assert yaml.safe_load(ex.yaml_path.read_text())["observation"]["terms"] == meta["observation"]["terms"]
    table = observation_table(meta)
    assert "0,1,2" in table.splitlines()[[l.split()[0] for l in table.splitlines()].index("joint_pos")]
    # sim2sim rebuilds the history from the metadata alone: the same observation as the env's on the same states
    model, ref = s2s.deployment_model(meta), s2s.load_reference("builtin:squat", meta)
    _observation_parity(meta, model, ref, env_ep)
    _reproduces_rollout(ex.onnx_path, meta, model, ref, env_ep)
    # the env's history is not a copy of the present: one step back is the previous step's joint_pos block
    a = entries["joint_pos"][1]
    if env_ep.num_steps > 2:
        assert np.allclose(env_ep.extras["obs"][2][a + J:a + 2 * J], env_ep.extras["obs"][1][a:a + J])
        assert not np.allclose(env_ep.extras["obs"][2][a:a + J], env_ep.extras["obs"][1][a:a + J])
    # BeyondMimic's metadata cannot say it, even for terms its controller computes: one sentence
    with pytest.raises(ExportError, match=r"past values of \{'joint_pos': \[0, 1, 2\]\}.*--format g1track"):
        beyondmimic_observation_names([entries["joint_pos"], entries["joint_vel"]])


def test_the_recorder_keeps_only_what_was_asked_and_names_unknown_keys():
    from g1track.eval.record import Recorder, Rollout
    rec, called = Recorder(("qpos", "terms")), []
    for t in range(3):
        rec.add(qpos=torch.full((2, 4), float(t)), obs=lambda: called.append(1) or torch.zeros(2), **{"term/a": torch.ones(2) * t})
    steps = rec.stacked()
    assert set(steps) == {"qpos", "term/a"} and steps["qpos"].shape == (3, 2, 4) and not called   # obs never computed
    r = Rollout(steps, torch.tensor([2, 3]), torch.tensor([True, False]))
    assert np.array_equal(r.env(0, "term/a"), [0.0, 1.0]) and r.env(1, "qpos").shape == (3, 4)
    with pytest.raises(KeyError, match=r"cannot record \['qvel_typo'\]"):
        Recorder(("qpos", "qvel_typo"))


# ---------------------------------------------------------------------------------------------------------------
# the command line

def test_cli_evaluates_plays_and_exports(runs, capsys):
    from g1track.eval.cli import main
    out = runs / "cli"
    assert main(["--run_path", "g1track/ev_adapt", "--run_dir", str(runs), "-p", "--export", "--max-seconds", "0.1",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "student vs teacher" in text and "onnxruntime vs torch max |diff|" in text
    assert (out / "metrics_adapt.json").is_file() and (out / "policy.onnx").is_file() and (out / "deploy.yaml").is_file()
    (video,) = out.glob("play_adapt_student_*.mp4")
    assert video.stat().st_size > 1000


@pytest.mark.parametrize("make, expected", [
    ("missing", "no checkpoint for run g1track/nope"),
    ("garbage", "corrupted or truncated"),
    ("truncated", "corrupted or truncated"),
    ("export_train", "never been trained"),
])
def test_cli_errors_are_one_sentence(runs, tmp_path, capsys, make, expected):
    from g1track.eval.cli import main
    real = runs / "g1track" / "ev_adapt" / "checkpoints" / "latest.pt"
    if make == "missing": args = ["--run_path", "g1track/nope", "--run_dir", str(runs)]
    elif make == "garbage":
        (tmp_path / "ckpt.pt").write_bytes(b"\x00garbage" * 100); args = ["--checkpoint", str(tmp_path / "ckpt.pt")]
    elif make == "truncated":
        data = real.read_bytes(); (tmp_path / "ckpt.pt").write_bytes(data[: len(data) // 2]); args = ["--checkpoint", str(tmp_path / "ckpt.pt")]
    else: args = ["--run_path", "g1track/ev_train", "--run_dir", str(runs), "--export"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("module", ["g1track.eval", "g1track.eval.sim2sim"])
def test_module_help_from_a_fresh_interpreter(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and f"python -m {module}" in r.stdout and "--motion" in r.stdout


# ---------------------------------------------------------------------------------------------------------------
# the field's success, errors two ways, and named protocols (issue: honest tracking numbers)

def test_a_drift_past_the_threshold_without_termination_is_a_failure():
    from g1track.eval.metrics import episode_success
    T = 30
    ref = np.zeros((T, len(BODIES), 3))
    ramp = lambda total: ref + np.linspace(0, total, T)[:, None, None] * np.array([1.0, 0.0, 0.0])
    near, far = _episode(ramp(0.45), ref), _episode(ramp(0.6), ref)             # neither terminated
    assert episode_success(near) and not episode_success(far)
    assert episode_success(far, threshold_m=0.7)                                  # the threshold is a setting
    m = summarize([near, far])
    assert m["success"] == 0.5 and m["survival"] == 1.0 and m["successes"] == 1
    r = evaluate_episodes([near, far], success_threshold_m=0.7)
    assert r["overall"]["success"] == 1.0 and "0.7 m" in r["definitions"]["success"] and "0.7 m" in metrics_table(r)


def test_errors_of_failed_episodes_are_kept_and_successful_ones_reported_apart():
    T = 20
    ref = np.zeros((T, len(BODIES), 3))
    good = _episode(ref + [0.01, 0, 0], ref)                                       # 10 mm, succeeds
    bad = _episode(ref[:5] + [0.1, 0, 0], ref[:5], terminated=True)                # 100 mm for 5 steps, then falls
    m = summarize([good, bad])
    assert m["mpkpe_mm"] == pytest.approx((20 * 10 + 5 * 100) / 25)               # all frames, the failure included
    assert m["succ_mpkpe_mm"] == pytest.approx(10.0)                               # successful episodes only
    assert np.isnan(summarize([bad])["succ_mpkpe_mm"])                             # nothing succeeded: n/a, not 0
    assert "n/a" in metrics_table(evaluate_episodes([bad]))


def test_joint_velocity_error_in_rad_per_s():
    T = 10
    ref = np.zeros((T, len(BODIES), 3))
    e = _episode(ref, ref)
    e.joint_vel, e.ref_joint_vel = np.full((T, 29), 0.5), np.zeros((T, 29))
    assert summarize([e])["joint_vel_error_rad_s"] == pytest.approx(0.5)
    assert np.isnan(summarize([_episode(ref, ref)])["joint_vel_error_rad_s"])      # not recorded: n/a


def test_protocols_set_the_conditions_and_bad_names_are_refused():
    from g1track.config import task_cfg, ConfigError
    from g1track.eval.core import eval_cfg, eval_task_cfg, episodes_per_clip
    task = task_cfg()
    nom = eval_task_cfg(task, 2, 5.0, eval_cfg())
    rob = eval_task_cfg(task, 2, 5.0, eval_cfg("protocol=robust"))
    push = eval_task_cfg(task, 2, 5.0, eval_cfg("protocol=push"))
    assert not nom.observations.noise.enabled and list(nom.randomization.action_delay_s) == [0.0, 0.0]
    assert list(nom.randomization.mass_scale) == [1.0, 1.0]
    assert rob.randomization.enabled and rob.observations.noise.enabled
    assert list(rob.randomization.foot_friction) == list(task.randomization.foot_friction)
    assert list(rob.randomization.action_delay_s) == list(task.randomization.action_delay_s)
    assert not rob.randomization.push.enabled and not nom.randomization.push.enabled
    assert push.randomization.push.enabled and list(push.randomization.push.interval_s) == list(task.randomization.push.interval_s)
    assert all(np.allclose(np.asarray(v, float), 0) for v in rob.reset.values())             # every protocol starts on the reference
    assert episodes_per_clip(eval_cfg()) == 1 and episodes_per_clip(eval_cfg("protocol=robust")) == 64
    assert episodes_per_clip(eval_cfg("protocol=robust", "episodes_per_clip=8")) == 8
    with pytest.raises(ConfigError, match="unknown evaluation protocol 'windy'.*nominal, robust, push"):
        eval_cfg("protocol=windy")
    with pytest.raises(ConfigError, match="protocol=robust"):
        eval_cfg("randomize=true")


def test_start_points_every_second_run_to_the_clip_end():
    from g1track.eval.core import start_points
    from g1track.motion import builtin_motion
    squat = builtin_motion("squat")                                                # 8 s, 401 frames
    assert start_points([squat], 0.02, None) == [(0, 0)]
    assert start_points([squat, squat], 0.02, 1.0) == [(c, f) for c in (0, 1) for f in range(0, 400, 50)]


def _same(a: dict, b: dict) -> bool:
    "Metric dicts equal, NaN equal to NaN (a metric nobody achieved is NaN in both)."
    return a.keys() == b.keys() and all((x == y) or (isinstance(x, float) and np.isnan(x) and np.isnan(y))
                                        for x, y in ((a[k], b[k]) for k in a))


def test_protocols_change_what_the_evaluation_says(runs):
    from g1track.eval.core import evaluate_checkpoint, eval_cfg
    cfg = lambda *o: eval_cfg(f"run_dir={runs}", "episodes_per_clip=3", "max_episode_s=1.0", *o)
    nom = evaluate_checkpoint("g1track/ev_train", cfg(), out_dir=runs / "prot")
    rob = evaluate_checkpoint("g1track/ev_train", cfg("protocol=robust"), out_dir=runs / "prot")
    q_nom = [e.extras["qpos"] for e in nom.episodes["teacher"]]
    q_rob = [e.extras["qpos"] for e in rob.episodes["teacher"]]
    assert len(q_nom) == len(q_rob) == 3
    n = min(len(q) for q in q_nom + q_rob + [q_nom[0][:10]])
    spread = lambda qs: max(np.abs(qs[0][:n] - q[:n]).max() for q in qs[1:])
    assert spread(q_nom) < 1e-4                            # nominal: the same episode (up to float rounding of batched math)
    assert spread(q_rob) > 1e-2                            # robust: seeded episodes with their own physics and noise
    assert "protocol nominal" in nom.report() and "protocol robust" in rob.report()
    saved = json.loads(rob.json_path.read_text())
    assert rob.json_path.name == "metrics_train_robust.json" and nom.json_path.name == "metrics_train.json"
    assert saved["protocol"] == "robust" and "0.5 m" in saved["definitions"]["success"]
    assert saved["settings"]["protocol_settings"]["pushes"] is False
    assert {"success", "survival", "succ_mpkpe_mm", "joint_vel_error_rad_s"} <= set(saved["actors"]["teacher"]["overall"])


def test_a_checkpoint_older_than_the_solver_settings_still_evaluates_as_it_was_trained(runs, tmp_path):
    "Checkpoints written before task.sim.solver existed ran MuJoCo's own solver settings; they must still load and evaluate."
    from omegaconf import OmegaConf
    from g1track.runs import load_checkpoint, checkpoint_config, atomic_save
    from g1track.eval.core import evaluate_checkpoint, make_eval_env, eval_cfg
    ckpt = load_checkpoint(runs / "g1track" / "ev_train" / "checkpoints" / "latest.pt")
    cfg = OmegaConf.create(ckpt["config"])
    del cfg.task.sim["solver"]                                     # what a checkpoint of the previous release carries
    old = dict(ckpt, config=OmegaConf.to_yaml(cfg))
    path = atomic_save(old, tmp_path / "checkpoints" / "ckpt_000001.pt")
    assert checkpoint_config(old).task.sim.solver.iterations == 100
    env = make_eval_env(old, eval_cfg(), None, path)
    try: assert (env.sim.model.opt.iterations, env.sim.model.opt.ls_iterations) == (100, 50)
    finally: env.close()
    ev = evaluate_checkpoint(path, eval_cfg("max_episode_s=0.2"), out_dir=tmp_path / "eval")
    assert list(ev.results) == ["teacher"]


def test_a_checkpoint_with_the_older_reward_and_termination_config_evaluates_and_exports_as_it_was_trained(runs, tmp_path):
    "Before terms had their parameters in the term: rewards.scale, bare termination limits, terminations.ee_bodies, no push.enabled."
    from omegaconf import OmegaConf
    from g1track.runs import load_checkpoint, checkpoint_config, atomic_save
    from g1track.eval.core import evaluate_checkpoint, make_eval_env, eval_cfg
    from g1track.eval.export import deployment_metadata
    ckpt = load_checkpoint(runs / "g1track" / "ev_train" / "checkpoints" / "latest.pt")
    cfg = OmegaConf.create(ckpt["config"])
    t = cfg.task
    t.rewards.scale = t.pop("reward_scale")
    bodies = list(t.terminations.ee_height.bodies)
    t.terminations = {"anchor_height": 0.25, "anchor_tilt": 0.8, "ee_height": 0.3, "ee_bodies": bodies}
    del t.randomization.push["enabled"]; del t.robot["root_body"]
    old = dict(ckpt, config=OmegaConf.to_yaml(cfg))
    path = atomic_save(old, tmp_path / "checkpoints" / "ckpt_000001.pt")
    up = checkpoint_config(old).task
    assert up.reward_scale == 0.02 and "scale" not in up.rewards and up.randomization.push.enabled and up.robot.root_body == "pelvis"
    assert up.terminations.ee_height.limit == 0.3 and list(up.terminations.ee_height.bodies) == bodies
    env = make_eval_env(old, eval_cfg(), None, path)
    try: assert env.terminations["ee_height"][1] == pytest.approx(0.3) and len(env.terminations["ee_height"][2]["bodies"]) == len(bodies)
    finally: env.close()
    meta = deployment_metadata(old, path)["evaluation"]
    assert meta["terminations"] == dict(anchor_height=0.25, anchor_tilt=0.8, ee_height=0.3, ee_bodies=bodies) and meta["root_body"] == "pelvis"
    assert list(evaluate_checkpoint(path, eval_cfg("max_episode_s=0.2"), out_dir=tmp_path / "eval").results) == ["teacher"]


# ---------------------------------------------------------------------------------------------------------------
# nothing lost, nothing mixed (issue: reliability pass): the export pair, debris, folders that cannot be written

def _pair(folder):
    "(policy.onnx bytes, deploy.yaml text) of an export folder, None for a missing file."
    read = lambda p, f: f(p) if p.exists() else None
    return read(folder / "policy.onnx", lambda p: p.read_bytes()), read(folder / "deploy.yaml", lambda p: p.read_text())


def _pair_matches(folder) -> bool:
    "A deploy.yaml, if there is one, describes the policy.onnx beside it (its sha256)."
    import hashlib, yaml
    onnx_bytes, text = _pair(folder)
    return text is None or yaml.safe_load(text)["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()


def test_a_failed_second_write_leaves_the_previous_export_pair_intact(runs, evaluation, tmp_path, monkeypatch):
    import g1track.eval.export as export
    from g1track.eval.core import eval_cfg
    from g1track.files import OutputError
    obs = np.concatenate([e.extras["obs"] for e in evaluation.episodes["student"]])
    cfg = eval_cfg(f"run_dir={runs}")
    export.export_student("g1track/ev_adapt", cfg, out_dir=tmp_path, obs=obs)
    before = _pair(tmp_path)
    writes, real = [], export.write_synced
    def full_disk_on_the_second_write(path, data):
        writes.append(path)
        if len(writes) == 2: raise OSError(28, "No space left on device")
        return real(path, data)
    monkeypatch.setattr(export, "write_synced", full_disk_on_the_second_write)
    with pytest.raises(OutputError, match="cannot write the export into .*No space left on device.*left as it was"):
        export.export_student("g1track/ev_adapt", cfg, out_dir=tmp_path, obs=obs[:-1])
    assert len(writes) == 2 and _pair(tmp_path) == before                 # the old pair, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.yaml", "policy.onnx"]     # no temporary file left


def _stages(tmp_path):
    "Staging folders of landings into `tmp_path` (they sit beside it)."
    return [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.tmp")]


@pytest.mark.parametrize("killed_at", ["exchange", "cleanup"])
def test_a_kill_at_any_instant_of_the_landing_leaves_one_whole_pair(runs, evaluation, tmp_path, monkeypatch, killed_at):
    import g1track.files as files
    import g1track.eval.export as export
    from g1track.eval.core import eval_cfg
    obs = np.concatenate([e.extras["obs"] for e in evaluation.episodes["student"]])
    cfg = eval_cfg(f"run_dir={runs}")
    export.export_student("g1track/ev_adapt", cfg, out_dir=tmp_path, obs=obs)
    before = _pair(tmp_path)
    def killed(*a, **k): raise KeyboardInterrupt                         # SIGKILL: nothing after this point runs
    monkeypatch.setattr(files.shutil, "rmtree", killed if killed_at == "cleanup" else (lambda *a, **k: None))
    if killed_at == "exchange": monkeypatch.setattr(files, "exchange", killed)
    with pytest.raises(KeyboardInterrupt):
        export.export_student("g1track/ev_adapt", cfg, out_dir=tmp_path, obs=obs[:-1])
    monkeypatch.undo()
    after = _pair(tmp_path)
    assert None not in after and _pair_matches(tmp_path) and (after == before) == (killed_at == "exchange")
    assert len(_stages(tmp_path)) == 1                                   # what the kill left, beside the folder
    export.export_student("g1track/ev_adapt", cfg, out_dir=tmp_path, obs=obs)
    assert _stages(tmp_path) == [] and _pair_matches(tmp_path) and _pair(tmp_path)[1] is not None


def test_where_folders_cannot_be_exchanged_a_kill_never_leaves_a_mismatched_pair(runs, evaluation, tmp_path, monkeypatch):
    import g1track.files as files
    import g1track.eval.export as export
    from g1track.eval.core import eval_cfg
    obs = np.concatenate([e.extras["obs"] for e in evaluation.episodes["student"]])
    cfg = eval_cfg(f"run_dir={runs}")
    monkeypatch.setattr(files, "exchange", lambda a, b: False)          # another OS, or a file system without the call
    export.export_student("g1track/ev_adapt", cfg, out_dir=tmp_path, obs=obs)
    real = files.os.replace
    def killed_before_the_yaml(src, dst):
        if str(dst).endswith("deploy.yaml"): raise KeyboardInterrupt      # a kill between the two renames
        return real(src, dst)
    monkeypatch.setattr(files.os, "replace", killed_before_the_yaml)
    with pytest.raises(KeyboardInterrupt):
        export.export_student("g1track/ev_adapt", cfg, out_dir=tmp_path, obs=obs[:-1])
    monkeypatch.undo()
    assert _pair_matches(tmp_path)                                        # an onnx without its yaml, never another export's yaml
    ex = export.export_student("g1track/ev_adapt", cfg, out_dir=tmp_path, obs=obs)
    assert _pair(tmp_path)[1] is not None and _pair_matches(tmp_path) and ex.yaml_path.is_file()


def test_debris_of_a_killed_export_is_removed_by_the_next(runs, evaluation, tmp_path):
    from g1track.eval.core import eval_cfg
    from g1track.eval.export import export_student
    dead = next(p for p in range(4_000_000, 4_001_000) if not _running(p))
    debris = [tmp_path / f".policy.onnx.tmp{dead}", tmp_path / f".deploy.yaml.tmp{dead}"]
    for d in debris: d.write_bytes(b"half a file")
    obs = np.concatenate([e.extras["obs"] for e in evaluation.episodes["student"]])
    export_student("g1track/ev_adapt", eval_cfg(f"run_dir={runs}"), out_dir=tmp_path, obs=obs)
    assert not any(d.exists() for d in debris)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.yaml", "policy.onnx"]


def _running(pid: int) -> bool:
    from g1track.files import process_running
    return process_running(pid)


@pytest.mark.parametrize("args, expected", [
    (["--out", "{file}/out"], "is a file, not a folder"),
    (["--export", "--out", "{file}/out"], "is a file, not a folder"),
    (["--export", "--no-eval", "--out", "{file}/out"], "is a file, not a folder"),
    (["--out", "{readonly}"], "ro is read-only"),
])
def test_cli_refuses_an_output_folder_it_cannot_write_before_any_work(runs, tmp_path, capsys, monkeypatch, args, expected):
    "A run folder or --out under a file, or read-only: one sentence before the evaluation, nothing written anywhere."
    import os
    from g1track.eval.cli import main
    (tmp_path / "file").write_text("a file where a folder is needed")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    if os.geteuid() == 0:                                                 # root ignores permission bits: os.access is told so too
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(tmp_path / "ro") else real(p, mode, *a, **k))
    args = [a.format(file=tmp_path / "file", readonly=tmp_path / "ro") for a in args]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    run_before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    assert main(["--run_path", "g1track/ev_adapt", "--run_dir", str(runs), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == run_before


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    "A tiny train -> adapt run whose actions are relative to the reference joints (task.action.relative_to=reference)."
    from g1track.config import compose
    from g1track.train import train
    root = tmp_path_factory.mktemp("rruns")
    common = ["task.num_envs=8", "algo.train_every=16", f"run_dir={root}", "task.motions=[builtin:squat]", "progress=false",
              "wandb.mode=disabled", "task.action.relative_to=reference"]
    torch.set_num_threads(1)
    train(compose(["+exp=train", "total_frames=512", "wandb.id=ref_train", *common]))
    train(compose(["+exp=adapt", "total_frames=256", "wandb.id=ref_adapt", "checkpoint_path=run:g1track/ref_train", *common]))
    return root


def test_a_reference_relative_student_exports_with_the_reference_folded_in(reference_runs):
    "The ONNX gives default + scale * action the environment's q_ref + scale * a, from its own input: sim2sim reproduces the rollout."
    from g1track.runs import load_checkpoint
    from g1track.eval.core import evaluate_checkpoint, eval_cfg
    from g1track.eval.export import export_student, ExportError
    from g1track.eval.beyondmimic import export_beyondmimic
    from g1track.eval import sim2sim as s2s
    cfg, env_ep, ex = _evaluate_and_export(reference_runs, "g1track/ref_adapt")
    meta = s2s.read_metadata(ex.onnx_path)
    assert meta["action_base"].startswith("reference")
    model, ref = s2s.deployment_model(meta), s2s.load_reference("builtin:squat", meta)
    # the plain loop knows nothing of the reference base. The fold rounds differently in float32 ((q_ref - q_default) / s,
    # then s x in float64) than the env's q_ref + s a: ~1e-7 a step, grown to ~2e-4 over a falling rollout (measured)
    _reproduces_rollout(ex.onnx_path, meta, model, ref, env_ep, atol=1e-3)
    with pytest.raises(ExportError, match="relative to the reference.*--format g1track"):
        export_beyondmimic("g1track/ref_adapt", cfg, obs=env_ep.extras["obs"])
