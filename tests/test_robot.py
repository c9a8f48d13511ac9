"""The simulated G1: model, actuator physics, symmetry tables, kinematics, rendering and errors."""
import numpy as np
import mujoco
import pytest
import torch

import g1track.robot as robot
from g1track.robot import (FREE_ANG_VEL, FREE_LIN_VEL, FREE_POS, FREE_QUAT, G1_JOINT_NAMES, QPOS_JOINTS, QVEL_JOINTS,
                           BodyKinematics, ModelUnavailableError, fixed_base_spec, load_g1, robot_cfg,
                           settle_fixed_base, sole_height)


def test_model_has_29_position_actuators_in_unitree_order(g1):
    m = g1.model
    assert m.nu == 29 and m.nq == 36 and m.nv == 35
    assert [m.actuator(i).name + "_joint" for i in range(m.nu)] == list(G1_JOINT_NAMES)
    # each actuator drives the joint of the same name
    assert [m.joint(m.actuator_trnid[i, 0]).name for i in range(m.nu)] == list(G1_JOINT_NAMES)
    assert m.opt.timestep == 0.005 and m.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor") >= 0
    assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0


def test_named_slices_cover_free_joint_then_joints_in_unitree_order(g1):
    m = g1.model
    q, v = np.arange(m.nq), np.arange(m.nv)
    assert list(q[FREE_POS]) == [0, 1, 2] and list(q[FREE_QUAT]) == [3, 4, 5, 6]
    assert list(v[FREE_LIN_VEL]) == [0, 1, 2] and list(v[FREE_ANG_VEL]) == [3, 4, 5]
    assert (g1.qpos_adr == q[QPOS_JOINTS]).all() and (g1.dof_adr == v[QVEL_JOINTS]).all()
    assert len(q[QPOS_JOINTS]) == len(v[QVEL_JOINTS]) == g1.nj


def test_model_whose_joint_order_differs_from_joint_names_is_refused(monkeypatch):
    swapped = list(G1_JOINT_NAMES)
    swapped[3], swapped[4] = swapped[4], swapped[3]          # left knee <-> left ankle pitch
    monkeypatch.setattr(robot, "G1_JOINT_NAMES", tuple(swapped))
    with pytest.raises(ValueError, match=r"joint order mismatch: 'left_ankle_pitch_joint' .*qpos\[10\]") as e:
        load_g1(visual=False)
    assert "left_knee_joint" in str(e.value) and "\n" not in str(e.value)


def test_pd_gains_follow_reflected_inertia(g1):
    m, w, zeta = g1.model, 2 * np.pi * 10.0, 2.0
    for i, j in enumerate(G1_JOINT_NAMES):
        I = m.dof_armature[m.jnt_dofadr[m.joint(j).id]]
        kp, kv = m.actuator_gainprm[i, 0], -m.actuator_biasprm[i, 2]
        assert kp == pytest.approx(I * w**2, rel=1e-9), j
        assert kv == pytest.approx(2 * zeta * I * w, rel=1e-9), j
        assert -m.actuator_biasprm[i, 1] == pytest.approx(kp)
        assert m.actuator_forcelimited[i] and m.actuator_forcerange[i, 1] == pytest.approx(g1.effort[i])
    # the motor table of cfg/task/G1/G1.yaml (robot.motors), spot-checked
    assert g1.armature[G1_JOINT_NAMES.index("left_knee_joint")] == pytest.approx(0.025102)
    assert g1.effort[G1_JOINT_NAMES.index("waist_pitch_joint")] == 50
    assert g1.effort[G1_JOINT_NAMES.index("right_wrist_yaw_joint")] == 5
    np.testing.assert_allclose(g1.action_scale, 0.25 * g1.effort / g1.kp)


def test_static_error_is_gravity_torque_over_stiffness(g1):
    model, d, _ = settle_fixed_base(g1.default_joint_pos, seconds=3.0)
    mujoco.mj_forward(model, d)
    assert np.abs(d.qvel).max() < 0.02, "the fixed-base robot did not come to rest"
    err = g1.default_joint_pos - d.qpos
    predicted = d.qfrc_bias / g1.kp          # at rest the bias force is gravity alone
    tol = np.maximum(0.1 * np.abs(predicted), 0.01)
    bad = {j: (float(e), float(p)) for j, e, p, t in zip(G1_JOINT_NAMES, err, predicted, tol) if abs(e - p) > t}
    assert not bad, bad
    idx = {j: i for i, j in enumerate(G1_JOINT_NAMES)}
    assert 0.15 < abs(err[idx["waist_pitch_joint"]]) < 0.3          # the waist sags about 0.2 rad
    for j in ("left_shoulder_roll_joint", "right_shoulder_roll_joint", "left_elbow_joint", "right_elbow_joint"):
        assert 0.03 < abs(err[idx[j]]) < 0.08, j                     # the arms 0.04-0.07 rad


def _step_response(g1, joint, step=0.1, seconds=1.0):
    target = g1.default_joint_pos.copy()
    model, d, _ = settle_fixed_base(target, seconds=2.0)
    i = G1_JOINT_NAMES.index(joint)
    start = d.qpos[i]
    d.ctrl[i] += step
    traj = []
    for _ in range(int(seconds / model.opt.timestep)):
        mujoco.mj_step(model, d)
        traj.append(d.qpos[i])
    traj = np.array(traj) - start
    return traj, traj[-1]


def _effective_damping_ratio(g1, joint):
    model = fixed_base_spec().compile()
    d = mujoco.MjData(model); d.qpos[:] = g1.default_joint_pos; mujoco.mj_forward(model, d)
    M = np.zeros((model.nv, model.nv)); mujoco.mj_fullM(model, d, M)
    i = G1_JOINT_NAMES.index(joint)
    return g1.kd[i] / (2 * np.sqrt(g1.kp[i] * M[i, i]))


@pytest.mark.parametrize("joint", ["left_ankle_pitch_joint", "right_ankle_roll_joint", "left_wrist_pitch_joint"])
def test_step_settles_without_overshoot_where_the_loop_is_overdamped(g1, joint):
    # The PD is overdamped (zeta = 2) on the motor's reflected inertia; where the load adds little
    # inertia (ankles, wrists) the loop stays overdamped, and a step must not overshoot.
    assert _effective_damping_ratio(g1, joint) > 1.0
    traj, final = _step_response(g1, joint)
    assert final == pytest.approx(0.1, abs=0.01)
    assert traj.max() <= final + 1e-3, f"overshoot {traj.max() - final:.4f} rad"
    t_settle = np.argmax(np.abs(traj - final) < 0.05 * abs(final)) * 0.005
    assert t_settle < 0.3


def test_step_overshoots_where_the_load_inertia_dominates(g1):
    # The same check fails where physics says it must: the hip pitch carries the whole leg.
    assert _effective_damping_ratio(g1, "left_hip_pitch_joint") < 0.5
    traj, final = _step_response(g1, "left_hip_pitch_joint", seconds=1.5)
    assert traj.max() > final + 0.01


def test_dropped_robot_falls_without_nan_or_explosion(g1_physics):
    g1 = g1_physics
    m = g1.model
    d = mujoco.MjData(m)
    d.qpos[:] = g1.default_qpos; d.qpos[2] += 0.3; d.ctrl[:] = g1.default_joint_pos
    heights, speeds = [], []
    for _ in range(int(3.0 / m.opt.timestep)):
        mujoco.mj_step(m, d)
        heights.append(d.qpos[2]); speeds.append(np.abs(d.qvel).max())
    assert np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all()
    assert max(speeds) < 50.0
    assert min(heights) < g1.default_qpos[2]            # it fell to the floor ...
    assert min(heights) > 0.0                           # ... and did not go through it
    assert d.warning[mujoco.mjtWarning.mjWARN_BADQACC].number == 0


def test_mirror_tables(g1):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 29))
    np.testing.assert_array_equal(g1.mirror_joints(g1.mirror_joints(x)), x)
    np.testing.assert_allclose(g1.mirror_joints(g1.default_joint_pos), g1.default_joint_pos)
    assert sorted(g1.mirror_perm) == list(range(29))
    for i, j in enumerate(g1.joint_names):
        other = g1.joint_names[g1.mirror_perm[i]]
        assert other == j.replace("left_", "right_") if j.startswith("left_") else other == j.replace("right_", "left_")
        assert g1.mirror_sign[i] == (-1 if ("roll" in j or "yaw" in j) else 1)
    xt = torch.tensor(x)
    torch.testing.assert_close(g1.mirror_joints(xt), torch.tensor(g1.mirror_joints(x)))
    # bodies: left and right swap, the centre maps to itself
    names = g1.body_names
    assert names[g1.body_mirror[names.index("left_knee_link")]] == "right_knee_link"
    assert names[g1.body_mirror[names.index("torso_link")]] == "torso_link"


def test_default_pose_stands_on_the_floor(g1):
    m = g1.model
    assert abs(sole_height(m, g1.default_qpos, g1.cfg.feet)) < 1e-9      # the soles touch z = 0 ...
    d = mujoco.MjData(m); d.qpos[:] = g1.default_qpos; mujoco.mj_forward(m, d)
    floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    for c in d.contact[:d.ncon]:                                           # ... and nothing else does
        if floor in (c.geom1, c.geom2):
            body = m.body(m.geom_bodyid[c.geom2 if c.geom1 == floor else c.geom1]).name
            assert body in g1.cfg.feet and c.dist > -1e-6, (body, c.dist)
    assert 0.6 < g1.default_qpos[2] < 0.85       # ... and the robot stands at a sensible height
    knee = g1.default_joint_pos[G1_JOINT_NAMES.index("left_knee_joint")]
    assert 0.2 < knee < 1.0                      # knees slightly bent


def test_torch_kinematics_matches_mujoco(g1):
    m = g1.model
    fk = BodyKinematics(m, dtype=torch.float64)
    rng = np.random.default_rng(1)
    d = mujoco.MjData(m)
    N = 8
    qpos = np.tile(g1.default_qpos, (N, 1)); qpos[:, 7:] += rng.normal(0, 0.5, (N, 29))
    qpos[:, 3:7] = rng.normal(size=(N, 4)); qpos[:, 3:7] /= np.linalg.norm(qpos[:, 3:7], axis=1, keepdims=True)
    qvel = rng.normal(0, 1, (N, m.nv))
    pos, quat, lin, ang = fk(torch.tensor(qpos), torch.tensor(qvel))
    for n in range(N):
        d.qpos[:], d.qvel[:] = qpos[n], qvel[n]
        mujoco.mj_forward(m, d)
        np.testing.assert_allclose(pos[n].numpy(), d.xpos[1:], atol=1e-10)
        sign = np.sign((quat[n].numpy() * d.xquat[1:]).sum(-1, keepdims=True))
        np.testing.assert_allclose(quat[n].numpy() * sign, d.xquat[1:], atol=1e-10)
        for b in range(1, m.nbody):
            v = np.zeros(6); mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_XBODY, b, v, 0)
            np.testing.assert_allclose(ang[n, b - 1].numpy(), v[:3], atol=1e-10)
            np.testing.assert_allclose(lin[n, b - 1].numpy(), v[3:], atol=1e-10)


def test_sensors_report_foot_contact_when_standing(g1_physics):
    g1 = g1_physics
    d = mujoco.MjData(g1.model); d.qpos[:] = g1.default_qpos; d.qpos[2] -= 0.002; d.ctrl[:] = g1.default_joint_pos
    for _ in range(20): mujoco.mj_step(g1.model, d)
    for foot in g1.cfg.feet:
        found, *force = d.sensordata[g1.sensors[f"{foot}_contact"]]
        assert found >= 1 and np.linalg.norm(force) > 50.0, foot   # each foot carries a share of ~35 kg
    assert sum(d.sensordata[g1.sensors[f"{b}_touch"]][0] for b in g1.cfg.undesired_contact_bodies) == 0


def test_render_returns_frames_of_requested_size(g1):
    from g1track import viz
    with viz.Renderer(g1.model, width=160, height=120) as r:
        img = r.render(g1.default_qpos)
        ghost = r.render(g1.default_qpos, ghost=g1.qpos(root_pos=[0.3, 0, g1.default_qpos[2]]))
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50     # not blank
    assert np.abs(ghost.astype(int) - img).mean() > 1                               # the ghost shows
    q = np.tile(g1.default_qpos, (3, 1)); q[:, 0] += [0, 0.1, 0.2]
    frames = viz.render_trajectory(g1.model, q, width=160, height=120)
    assert frames.shape == (3, 120, 160, 3)


def test_write_video_is_atomic_and_playable(g1, tmp_path):
    from g1track import viz
    frames = viz.render_trajectory(g1.model, np.tile(g1.default_qpos, (5, 1)), width=160, height=120)
    out = viz.write_video(tmp_path / "clip.mp4", frames, fps=25)
    assert (tmp_path / "clip.mp4").stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_wrong_menagerie_root_gives_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MENAGERIE_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(ModelUnavailableError) as e:
        load_g1()
    msg = str(e.value)
    assert "MENAGERIE_ROOT" in msg and "unitree_g1" in msg and "g1_mjlab" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_unknown_robot_config_key_is_refused():
    with pytest.raises(KeyError, match="unknown robot config key 'timestepp'"):
        robot_cfg(timestepp=0.01)
    assert robot_cfg(timestep=0.01).timestep == 0.01
