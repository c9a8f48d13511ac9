"""The BeyondMimic export (`--export --format beyondmimic`), read the way HybridRobotics' motion_tracking_controller
reads it, its observation preset (task=G1/G1_tracking_bm), and sim2sim's harder conditions."""
import json, math, os, subprocess, sys
import numpy as np
import pytest
import torch

# what the controller and whole_body_tracking's exporter use (MotionOnnxPolicy.cpp, exporter.py)
CONTROLLER_KEYS = {"joint_names", "joint_stiffness", "joint_damping", "default_joint_pos", "command_names", "observation_names",
                   "observation_history_lengths", "action_scale", "anchor_body_name", "body_names", "run_path"}
OUTPUTS = ["actions", "joint_pos", "joint_vel", "body_pos_w", "body_quat_w", "body_lin_vel_w", "body_ang_vel_w"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Seconds of training with the BeyondMimic preset (the policy falls; the file format is what is tested)."
    from g1track.config import compose
    from g1track.train import train
    root = tmp_path_factory.mktemp("runs")
    common = ["task=G1/G1_tracking_bm", "task.num_envs=8", "algo.train_every=16", f"run_dir={root}",
              "task.motions=[builtin:squat]", "progress=false", "wandb.mode=disabled"]
    torch.set_num_threads(1)
    train(compose(["+exp=train", "total_frames=1024", "wandb.id=bm_train", *common]))
    train(compose(["+exp=adapt", "total_frames=256", "wandb.id=bm_adapt", "checkpoint_path=run:g1track/bm_train", *common]))
    return root


@pytest.fixture(scope="module")
def evaluation(runs):
    from g1track.eval.core import evaluate_checkpoint, eval_cfg
    return evaluate_checkpoint("g1track/bm_adapt", eval_cfg(f"run_dir={runs}"), actor="student", record_obs=True)


@pytest.fixture(scope="module")
def exported(runs, evaluation):
    from g1track.eval.core import eval_cfg
    from g1track.eval.beyondmimic import export_beyondmimic
    obs = np.concatenate([e.extras["obs"] for e in evaluation.episodes["student"]])
    return export_beyondmimic("g1track/bm_adapt", eval_cfg(f"run_dir={runs}"), obs=obs)


def read_like_the_controller(path) -> dict:
    "onnxruntime's metadata map, every list split at commas and numbers parsed as doubles (parseCsv<double> / std::stod)."
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = sess.get_modelmeta().custom_metadata_map
    m = {k: raw[k].split(",") for k in ("joint_names", "command_names", "observation_names", "body_names")}
    m.update({k: [float(x) for x in raw[k].split(",")] for k in
              ("joint_stiffness", "joint_damping", "default_joint_pos", "action_scale", "observation_history_lengths")})
    m["anchor_body_name"] = raw["anchor_body_name"]
    return dict(session=sess, raw=raw, meta=m)


def check_like_the_controller(path, clip_spec: str = "builtin:squat"):
    "Everything the controller relies on, read its way, against g1track's G1, the preset's bodies and the clip."
    from g1track.config import task_cfg
    from g1track.robot import load_g1
    from g1track.motion import load_motion
    r = read_like_the_controller(path)
    sess, raw, m = r["session"], r["raw"], r["meta"]
    assert CONTROLLER_KEYS <= set(raw)
    task = task_cfg(task="G1/G1_tracking_bm")
    g1 = load_g1(task.robot, visual=False)
    # the lengths: 29 joints, one value per joint, the body list with the anchor in it
    assert m["joint_names"] == list(g1.joint_names) and len(m["joint_names"]) == 29
    for k, want in (("joint_stiffness", g1.kp), ("joint_damping", g1.kd), ("default_joint_pos", g1.default_joint_pos),
                    ("action_scale", g1.action_scale)):
        assert len(m[k]) == 29 and np.allclose(m[k], want, rtol=1e-12), k
    assert m["body_names"] == list(task.robot.tracked_bodies) and m["anchor_body_name"] in m["body_names"]
    assert m["command_names"] == ["motion"]
    assert m["observation_names"] == ["command", "motion_anchor_ori_b", "base_ang_vel", "joint_pos", "joint_vel", "actions"]
    assert m["observation_history_lengths"] == [1.0] * 6
    # the input/output names and shapes
    B, J = len(m["body_names"]), 29
    D = 2 * J + 6 + 3 + 3 * J
    assert [(i.name, i.shape) for i in sess.get_inputs()] == [("obs", [1, D]), ("time_step", [1, 1])]
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [
        ("actions", [1, J]), ("joint_pos", [1, J]), ("joint_vel", [1, J]), ("body_pos_w", [1, B, 3]), ("body_quat_w", [1, B, 4]),
        ("body_lin_vel_w", [1, B, 3]), ("body_ang_vel_w", [1, B, 3])]
    # the embedded motion at time_step=k is frame k of the clip (and its last frame past the end)
    clip = load_motion(clip_spec)
    bi = [list(clip.body_names).index(b) for b in m["body_names"]]
    obs = np.zeros((1, D), np.float32)
    for k in list(range(0, clip.num_frames, 7)) + [clip.num_frames - 1, clip.num_frames + 10]:
        out = dict(zip(OUTPUTS, sess.run(None, {"obs": obs, "time_step": np.array([[k]], np.float32)})))
        f = min(k, clip.num_frames - 1)
        np.testing.assert_allclose(out["joint_pos"][0], clip.joint_pos[f], atol=1e-6)
        np.testing.assert_allclose(out["joint_vel"][0], clip.joint_vel[f], atol=1e-5)
        np.testing.assert_allclose(out["body_pos_w"][0], clip.body_pos_w[f][bi], atol=1e-6)
        np.testing.assert_allclose(out["body_quat_w"][0], clip.body_quat_w[f][bi], atol=1e-6)
        np.testing.assert_allclose(out["body_ang_vel_w"][0], clip.body_ang_vel_w[f][bi], atol=1e-5)
    # g1track's own description rides along under one key
    assert json.loads(raw["g1track"])["clip"] == {"name": clip.name, "frames": clip.num_frames, "fps": 50.0, "source": clip.source}


def test_reader_reads_the_file_like_the_controller(exported, runs):
    path = exported.onnx_paths["squat"]
    assert path == runs / "g1track" / "bm_adapt" / "export" / "beyondmimic" / "squat.onnx"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]           # no temporary files left
    assert exported.parity_max_abs <= 1e-5 and exported.motion_max_abs <= 1e-5 and exported.num_obs > 0
    check_like_the_controller(path)


@pytest.mark.skipif(not os.environ.get("G1TRACK_BM_ONNX"), reason="set G1TRACK_BM_ONNX=FILE (and G1TRACK_BM_CLIP=SPEC) to check a trained export")
def test_reader_on_a_given_file():
    "The same reader on a file of a real training run: G1TRACK_BM_ONNX=runs/.../export/beyondmimic/squat.onnx pytest -k given_file"
    check_like_the_controller(os.environ["G1TRACK_BM_ONNX"], os.environ.get("G1TRACK_BM_CLIP", "builtin:squat"))


def test_actions_are_the_checkpoint_student(exported, runs):
    from g1track.runs import load_checkpoint, policy_from_checkpoint
    ckpt = load_checkpoint(runs / "g1track" / "bm_adapt" / "checkpoints" / "latest.pt")
    student = policy_from_checkpoint(ckpt).student_onnx_module()
    sess = read_like_the_controller(exported.onnx_paths["squat"])["session"]
    x = (np.random.default_rng(0).normal(size=(5, ckpt["obs_dims"]["policy"])) * 2).astype(np.float32)
    for row in x:
        got = sess.run(["actions"], {"obs": row[None], "time_step": np.array([[3.0]], np.float32)})[0]
        assert np.abs(got - student(torch.from_numpy(row[None])).detach().numpy()).max() <= 1e-5


def test_the_controller_computes_what_the_environment_fed_the_policy(exported, evaluation):
    "The preset's student group, computed from the file alone (BeyondMimic's controller in numpy), equals the env's."
    import mujoco
    from g1track.eval import sim2sim as s2s, sim2sim_bm as bm_loop
    bm = bm_loop.read_beyondmimic(exported.onnx_paths["squat"])
    model, meta = bm_loop.beyondmimic_plant(bm)
    d = mujoco.MjData(model)
    ctl = bm_loop.Controller(bm, model, d)
    ep = evaluation.episodes["student"][0]
    ref = s2s.load_reference("builtin:squat", dict(meta, tracked_bodies=bm.body_names, anchor_body=bm.anchor))
    for k in range(ep.num_steps):
        qpos, qvel = (ref.qpos[0], ref.qvel[0]) if k == 0 else (ep.extras["qpos"][k - 1], ep.extras["qvel"][k - 1])
        d.qpos[:], d.qvel[:] = qpos, qvel
        mujoco.mj_kinematics(model, d)
        if k == 0: ctl.reset(0, align=False)
        ctl.time_step = int(ep.extras["frame"][k]); ctl.forward(np.zeros(ctl.obs_dim))
        ctl.last_action = np.zeros(29) if k == 0 else ep.extras["action"][k - 1]
        assert np.abs(ctl.observe() - ep.extras["obs"][k]).max() < 1e-4, f"step {k}"


def test_both_loops_reproduce_the_environment_from_its_start(exported, evaluation):
    "From the clip's first frame, with no harder condition, the BeyondMimic loop moves like the env and scores the same."
    from g1track.eval import sim2sim as s2s
    r = s2s.sim2sim(exported.onnx_paths["squat"], progress=False)
    env_ep, ep = evaluation.episodes["student"][0], r["episodes"][0]
    assert r["format"] == "beyondmimic" and ep.num_steps == env_ep.num_steps and ep.terminated == env_ep.terminated
    assert np.abs(ep.extras["qpos"][:5] - env_ep.extras["qpos"][:5]).max() < 1e-3
    assert r["overall"]["success"] == evaluation.results["student"]["overall"]["success"]


def test_a_policy_the_controller_cannot_express_is_refused():
    from g1track.config import task_cfg
    from g1track.eval.export import ExportError
    from g1track.eval.beyondmimic import beyondmimic_observation_names
    from g1track.observations import term_entries
    names = [e.term for e in term_entries(task_cfg().observations.policy)]   # the default task: future frames, relative
    # reference joints
    with pytest.raises(ExportError, match=r"\['ref_joint_pos', 'ref_joint_vel', 'ref_anchor_ori', 'projected_gravity'\].*task=G1/G1_tracking_bm"):
        beyondmimic_observation_names([(n, 0, 1) for n in names])
    assert beyondmimic_observation_names([(e.term, 0, 1) for e in term_entries(task_cfg(task="G1/G1_tracking_bm").observations.policy)])


def test_the_preset_keeps_the_teacher_and_critic_groups():
    from g1track.config import task_cfg
    base, bm = task_cfg(), task_cfg(task="G1/G1_tracking_bm")
    assert bm.observations.priv == base.observations.priv and bm.observations.critic_priv == base.observations.critic_priv
    assert bm.rewards == base.rewards and bm.robot == base.robot and bm.name == "G1_tracking_bm"


# --- sim2sim's harder conditions, each on its own ------------------------------------------------------

def test_latency_delays_the_targets_by_whole_physics_steps():
    from g1track.eval.sim2sim import DelayedTargets
    m = DelayedTargets(0.02, np.zeros(2))
    m.push(0.0, np.ones(2))
    seen = [m.at(t)[0] for t in np.arange(0, 0.04, 0.005)]
    assert seen == [0, 0, 0, 0, 1, 1, 1, 1]
    now = DelayedTargets(0.0, np.zeros(1))
    now.push(0.0, np.ones(1))
    assert now.at(0.0)[0] == 1                                     # no latency: the target acts from the same physics step


def test_standing_start_heading_and_alignment():
    import mujoco
    from g1track.eval import sim2sim as s2s
    from g1track.robot import load_g1
    g1 = load_g1(visual=False)
    meta = dict(joint_names=list(g1.joint_names), default_joint_pos=list(g1.default_joint_pos), tracked_bodies=["pelvis", "torso_link"],
                anchor_body="torso_link", control_dt=0.02)
    ref = s2s.load_reference("builtin:squat", meta)
    cond = s2s.Conditions(start="standing", yaw_deg=90, align_heading=True)
    qpos, qvel = s2s.start_state(ref, cond, s2s.standing_qpos(meta))
    assert np.allclose(qpos[7:], g1.default_joint_pos) and np.allclose(qpos[:2], ref.qpos[0, :2]) and not qvel.any()
    assert math.isclose(s2s.yaw_of(qpos[3:7]) - s2s.yaw_of(ref.qpos[0, 3:7]), math.pi / 2, abs_tol=1e-9)
    m = g1.model; d = mujoco.MjData(m)
    d.qpos[:] = qpos; mujoco.mj_kinematics(m, d)
    a = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "torso_link")
    moved = s2s.align_reference(ref, *s2s.heading_alignment(d.xpos[a], d.xquat[a], ref.body_pos[0, 1], ref.body_quat[0, 1]))
    assert np.allclose(moved.body_pos[0, 1], d.xpos[a])                                       # the anchor lands on the robot's
    assert math.isclose(s2s.yaw_of(moved.body_quat[0, 1]), s2s.yaw_of(d.xquat[a]), abs_tol=1e-9)
    # rigid: distances between bodies and joint angles are unchanged
    assert np.allclose(np.linalg.norm(moved.body_pos[:, 0] - moved.body_pos[:, 1], axis=-1),
                       np.linalg.norm(ref.body_pos[:, 0] - ref.body_pos[:, 1], axis=-1))
    assert np.array_equal(moved.joint_pos, ref.joint_pos)
    plant = s2s.deployment_model(dict(meta, kp=list(g1.kp), kd=list(g1.kd), effort_limit=list(g1.effort), physics_dt=0.005))
    assert np.allclose(s2s.set_friction(plant, 0.3).geom_friction[:, 0], 0.3)


def test_harder_sim2sim_runs_and_says_its_conditions(exported, tmp_path):
    out = tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "g1track.eval.sim2sim", str(exported.onnx_paths["squat"]), "--start", "standing",
                        "--align-heading", "--yaw", "90", "--latency-ms", "20", "--obs-noise", "1", "--friction", "0.5",
                        "--max-seconds", "0.5", "--json", str(out), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "(beyondmimic format)" in r.stdout and "latency 20 ms" in r.stdout and "obs noise x1" in r.stdout
    saved = json.loads(out.read_text())
    assert saved["conditions"]["start"] == "standing" and saved["conditions"]["friction"] == 0.5 and saved["format"] == "beyondmimic"
    r = subprocess.run([sys.executable, "-m", "g1track.eval.sim2sim", str(exported.onnx_paths["squat"]), "--format", "g1track"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is a beyondmimic export" in r.stderr


def test_cli_exports_beyondmimic_and_refuses_format_without_export(runs, tmp_path, capsys):
    from g1track.eval.cli import main
    assert main(["--run_path", "g1track/bm_adapt", "--run_dir", str(runs), "--export", "--format", "beyondmimic", "--no-eval",
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "beyondmimic" / "squat.onnx").is_file() and "exported (BeyondMimic, clip squat)" in capsys.readouterr().out
    assert main(["--run_path", "g1track/bm_adapt", "--run_dir", str(runs), "--format", "beyondmimic", "--no-eval"]) == 2
    assert "add --export" in capsys.readouterr().err


def test_the_g1track_format_still_exports_the_preset(runs, evaluation, tmp_path):
    "The preset's new terms have deployment definitions, so the default format exports it and its loop observes it exactly."
    import mujoco
    from g1track.eval.core import eval_cfg
    from g1track.eval.export import export_student
    from g1track.eval import sim2sim as s2s
    ep = evaluation.episodes["student"][0]
    ex = export_student("g1track/bm_adapt", eval_cfg(f"run_dir={runs}"), out_dir=tmp_path, obs=ep.extras["obs"])
    meta = s2s.read_metadata(ex.onnx_path)
    layout = [(t["name"], t["start"], t["stop"]) for t in meta["observation"]["terms"]]
    assert [n for n, *_ in layout] == ["command", "motion_anchor_ori_b", "base_ang_vel", "joint_pos", "joint_vel", "last_action"]
    assert meta["observation"]["noise_amplitudes"]["motion_anchor_ori_b"] == 0.05 and meta["observation"]["noise_amplitudes"]["command"] == 0
    model = s2s.deployment_model(meta)
    ref = s2s.load_reference("builtin:squat", meta)
    d = mujoco.MjData(model); s = s2s.State(model, d, meta, ref)
    for k in range(ep.num_steps):
        d.qpos[:], d.qvel[:] = (ref.qpos[0], ref.qvel[0]) if k == 0 else (ep.extras["qpos"][k - 1], ep.extras["qvel"][k - 1])
        mujoco.mj_kinematics(model, d)
        s.frame, s.last_action = int(ep.extras["frame"][k]), (np.zeros(29) if k == 0 else ep.extras["action"][k - 1])
        assert np.abs(s2s.observe(s, layout) - ep.extras["obs"][k]).max() < 1e-4, f"step {k}"


def test_the_aligned_reference_stays_put_while_the_robot_moves(exported):
    "The alignment is taken once, at activation: a robot started on the clip sees the clip itself, whatever it does next."
    from g1track.eval import sim2sim as s2s
    path = exported.onnx_paths["squat"]
    aligned = s2s.sim2sim(path, max_seconds=1.0, cond=s2s.Conditions(align_heading=True))["episodes"][0]
    plain = s2s.sim2sim(path, max_seconds=1.0)["episodes"][0]
    n = min(aligned.num_steps, plain.num_steps)
    assert n > 5 and np.abs(aligned.ref_body_pos[:n] - plain.ref_body_pos[:n]).max() < 1e-5


def test_the_preset_terms_have_correct_mirror_images():
    "The mirror tables of `command` and `motion_anchor_ori_b` (used by symmetry augmentation): a mirrored state observes mirrored."
    from g1track.config import task_cfg
    from g1track.env import TrackingEnv, mirror_qpos, mirror_qvel
    from g1track.motion import builtin_motion, canonicalize
    from g1track.robot import load_g1
    g1 = load_g1(visual=False)
    wave = builtin_motion("arm_wave")                                   # asymmetric
    mirrored = canonicalize(mirror_qpos(g1, torch.tensor(wave.qpos)).numpy(), wave.fps, g1, "arm_wave_mirrored")
    env = TrackingEnv(task_cfg("task.observations.noise.enabled=false", "task.randomization.enabled=false", task="G1/G1_tracking_bm"),
                      num_envs=2, backend="mujoco", clips=[wave, mirrored])
    gen = torch.Generator().manual_seed(3)
    frame = 150
    q0 = torch.tensor(wave.qpos[frame], dtype=torch.float32); q0[7:] += 0.05 * torch.randn(29, generator=gen)
    v0 = torch.tensor(wave.qvel[frame], dtype=torch.float32) + 0.2 * torch.randn(35, generator=gen)
    env.clip[:] = torch.tensor([0, 1]); env.frame[:] = frame
    env.sim.set_state(torch.arange(2), torch.stack([q0, mirror_qpos(g1, q0)]), torch.stack([v0, mirror_qvel(g1, v0)]))
    env.last_action[:] = torch.stack([a := 0.3 * torch.randn(29, generator=gen), g1.mirror_joints(a)])
    env._read_state()
    obs = env.observe()
    torch.testing.assert_close(obs["policy"][1], env.mirror.obs(obs[:1])["policy"][0], atol=1e-4, rtol=0)


def test_cli_refuses_a_default_task_student_in_one_sentence(tmp_path, capsys):
    "A student of the default task (future frames, relative reference joints) is refused before any evaluation runs."
    from g1track.config import compose
    from g1track.train import train
    from g1track.eval.cli import main
    common = ["task.num_envs=4", "algo.train_every=8", f"run_dir={tmp_path}", "task.motions=[builtin:squat]", "progress=false",
              "wandb.mode=disabled"]
    train(compose(["+exp=train", "total_frames=64", "wandb.id=d_train", *common]))
    train(compose(["+exp=adapt", "total_frames=32", "wandb.id=d_adapt", "checkpoint_path=run:g1track/d_train", *common]))
    assert main(["--run_path", "g1track/d_adapt", "--run_dir", str(tmp_path), "--export", "--format", "beyondmimic"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "BeyondMimic's controller does not compute" in captured.err
    assert "student (" not in captured.out and not (tmp_path / "g1track" / "d_adapt" / "export").exists()


@pytest.mark.skipif(not hasattr(__import__("g1track.env", fromlist=["x"]), "has_history"),
                    reason="the environment has no observation history yet (issue 10, env side)")
def test_cli_refuses_a_student_with_a_history_in_one_sentence(tmp_path, capsys):
    "The preset's terms with joint_pos kept 0, 1, 2 steps back: BeyondMimic's history lengths cannot say that; refused before any evaluation."
    from g1track.config import compose
    from g1track.train import train
    from g1track.eval.cli import main
    policy = "[command,motion_anchor_ori_b,base_ang_vel,{joint_pos:{history:[0,1,2]}},joint_vel,last_action]"
    common = ["task=G1/G1_tracking_bm", "task.num_envs=4", "algo.train_every=8", f"run_dir={tmp_path}", "task.motions=[builtin:squat]",
              "progress=false", "wandb.mode=disabled", f"task.observations.policy={policy}"]
    train(compose(["+exp=train", "total_frames=64", "wandb.id=h_train", *common]))
    train(compose(["+exp=adapt", "total_frames=32", "wandb.id=h_adapt", "checkpoint_path=run:g1track/h_train", *common]))
    assert main(["--run_path", "g1track/h_adapt", "--run_dir", str(tmp_path), "--export", "--format", "beyondmimic"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "past values of {'joint_pos': [0, 1, 2]}" in captured.err and "--format g1track" in captured.err
    assert "student (" not in captured.out and not (tmp_path / "g1track" / "h_adapt" / "export").exists()

