"""Physics backends: MuJoCo C vs MuJoCo Warp parity, instability resets, parameters, determinism, errors."""
import sys
import numpy as np
import mujoco
import pytest
import torch

from g1track.robot import FREE_LIN_VEL, FREE_POS, QPOS_JOINTS
from g1track.sim import SimConfigError, resolve_backend, sim_cfg, sim_model
from g1track.sim_factory import make_sim
from g1track.sim_mujoco import MujocoSim
from g1track.sim_warp import WarpSim, contact_capacity

N = 4
PARITY_TOL = 1e-4      # max |qpos| difference (m, rad) between the engines after 25 control steps
Z = FREE_POS.start + 2 # the qpos column of the root's height


@pytest.fixture(scope="module")
def warp_sim(g1_physics):
    pytest.importorskip("mujoco_warp")
    sim = make_sim(g1_physics, N, backend="warp", device="cpu")
    yield sim
    sim.close()


def nominal(sim):
    ids = torch.arange(sim.num_envs)
    nb, nj = len(sim.g1.body_names), sim.g1.nj
    sim.set_params(ids, friction=torch.ones(len(ids)), mass_scale=torch.ones(len(ids), nb), com_offset=torch.zeros(len(ids), 3),
                   kp_scale=torch.ones(len(ids), nj), kd_scale=torch.ones(len(ids), nj))


def drop_start(g1, n=N, seed=0):
    "Default pose 2 cm above the floor, joints perturbed, a small horizontal push: a landing, then standing."
    gen = torch.Generator().manual_seed(seed)
    q = torch.tensor(g1.default_qpos, dtype=torch.float64).repeat(n, 1)
    q[:, Z] += 0.02
    q[:, QPOS_JOINTS] += 0.05 * torch.randn(n, g1.nj, generator=gen, dtype=torch.float64)
    v = torch.zeros(n, g1.model.nv, dtype=torch.float64)
    v[:, FREE_LIN_VEL][:, :2] = 0.2 * torch.randn(n, 2, generator=gen, dtype=torch.float64)   # a horizontal push
    return q, v


def arm_swing(g1, k, n=N):
    "PD targets at control step k: the default pose with both arms swinging at 1 Hz."
    ctrl = torch.tensor(g1.default_joint_pos, dtype=torch.float32).repeat(n, 1)
    ctrl[:, g1.joint_names.index("left_shoulder_pitch_joint"):] += 0.3 * np.sin(2 * np.pi * 0.02 * k)   # the arms
    return ctrl


def randomize(sim):
    "Different physics in every env but the first."
    sim.set_params([1], friction=torch.tensor([0.3]))
    nb, nj = len(sim.g1.body_names), sim.g1.nj
    sim.set_params([2], mass_scale=torch.full((1, nb), 1.2), com_offset=torch.tensor([[0.03, -0.02, 0.01]]))
    sim.set_params([3], kp_scale=torch.full((1, nj), 0.8), kd_scale=torch.full((1, nj), 1.3))


def run(sim, g1, steps=25):
    q, v = drop_start(g1, sim.num_envs)
    sim.set_state(torch.arange(sim.num_envs), q, v)
    out = []
    for k in range(steps):
        sim.step(arm_swing(g1, k, sim.num_envs))
        out.append(sim.qpos.detach().cpu().double().clone())
    return torch.stack(out)


def test_backends_agree_over_25_control_steps(g1_physics, warp_sim):
    g1 = g1_physics
    cpu = make_sim(g1, N, backend="mujoco", nthread=2)
    nominal(warp_sim)
    randomize(cpu); randomize(warp_sim)
    a, b = run(cpu, g1), run(warp_sim, g1)
    # the scenario is physical: the robot landed (pelvis dropped) and the arms moved
    shoulder = g1.qpos_adr[g1.joint_names.index("left_shoulder_pitch_joint")]
    assert (a[-1, :, Z] < drop_start(g1)[0][:, Z] - 0.01).all()
    assert (a[:, :, shoulder] - a[0, :, shoulder]).abs().max() > 0.1
    assert cpu.unstable_total == 0 and warp_sim.unstable_total == 0 and warp_sim.overflow_total == 0
    err = (a - b).abs().max().item()
    assert err < PARITY_TOL, f"backends differ by {err:.2e} in qpos after 25 control steps"
    # the randomized envs really are different physics (so parity above covers the parameters too)
    assert ((a[-1, 1:] - a[-1, :1]).abs().amax(1) > 1e-4).all()
    cpu.close()


@pytest.mark.parametrize("backend", ["mujoco", "warp"])
def test_poisoned_env_is_reset_alone_and_counted(g1_physics, backend, request):
    g1 = g1_physics
    sim = request.getfixturevalue("warp_sim") if backend == "warp" else make_sim(g1, N, backend="mujoco")
    nominal(sim)
    q, v = drop_start(g1)
    ids = torch.arange(N)

    def two_steps(poison=None):
        sim.set_state(ids, q, v)
        if poison: poison()
        before = sim.unstable_total
        sim.step(arm_swing(g1, 0)); first = sim.unstable.clone()
        sim.step(arm_swing(g1, 1))
        return sim.qpos.clone(), sim.qvel.clone(), first, sim.unstable_total - before

    clean_q, clean_v, flags, count = two_steps()
    assert not flags.any() and count == 0
    nan_q = q[2:3].clone(); nan_q[0, 9] = float("nan")
    pq, pv, flags, count = two_steps(lambda: sim.set_state([2], nan_q, v[2:3]))
    assert flags.tolist() == [False, False, True, False] and count == 1
    others = torch.tensor([0, 1, 3])
    assert torch.equal(pq[others], clean_q[others]) and torch.equal(pv[others], clean_v[others])
    assert torch.isfinite(pq).all() and torch.isfinite(pv).all()
    # the reset env restarted from the default pose: one step later it is standing near it
    assert (pq[2, FREE_POS] - torch.tensor(g1.default_qpos[FREE_POS], dtype=torch.float32)).abs().max() < 0.05
    # an exploding env (huge velocity) and a NaN control are caught the same way
    fast = v[0:1].clone(); fast[0, 10] = 1e5
    sim.set_state(ids, q, v); sim.set_state([0], q[0:1], fast)
    ctrl = arm_swing(g1, 0); ctrl[3, 5] = float("inf")
    before = sim.unstable_total
    sim.step(ctrl)
    assert sim.unstable.tolist() == [True, False, False, True] and sim.unstable_total - before == 2
    assert (sim.qvel[[0, 3]] == 0).all() and torch.isfinite(sim.qpos).all()
    if backend == "mujoco": sim.close()


def test_velocity_limit_catches_an_env_the_physics_throws(g1_physics):
    "An env whose PD slams a joint past sim.max_qvel during the step is reset; calm envs are not."
    g1 = g1_physics
    sim = make_sim(g1, 3, backend="mujoco", cfg=sim_cfg(max_qvel=10.0))
    q = torch.tensor(g1.default_qpos).repeat(3, 1)
    sim.set_state(torch.arange(3), q, torch.zeros(3, g1.model.nv))
    ctrl = torch.tensor(g1.default_joint_pos, dtype=torch.float32).repeat(3, 1)
    wrist = g1.joint_names.index("left_wrist_pitch_joint")
    ctrl[1, wrist] += 1.5                                   # 5 N·m on a light wrist: tens of rad/s within 20 ms
    sim.step(ctrl)
    assert sim.unstable.tolist() == [False, True, False] and sim.unstable_total == 1
    assert sim.qvel.abs().max() <= 10.0
    sim.close()


def test_mujoco_backend_is_deterministic_and_resumes_exactly(g1_physics):
    g1 = g1_physics
    a, b = make_sim(g1, N, backend="mujoco", nthread=1), make_sim(g1, N, backend="mujoco", nthread=2)
    randomize(a); randomize(b)
    run(a, g1, steps=10); run(b, g1, steps=10)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["qpos"].dtype == torch.float64
    assert torch.equal(sa["qpos"], sb["qpos"]) and torch.equal(sa["qvel"], sb["qvel"])   # any thread count
    for k in range(10, 15): a.step(arm_swing(g1, k))
    c = make_sim(g1, N, backend="mujoco", nthread=2)
    c.load_state_dict(sb)                                  # a fresh simulator continues from the checkpoint
    for k in range(10, 15): c.step(arm_swing(g1, k))
    sa, sc = a.state_dict(), c.state_dict()
    for key in ("qpos", "qvel", "sensordata"): assert torch.equal(sa[key], sc[key]), key
    assert all(torch.equal(sa["params"][k], sc["params"][k]) for k in sa["params"])
    for s in (a, b, c): s.close()


def test_params_are_the_model_fields_plain_mujoco_would_use(g1_physics):
    "set_params(kp, kd, com) steps exactly like plain MuJoCo with those fields edited by hand."
    g1 = g1_physics
    sim = make_sim(g1, 2, backend="mujoco", nthread=1)
    kp, kd, com = 0.7, 1.5, np.array([0.02, 0.01, -0.03])
    sim.set_params([1], kp_scale=torch.full((1, g1.nj), kp), kd_scale=torch.full((1, g1.nj), kd), com_offset=torch.tensor(com[None]))
    q, v = drop_start(g1, 2)
    sim.set_state([0, 1], q, v)
    m = sim_model(g1)
    m.actuator_gainprm[:, 0] *= np.float32(kp); m.actuator_biasprm[:, 1] *= np.float32(kp); m.actuator_biasprm[:, 2] *= np.float32(kd)
    m.body_ipos[m.body("torso_link").id] += com.astype(np.float32)
    d = mujoco.MjData(m)
    d.qpos[:], d.qvel[:] = q[1].numpy(), v[1].numpy()
    for k in range(5):
        ctrl = arm_swing(g1, k, 2)
        sim.step(ctrl)
        d.qacc_warmstart[:] = 0                              # rollout starts each control step cold
        d.ctrl[:] = ctrl[1].double().numpy()
        for _ in range(g1.cfg.decimation): mujoco.mj_step(m, d)
    got = sim.state_dict()["qpos"][1].numpy()
    assert np.abs(got - d.qpos).max() < 1e-9
    assert np.abs(got - sim.state_dict()["qpos"][0].numpy()).max() > 1e-3   # and the parameters changed something
    sim.close()


def test_friction_and_mass_change_the_physics(g1_physics):
    g1 = g1_physics
    sim = make_sim(g1, 3, backend="mujoco")
    sim.set_params([1], friction=torch.tensor([0.1]))
    sim.set_params([2], mass_scale=torch.full((1, len(g1.body_names)), 1.3))
    assert sim.get_params()["friction"].tolist() == pytest.approx([1.0, 0.1, 1.0])
    ids, feet = torch.arange(3), g1.body_ids(g1.cfg.feet)
    q = torch.tensor(g1.default_qpos).repeat(3, 1)
    ctrl = torch.tensor(g1.default_joint_pos).repeat(3, 1)
    sim.set_state(ids, q, torch.zeros(3, g1.model.nv))
    for _ in range(8): sim.step(ctrl)
    weight = -(sim.sensor(f"{g1.cfg.feet[0]}_contact")[:, 3] + sim.sensor(f"{g1.cfg.feet[1]}_contact")[:, 3])
    assert weight[2] / weight[0] == pytest.approx(1.3, rel=0.1)          # the feet carry the heavier robot
    v = torch.zeros(3, g1.model.nv); v[:, FREE_LIN_VEL] = torch.tensor([1.5, 0.0, 0.0])   # shove the standing robot forward
    sim.set_state(ids, q, v)
    x0 = sim.bodies()[0][:, feet, 0].clone()
    for _ in range(10): sim.step(ctrl)
    slide = (sim.bodies()[0][:, feet, 0] - x0).mean(1)
    assert slide[1] > 3 * slide[0], f"feet on friction 0.1 slid {slide[1]:.3f} m vs {slide[0]:.3f} m on 1.0"
    sim.close()


def test_bodies_and_sensors_are_current(g1_physics):
    g1 = g1_physics
    sim = make_sim(g1, 2, backend="mujoco")
    q, v = drop_start(g1, 2)
    sim.set_state([0, 1], q, v)
    assert (sim.sensordata == 0).all()                     # nothing known about contacts before a step
    for k in range(5): sim.step(arm_swing(g1, k, 2))          # 2 cm of free fall, then landing
    d = mujoco.MjData(sim.model)
    d.qpos[:] = sim.state_dict()["qpos"][1].numpy()
    mujoco.mj_kinematics(sim.model, d)
    pos = sim.bodies()[0][1].double().numpy()
    assert np.abs(pos - d.xpos[1:]).max() < 1e-5
    assert sim.sensor(f"{g1.cfg.feet[0]}_contact")[:, 0].min() > 0     # both robots are on their feet
    with pytest.raises(KeyError, match="unknown sensor"): sim.sensor("nose_contact")
    sim.close()


def test_contact_buffers_cover_the_robot_lying_on_the_floor(g1_physics):
    nconmax, njmax = contact_capacity(sim_model(g1_physics))
    assert nconmax >= 2 * 31 + 2                           # 31 capsules and 2 spheres can touch the floor
    nj = g1_physics.nj
    assert njmax >= 4 * 64 + nj                            # pyramidal condim-3 contacts and a limit on every joint
    assert njmax >= 4 * nconmax + nj                       # every contact slot, self-contacts included, has its rows


def test_solver_settings_come_from_the_config_on_both_engines(g1_physics):
    cfg = sim_cfg(**{"solver.iterations": 7, "solver.ls_iterations": 9, "solver.tolerance": 1e-6})
    sim = make_sim(g1_physics, 2, backend="mujoco", cfg=cfg)
    assert (sim.model.opt.iterations, sim.model.opt.ls_iterations, sim.model.opt.tolerance) == (7, 9, 1e-6)
    assert all(m.opt.iterations == 7 for m in sim._models)
    sim.close()
    default = sim_cfg().solver
    assert sim_model(g1_physics).opt.iterations == default.iterations != g1_physics.model.opt.iterations
    with pytest.raises(SimConfigError, match="sim.solver"):
        make_sim(g1_physics, 2, backend="mujoco", cfg=sim_cfg(**{"solver.iterations": 0}))
    pytest.importorskip("mujoco_warp")
    w = make_sim(g1_physics, 2, backend="warp", device="cpu", cfg=cfg)
    assert (w._wm.opt.iterations, w._wm.opt.ls_iterations) == (7, 9)
    w.close()


def test_warp_contact_pool_overflow_resets_every_world_and_is_counted(g1_physics):
    "A pool too small for the contacts of standing robots drops contacts; any world may have lost some: all reset."
    pytest.importorskip("mujoco_warp")
    g1 = g1_physics
    sim = make_sim(g1, 3, backend="warp", device="cpu", cfg=sim_cfg(**{"warp.nconmax": 2}))
    sim.set_state([0, 1, 2], torch.tensor(g1.default_qpos).repeat(3, 1), torch.zeros(3, g1.model.nv))
    sim.step(torch.tensor(g1.default_joint_pos).repeat(3, 1))
    c = sim.counters()
    assert sim.unstable.all() and int(c["overflow_contact"]) == 3 and int(c["overflow_constraint"]) == 0
    assert sim.overflow_total == 3 and sim.unstable_total == 3
    torch.testing.assert_close(sim.qpos, torch.tensor(g1.default_qpos, dtype=torch.float32).repeat(3, 1))
    sd = sim.state_dict()
    other = make_sim(g1, 3, backend="warp", device="cpu")
    other.load_state_dict(sd)                              # the counters travel with the checkpoint
    assert int(other.counters()["overflow_contact"]) == 3
    sim.close(); other.close()


def test_bad_configuration_fails_at_construction(g1_physics, monkeypatch):
    with pytest.raises(SimConfigError, match="unknown sim backend 'physx'"):
        make_sim(g1_physics, 2, backend="physx")
    with pytest.raises(SimConfigError, match="num_envs"):
        make_sim(g1_physics, 0, backend="mujoco")
    with pytest.raises(SimConfigError, match="unknown sim device"):
        resolve_backend("mujoco", "tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SimConfigError, match="no CUDA GPU"):
            make_sim(g1_physics, 2, backend="warp", device="cuda")
    monkeypatch.setitem(sys.modules, "mujoco_warp", None)      # as if the package were not installed
    with pytest.raises(SimConfigError, match="needs the mujoco_warp package"):
        make_sim(g1_physics, 2, backend="warp", device="cpu")
    if not torch.cuda.is_available():
        assert resolve_backend("auto", "auto")[0] == "mujoco"  # no GPU: auto is the CPU engine
    with pytest.raises(KeyError, match="unknown sim config key"):
        sim_cfg(**{"warp.ncon": 3})


def test_bad_inputs_are_named(g1_physics):
    sim, nv = make_sim(g1_physics, 2, backend="mujoco"), g1_physics.model.nv
    with pytest.raises(ValueError, match=rf"ctrl must have shape \[2, {g1_physics.nj}\]"):
        sim.step(torch.zeros(2, 12))
    with pytest.raises(ValueError, match="mass_scale must have shape"):
        sim.set_params([0], mass_scale=torch.ones(len(g1_physics.body_names)))
    with pytest.raises(ValueError, match="qpos must have shape"):
        sim.set_state([0], torch.zeros(1, nv), torch.zeros(1, nv))   # a qvel-sized qpos
    other = make_sim(g1_physics, 3, backend="mujoco")
    with pytest.raises(ValueError, match="holds 3 envs"):
        sim.load_state_dict(other.state_dict())
    sim.close(); other.close()


def test_warp_constraint_overflow_resets_and_counts(g1_physics):
    "A world whose contacts need more constraint rows than njmax has lost constraints: reset and counted."
    pytest.importorskip("mujoco_warp")
    g1 = g1_physics
    sim = make_sim(g1, 2, backend="warp", device="cpu", cfg=sim_cfg(**{"warp.njmax": 40}))
    q = torch.tensor(g1.default_qpos).repeat(2, 1)
    q[1, Z] += 0.5                                          # env 1 starts in the air: no contacts yet
    sim.set_state([0, 1], q, torch.zeros(2, g1.model.nv))
    sim.step(torch.tensor(g1.default_joint_pos).repeat(2, 1))
    assert sim.unstable.tolist() == [True, False]           # 14 foot capsules on the floor need ~100 rows
    assert sim.overflow_total == 1 and sim.unstable_total == 1
    assert int(sim.counters()["overflow_constraint"]) == 1 and int(sim.counters()["overflow_contact"]) == 0
    sim.close()


def _imports_of(module) -> set:
    "The g1track modules that `module`'s source imports, at any depth (lazy imports inside functions too)."
    import ast, inspect
    out = set()
    for n in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(n, ast.ImportFrom) and n.module: out.add(n.module if n.level == 0 else f"g1track.{n.module}")
        elif isinstance(n, ast.Import): out |= {a.name for a in n.names}
    return {m for m in out if m.startswith("g1track.")}


def test_the_base_module_the_engines_and_the_factory_import_one_way(g1_physics):
    "base <- engines <- factory: g1track.sim names no engine (it used to hold make_sim, an import circle)."
    import g1track.sim as base, g1track.sim_mujoco as cpu, g1track.sim_warp as gpu, g1track.sim_factory as factory
    assert not _imports_of(base) & {"g1track.sim_mujoco", "g1track.sim_warp", "g1track.sim_factory"}
    assert "g1track.sim_factory" not in _imports_of(cpu) | _imports_of(gpu)
    assert {"g1track.sim", "g1track.sim_mujoco", "g1track.sim_warp"} <= _imports_of(factory)
    assert not hasattr(base, "make_sim") and not hasattr(base, "MujocoSim")
    sim = make_sim(g1_physics, 1, backend="mujoco")
    assert type(sim) is MujocoSim and isinstance(sim, base.Sim)
    sim.close()
