"""Motion data: loaders on the real third-party clips, canonicalization, validation errors, the
MotionLibrary, built-in motions and the g1track-motion CLI."""
import math, os, pathlib, subprocess, sys
import numpy as np
import pytest
import torch

from g1track.motion import (Clip, MotionFormatError, MotionLibrary, builtin_motion, builtin_names, canonicalize,
                            expand_specs, finite_difference_qvel, isaaclab_joint_order, load_motion,
                            load_motions, save_clip, sole_heights)
from g1track.motion.cli import inspect_clip, main
from g1track.rotations import quat_apply, quat_from_rotvec, quat_mul

CSV = "lafan1_g1_dance2_subject1.csv"
HOLOSOMA = "holosoma_g1_largebox.npz"


@pytest.fixture(scope="module")
def dance(motions_dir, g1):
    return load_motion(motions_dir / CSV, g1=g1)


@pytest.fixture(scope="module")
def holosoma(motions_dir):
    return dict(np.load(motions_dir / HOLOSOMA))


# --- the real third-party clips -------------------------------------------------------------------

def test_lafan_csv_loads_resampled_to_50hz(dance, motions_dir, g1):
    rows = np.loadtxt(motions_dir / CSV, delimiter=",")
    assert rows.shape == (6571, 36)
    assert dance.fps == 50 and dance.num_frames == 10951 and dance.duration == pytest.approx(6570 / 30)
    assert dance.joint_names == g1.joint_names and dance.body_names == g1.body_names
    # frame 0 is source frame 0; frame 5 (0.1 s) is source frame 3: the common instants match exactly
    for ours, src in ((0, 0), (5, 3), (10950, 6570)):
        np.testing.assert_allclose(dance.qpos[ours, :3], rows[src, :3], atol=1e-12)
        np.testing.assert_allclose(dance.qpos[ours, 7:], rows[src, 7:], atol=1e-12)
        q = rows[src, [6, 3, 4, 5]] / np.linalg.norm(rows[src, 3:7])           # x y z w -> w x y z
        assert abs(abs(np.dot(dance.qpos[ours, 3:7], q)) - 1) < 1e-12
    # in between, joints are linearly interpolated: frame 1 (0.02 s) is 0.6 of the way from source 0 to 1
    np.testing.assert_allclose(dance.qpos[1, 7:], 0.4 * rows[0, 7:] + 0.6 * rows[1, 7:], atol=1e-12)
    # bodies come from our FK: the pelvis is the root
    np.testing.assert_allclose(dance.body_pos_w[:, 0], dance.qpos[:, :3], atol=1e-12)
    assert np.all(np.abs(np.linalg.norm(dance.qpos[:, 3:7], axis=1) - 1) < 1e-12)
    assert np.all((dance.qpos[1:, 3:7] * dance.qpos[:-1, 3:7]).sum(1) > 0)  # no quaternion sign flips


def test_holosoma_clip_loads_and_our_fk_matches_its_bodies(holosoma, motions_dir, g1):
    clip = load_motion(motions_dir / HOLOSOMA, g1=g1)
    assert clip.fps == 50 and clip.num_frames == 325
    names = [str(n) for n in holosoma["body_names"]]
    assert len(names) == 51
    # joints by name: holosoma's joint_pos columns reordered into ours
    cols = [list(holosoma["joint_names"]).index(j) for j in g1.joint_names]
    np.testing.assert_allclose(clip.qpos[:, 7:], holosoma["joint_pos"][:, 7:][:, cols], atol=1e-12)
    shared = [b for b in g1.body_names if b in names]
    assert len(shared) == 30
    err = {b: np.linalg.norm(clip.body_pos_w[:, g1.body_names.index(b)] - holosoma["body_pos_w"][:, names.index(b)], axis=-1).max()
           for b in shared}
    print("holosoma FK max error per body (cm):", {b: round(100 * e, 2) for b, e in err.items()})
    print(f"holosoma FK max error overall: {100 * max(err.values()):.2f} cm at {max(err, key=err.get)}")
    assert max(err.values()) < 0.02                 # the two G1 models differ by ~1 cm at the waist/torso
    assert err["left_ankle_roll_link"] < 1e-6 and err["right_wrist_yaw_link"] < 0.01


def test_a_body_order_bug_is_tens_of_centimetres_and_refused(holosoma, tmp_path, g1):
    # What a body-order bug looks like: the left and right legs' columns swapped under the same names.
    names = [str(n) for n in holosoma["joint_names"]]
    swapped = [n.replace("left_", "@").replace("right_", "left_").replace("@", "right_") if "hip" in n or "knee" in n or "ankle" in n
               else n for n in names]
    bad = dict(holosoma, joint_names=np.array(swapped))
    np.savez(tmp_path / "swapped.npz", **bad)
    with pytest.raises(MotionFormatError, match=r"swapped\.npz: the joint angles do not reproduce the stored body positions \(0\.[1-9]"):
        load_motion(tmp_path / "swapped.npz", g1=g1)


def test_csv_convert_then_load_round_trips_qpos_exactly(dance, motions_dir, tmp_path, g1):
    out = save_clip(dance, tmp_path / "dance.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["dance.npz"]            # no temporary file left behind
    back = load_motion(out, g1=g1)
    assert np.array_equal(back.qpos, dance.qpos)
    assert back.name == dance.name and back.source == dance.source and back.fps == 50
    np.testing.assert_allclose(back.qvel, dance.qvel, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(back.body_pos_w, dance.body_pos_w, atol=1e-5)
    np.testing.assert_allclose(back.body_ang_vel_w, dance.body_ang_vel_w, rtol=1e-6, atol=1e-4)
    # a frame range cuts source frames before resampling
    cut = load_motion(motions_dir / CSV, frames="300:600", g1=g1)
    assert cut.num_frames == 499 and np.allclose(cut.qpos[0, 7:], dance.qpos[500, 7:])


class _Unwritable:
    "An array field that fails while the file is being written (as a full disk would)."
    def __array__(self, *args, **kwargs): raise OSError("No space left on device")


def test_failed_write_leaves_nothing_behind(dance, tmp_path):
    target = tmp_path / "out.npz"
    target.write_bytes(b"old")
    broken = Clip(**{**dance.__dict__, "body_ang_vel_w": _Unwritable()})
    with pytest.raises(OSError, match="No space left"):
        save_clip(broken, target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.npz"]


# --- BeyondMimic: unnamed joints in Isaac Lab order ---------------------------------------------------

def _beyondmimic_from_holosoma(h, order, bodies_perm):
    cols = [list(h["joint_names"]).index(j) for j in order]
    return dict(fps=np.array([50]), joint_pos=h["joint_pos"][:, 7:][:, cols], joint_vel=h["joint_vel"][:, 6:][:, cols],
                body_pos_w=h["body_pos_w"][:, bodies_perm], body_quat_w=h["body_quat_w"][:, bodies_perm],
                body_lin_vel_w=h["body_lin_vel_w"][:, bodies_perm], body_ang_vel_w=h["body_ang_vel_w"][:, bodies_perm])


def test_isaaclab_order_is_breadth_first(g1):
    assert isaaclab_joint_order(g1)[:12] == (
        "left_hip_pitch_joint", "right_hip_pitch_joint", "waist_yaw_joint", "left_hip_roll_joint", "right_hip_roll_joint",
        "waist_roll_joint", "left_hip_yaw_joint", "right_hip_yaw_joint", "waist_pitch_joint", "left_knee_joint",
        "right_knee_joint", "left_shoulder_pitch_joint")
    assert sorted(isaaclab_joint_order(g1)) == sorted(g1.joint_names)


@pytest.mark.parametrize("order_name", ["isaaclab", "unitree"])
def test_beyondmimic_npz_joint_order_and_root_are_found(holosoma, tmp_path, g1, order_name, motions_dir):
    order = isaaclab_joint_order(g1) if order_name == "isaaclab" else g1.joint_names
    perm = np.random.default_rng(0).permutation(np.arange(1, 51))           # no world body, producer's body order
    np.savez(tmp_path / "bm.npz", **_beyondmimic_from_holosoma(holosoma, order, perm))
    clip = load_motion(tmp_path / "bm.npz", g1=g1)
    assert f"joint order {order_name}" in clip.source
    ref = load_motion(motions_dir / HOLOSOMA, g1=g1)
    np.testing.assert_allclose(clip.qpos, ref.qpos, atol=1e-12)
    # the order can also be named explicitly, and a wrong explicit order is refused
    assert np.allclose(load_motion(tmp_path / "bm.npz", g1=g1, joint_order=list(order)).qpos, ref.qpos)
    wrong = "unitree" if order_name == "isaaclab" else "isaaclab"
    with pytest.raises(MotionFormatError, match="no joint order .* reproduce the stored body positions"):
        load_motion(tmp_path / "bm.npz", g1=g1, joint_order=wrong)


def test_beyondmimic_npz_with_only_the_tracked_bodies(holosoma, tmp_path, g1, motions_dir):
    names = [str(n) for n in holosoma["body_names"]]
    keep = [names.index(b) for b in g1.cfg.tracked_bodies]
    np.savez(tmp_path / "bm14.npz", **_beyondmimic_from_holosoma(holosoma, isaaclab_joint_order(g1), keep))
    clip = load_motion(tmp_path / "bm14.npz", g1=g1)
    np.testing.assert_allclose(clip.qpos, load_motion(motions_dir / HOLOSOMA, g1=g1).qpos, atol=1e-12)


def test_beyondmimic_scrambled_joints_are_refused(holosoma, tmp_path, g1):
    order = list(np.random.default_rng(1).permutation(g1.joint_names))
    np.savez(tmp_path / "scrambled.npz", **_beyondmimic_from_holosoma(holosoma, order, np.arange(1, 51)))
    with pytest.raises(MotionFormatError, match=r"scrambled\.npz: no joint order \(unitree, isaaclab\)"):
        load_motion(tmp_path / "scrambled.npz", g1=g1)


def test_beyondmimic_quaternions_stored_xyzw_are_refused(holosoma, tmp_path, g1):
    arrays = _beyondmimic_from_holosoma(holosoma, isaaclab_joint_order(g1), np.arange(1, 51))
    arrays["body_quat_w"] = arrays["body_quat_w"][..., [1, 2, 3, 0]]                 # written x y z w
    np.savez(tmp_path / "xyzw.npz", **arrays)
    with pytest.raises(MotionFormatError, match=r"xyzw\.npz: body_quat_w is stored x y z w; BeyondMimic's order is w x y z"):
        load_motion(tmp_path / "xyzw.npz", g1=g1)


# --- every bad input gets one clear error ----------------------------------------------------------

def _rows(motions_dir, n=40):
    return np.loadtxt(motions_dir / CSV, delimiter=",", max_rows=n)


def _write_csv(path, rows):
    np.savetxt(path, rows, delimiter=",", fmt="%.6f")
    return path


def _bad_cases(motions_dir, h, tmp):
    rows = _rows(motions_dir)
    nan = rows.copy(); nan[7, 12] = np.nan
    inf = rows.copy(); inf[3, 1] = np.inf
    nonunit = rows.copy(); nonunit[5, 3:7] *= 1.2
    wxyz = rows.copy(); wxyz[:, 3:7] = rows[:, [6, 3, 4, 5]]                  # quaternion written w x y z
    lines = [",".join(f"{v:.6f}" for v in r) for r in rows[:5]]
    lines[2] = ",".join(f"{v:.6f}" for v in rows[2, :35])                     # row 3 lost a column
    (tmp / "short.csv").write_text("\n".join(lines) + "\n")
    ok = _write_csv(tmp / "ok.csv", rows)
    (tmp / "header.csv").write_text("x,y,z,qx,qy,qz,qw," + ",".join(f"j{i}" for i in range(29)) + "\n" + ok.read_text())
    unknown = dict(h); names = h["joint_names"].copy(); names[4] = "left_ankle_tilt_joint"; unknown["joint_names"] = names
    missing = dict(h); missing["joint_names"] = h["joint_names"][:-1]; missing["joint_pos"] = h["joint_pos"][:, :-1]
    nofps = {k: v for k, v in h.items() if k != "fps"}
    np.savez(tmp / "unknown.npz", **unknown); np.savez(tmp / "missing.npz", **missing); np.savez(tmp / "nofps.npz", **nofps)
    np.savez(tmp / "other.npz", positions=np.zeros((10, 3)))
    (tmp / "truncated.npz").write_bytes((motions_dir / HOLOSOMA).read_bytes()[:5000])
    return {
        "columns": (tmp / "short.csv", r"short\.csv: row 3 has 35 columns, expected 36"),
        "header": (tmp / "header.csv", r"header\.csv: row 1 is not 36 numbers .*remove header"),
        "nan": (_write_csv(tmp / "nan.csv", nan), r"nan\.csv: the root pose or joint angles contains NaN or inf \(first at frame 7\)"),
        "inf": (_write_csv(tmp / "inf.csv", inf), r"inf\.csv: .*NaN or inf \(first at frame 3\)"),
        "nonunit": (_write_csv(tmp / "nonunit.csv", nonunit), r"nonunit\.csv: the root quaternion is not a unit quaternion \(norm 1\.200 at frame 5\)"),
        "quat_order": (_write_csv(tmp / "wxyz.csv", wxyz), r"wxyz\.csv: the root quaternion read as x y z w .* read as w x y z it would be upright: the quaternion order cannot be right"),
        "one_frame": (_write_csv(tmp / "one.csv", rows[:1]), r"one\.csv: has 1 frame\(s\); a motion needs at least 2"),
        "unknown_joint": (tmp / "unknown.npz", r"unknown\.npz: joint_names has unknown joints \['left_ankle_tilt_joint'\] and missing joints \['left_ankle_pitch_joint'\]"),
        "missing_joint": (tmp / "missing.npz", r"missing\.npz: joint_names has missing joints \['right_wrist_yaw_joint'\]"),
        "missing_fps": (tmp / "nofps.npz", r"nofps\.npz: has no fps\. Fix: pass the frame rate"),
        "unreadable": (tmp / "truncated.npz", r"truncated\.npz: cannot be read as an npz archive"),
        "not_a_motion": (tmp / "other.npz", r"other\.npz: is not a motion npz we know"),
        "absent": (tmp / "absent.csv", r"absent\.csv: does not exist"),
        "ok": (ok, None),
    }


@pytest.mark.parametrize("case", ["columns", "header", "nan", "inf", "nonunit", "quat_order", "one_frame", "unknown_joint",
                                  "missing_joint", "missing_fps", "unreadable", "not_a_motion", "absent"])
def test_bad_input_gets_one_clear_error(case, motions_dir, holosoma, tmp_path, g1):
    path, pattern = _bad_cases(motions_dir, holosoma, tmp_path)[case]
    with pytest.raises(MotionFormatError, match=pattern) as e:
        load_motion(path, g1=g1)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert e.value.__cause__ is None and (e.value.__suppress_context__ or e.value.__context__ is None)   # no chained traceback


def test_good_twin_of_the_bad_files_loads(motions_dir, holosoma, tmp_path, g1):
    # the broken files above differ from these in one thing each; these load
    cases = _bad_cases(motions_dir, holosoma, tmp_path)
    assert load_motion(cases["ok"][0], g1=g1).num_frames == 66              # 40 rows at 30 fps -> 66 at 50 Hz
    assert load_motion(tmp_path / "nofps.npz", fps=50, g1=g1).num_frames == 325    # missing fps supplied by the user
    with pytest.raises(MotionFormatError, match="stores fps=50 but fps=30 was given"):
        load_motion(motions_dir / HOLOSOMA, fps=30, g1=g1)
    with pytest.raises(MotionFormatError, match=r"frames 5:6 select 1 of its 40 frames"):
        load_motion(cases["ok"][0], frames="5:6", g1=g1)
    with pytest.raises(MotionFormatError, match="unknown extension '.txt'"):
        (tmp_path / "clip.txt").write_text("1"); load_motion(tmp_path / "clip.txt", g1=g1)


def test_canonical_file_for_another_model_is_refused(dance, tmp_path, g1):
    clip = Clip(**{**dance.__dict__, "body_names": ("base",) + dance.body_names[1:]})
    save_clip(clip, tmp_path / "other_model.npz")
    with pytest.raises(MotionFormatError, match=r"other_model\.npz: body_names .* differ from the model's"):
        load_motion(tmp_path / "other_model.npz", g1=g1)


# --- canonicalization: velocities -----------------------------------------------------------------

def test_velocities_are_so3_correct_and_consistent_with_fk(g1):
    # a root spinning at a constant world angular velocity about a tilted axis, joints swinging
    t = torch.arange(0, 3.0, 0.02, dtype=torch.float64)
    w = torch.tensor([0.3, -0.5, 1.5], dtype=torch.float64)
    q0 = torch.tensor([0.9, 0.1, 0.2, 0.3], dtype=torch.float64); q0 = q0 / q0.norm()
    quat = quat_mul(quat_from_rotvec(t[:, None] * w), q0.expand(len(t), 4))
    qpos = torch.tensor(np.tile(g1.default_qpos, (len(t), 1)))
    qpos[:, 0] = 0.5 * t; qpos[:, 3:7] = quat
    qpos[:, 7:] += 0.3 * torch.sin(2.0 * t)[:, None]
    clip = canonicalize(qpos.numpy(), 50.0, g1)
    inner = slice(1, -1)
    ang_local = torch.tensor(clip.qvel[:, 3:6])
    ang_world = quat_apply(torch.tensor(clip.qpos[:, 3:7]), ang_local)
    np.testing.assert_allclose(ang_world[inner].numpy(), np.broadcast_to(w.numpy(), ang_world[inner].shape), atol=1e-9)
    np.testing.assert_allclose(clip.qvel[inner, 0], 0.5, atol=1e-9)
    np.testing.assert_allclose(clip.joint_vel[inner], np.broadcast_to((0.6 * np.cos(2.0 * t.numpy()))[inner, None], (len(t) - 2, 29)), atol=5e-4)
    # the pelvis's world angular velocity is the root's; body velocities match differences of FK positions
    np.testing.assert_allclose(clip.body_ang_vel_w[inner, 0], ang_world[inner].numpy(), atol=1e-9)
    fd = (clip.body_pos_w[2:] - clip.body_pos_w[:-2]) / 0.04
    np.testing.assert_allclose(clip.body_lin_vel_w[inner], fd, atol=0.02)


# --- the motion library ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def library_clips(dance, g1):
    return [builtin_motion("squat", g1), dance, builtin_motion("stand", g1)]


def test_library_lookup_matches_the_clips(library_clips, g1):
    tracked = list(g1.cfg.tracked_bodies)
    lib = MotionLibrary(library_clips, bodies=tracked)
    assert lib.num_frames.tolist() == [c.num_frames for c in library_clips] and lib.fps == 50
    clip_ids = torch.tensor([0, 1, 1, 2, 0, 1])
    frames = torch.tensor([0, 5000, 10949, 100, 399, -3])
    offsets = (0, 1, 2, 4, 8)
    f = lib.get(clip_ids, frames, offsets)
    assert f.joint_pos.shape == (6, 5, 29) and f.body_pos_w.shape == (6, 5, 14, 3) and f.body_quat_w.shape == (6, 5, 14, 4)
    sel = [g1.body_names.index(b) for b in tracked]
    for n, (c, fr) in enumerate(zip(clip_ids.tolist(), frames.tolist())):
        clip = library_clips[c]
        for k, o in enumerate(offsets):
            i = min(max(fr + o, 0), clip.num_frames - 1)                 # clamped at the clip's ends
            np.testing.assert_allclose(f.joint_pos[n, k].numpy(), clip.joint_pos[i], atol=1e-5)
            np.testing.assert_allclose(f.joint_vel[n, k].numpy(), clip.joint_vel[i], atol=1e-4)
            np.testing.assert_allclose(f.root_pos[n, k].numpy(), clip.root_pos[i], atol=1e-5)
            np.testing.assert_allclose(f.root_quat[n, k].numpy(), clip.root_quat[i], atol=1e-6)
            np.testing.assert_allclose(f.root_lin_vel[n, k].numpy(), clip.qvel[i, :3], atol=1e-4)
            np.testing.assert_allclose(f.root_ang_vel[n, k].numpy(), clip.body_ang_vel_w[i, 0], atol=1e-4)
            for name in ("body_pos_w", "body_quat_w", "body_lin_vel_w", "body_ang_vel_w"):
                np.testing.assert_allclose(getattr(f, name)[n, k].numpy(), getattr(clip, name)[i][sel], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(lib.qpos(clip_ids, frames)[1].numpy(), library_clips[1].qpos[5000], atol=1e-5)
    np.testing.assert_allclose(lib.qvel(clip_ids, frames)[3].numpy(), library_clips[2].qvel[100], atol=1e-5)


def test_library_bins(library_clips):
    lib = MotionLibrary(library_clips)
    # squat 401 frames -> 8 bins, dance 10951 -> 219, stand 251 -> 5 (a remainder under half a bin joins the last)
    assert lib.num_bins == 8 + 219 + 5
    assert lib.bin_clip.tolist().count(1) == 219 and lib.bin_start[8].item() == 0 and lib.bin_start[9].item() == 50
    assert int(lib.bin_frames.sum()) == lib.total_frames
    ids = lib.bin_index(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 400, 49, 50, 250]))
    assert ids.tolist() == [0, 7, 8, 9, 8 + 219 + 4]
    assert (lib.bin_clip[ids] == torch.tensor([0, 0, 1, 1, 2])).all()


def test_library_refuses_mixed_or_unknown(library_clips):
    with pytest.raises(KeyError, match="unknown bodies"):
        MotionLibrary(library_clips, bodies=["pelvis", "head_link"])
    odd = Clip(**{**library_clips[2].__dict__, "fps": 30.0})
    with pytest.raises(ValueError, match="differs"):
        MotionLibrary([library_clips[0], odd])


# --- built-in motions ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stand", "squat", "arm_wave", "step_in_place"])
def test_builtin_motion_is_smooth_in_limits_and_on_the_floor(name, g1):
    clip = builtin_motion(name, g1)
    assert 5.0 <= clip.duration <= 10.0 and clip.fps == 50
    jp = clip.joint_pos
    assert (jp >= g1.joint_lower).all() and (jp <= g1.joint_upper).all()
    # starts and ends at rest in the default pose
    for i in (0, -1):
        np.testing.assert_allclose(jp[i], g1.default_joint_pos, atol=1e-9)
        assert np.abs(clip.qvel[i]).max() < 1e-6
    # smooth: bounded joint accelerations, no jumps
    acc = np.abs(np.diff(jp, 2, axis=0)).max() / 0.02 ** 2
    assert acc < 150, acc
    # the lower foot touches the floor on every frame, the other is never below it, the stance foot does not slide
    h = sole_heights(g1, clip.body_pos_w, clip.body_quat_w)
    np.testing.assert_allclose(h.min(1), 0.0, atol=1e-9)
    feet = g1.body_ids(g1.cfg.feet)
    stance = h.argmin(1)
    xy = clip.body_pos_w[np.arange(clip.num_frames), feet[stance], :2]
    assert np.abs(xy - clip.body_pos_w[0, feet[stance], :2]).max() < 1e-9
    if name == "step_in_place":
        assert h.max() > 0.05                                                 # the feet really lift
    if name != "stand":
        assert np.ptp(jp, axis=0).max() > 0.5                                 # and something really moves


def test_builtin_specs_and_load_motions(tmp_path, motions_dir, g1):
    assert set(builtin_names()) >= {"stand", "squat", "arm_wave", "step_in_place"}
    assert expand_specs(["builtin:*"]) == [f"builtin:{n}" for n in builtin_names()]
    clips = load_motions(["builtin:squat", str(motions_dir / "*.npz"), str(motions_dir)], g1=g1)
    assert [c.name for c in clips] == ["squat", "holosoma_g1_largebox", "holosoma_g1_largebox", "lafan1_g1_dance2_subject1"]
    with pytest.raises(MotionFormatError, match=r"builtin:moonwalk: is not a built-in motion"):
        load_motion("builtin:moonwalk", g1=g1)
    with pytest.raises(MotionFormatError, match="matches no files"):
        load_motions([str(tmp_path / "*.csv")], g1=g1)


# --- CLI -------------------------------------------------------------------------------------------

def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "g1track.motion", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_cli_inspect_convert_and_errors(motions_dir, tmp_path):
    r = _cli("inspect", motions_dir / CSV)
    assert r.returncode == 0, r.stderr
    assert "frames 10951 at 50 fps = 219.00 s" in r.stdout and "root path length" in r.stdout
    assert "lowest sole point" in r.stdout and "left_knee_joint" in r.stdout
    r = _cli("convert", motions_dir / CSV, tmp_path / "cut.npz", "--fps", "30", "--frames", "0:301")
    assert r.returncode == 0, r.stderr
    assert load_motion(tmp_path / "cut.npz").num_frames == 501
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5,6\n")
    r = _cli("convert", tmp_path / "bad.csv", tmp_path / "bad.npz")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"g1track-motion: error: {tmp_path / 'bad.csv'}: row 1 has 3 columns, expected 36 (root x y z, "
                                "root quaternion x y z w, 29 joint angles in Unitree order). Fix: export the clip for the "
                                "29-joint G1, one frame per row, no index column.")
    assert not (tmp_path / "bad.npz").exists()


def test_cli_render_and_inspect_in_process(tmp_path, capsys):
    assert main(["render", "builtin:squat", str(tmp_path / "squat.mp4"), "--stride", "20", "--width", "160", "--height", "120"]) == 0
    assert (tmp_path / "squat.mp4").stat().st_size > 1000
    assert main(["inspect", "builtin:step_in_place"]) == 0
    out = capsys.readouterr().out
    assert "frames 501 at 50 fps = 10.00 s" in out and "frames with a foot more than 1 cm below the floor: 0 (0.0%)" in out


def test_inspect_reports_penetration(g1):
    clip = builtin_motion("stand", g1)
    sunk = Clip(**{**clip.__dict__, "body_pos_w": clip.body_pos_w - np.array([0, 0, 0.03])})
    r = inspect_clip(sunk, g1)
    assert r["penetration_frames"] == clip.num_frames and r["lowest_sole"] == pytest.approx(-0.03)


# --- interoperability: the canonical npz is also an mjlab / BeyondMimic motion file --------------------

def test_converted_clip_loads_the_way_mjlab_and_beyondmimic_loaders_do(tmp_path, g1):
    "Their MotionLoader: np.load, float32 tensors of the seven keys, bodies picked by the robot's body indices, root first."
    assert main(["convert", "builtin:squat", str(tmp_path / "squat.npz")]) == 0
    clip = load_motion("builtin:squat", g1=g1)
    data = np.load(tmp_path / "squat.npz")
    fps = float(np.asarray(data["fps"]).reshape(-1)[0])
    t = {k: torch.tensor(data[k], dtype=torch.float32) for k in
         ("joint_pos", "joint_vel", "body_pos_w", "body_quat_w", "body_lin_vel_w", "body_ang_vel_w")}
    T, B = clip.num_frames, len(g1.body_names)
    assert fps == 50.0 and t["joint_pos"].shape == t["joint_vel"].shape == (T, 29)
    assert t["body_pos_w"].shape == t["body_lin_vel_w"].shape == t["body_ang_vel_w"].shape == (T, B, 3)
    assert t["body_quat_w"].shape == (T, B, 4)
    # joints in the model's (= mjlab's G1) order; the loaders' time_step k is frame k
    np.testing.assert_allclose(t["joint_pos"].numpy(), clip.qpos[:, 7:], atol=1e-6)
    np.testing.assert_allclose(t["joint_vel"].numpy(), clip.qvel[:, 6:], atol=1e-5)
    # body_indexes = robot.find_bodies(names): the model's body order without the world, root (pelvis) first
    names = ["pelvis", "torso_link", "left_ankle_roll_link", "right_wrist_yaw_link"]
    idx = torch.tensor([list(g1.body_names).index(n) for n in names])
    assert g1.body_names[0] == "pelvis"
    np.testing.assert_allclose(t["body_pos_w"][:, idx[0]].numpy(), clip.qpos[:, :3], atol=1e-5)
    np.testing.assert_allclose(t["body_quat_w"][:, idx[0]].numpy(), clip.qpos[:, 3:7], atol=1e-5)        # w x y z
    np.testing.assert_allclose(t["body_pos_w"][:, idx].numpy(), clip.body_pos_w[:, idx.numpy()], atol=1e-5)
    # velocities in the world frame: the root's world linear velocity is qvel[:3]; its angular velocity is qvel[3:6]
    # (pelvis frame) rotated into the world
    np.testing.assert_allclose(t["body_lin_vel_w"][:, 0].numpy(), clip.qvel[:, :3], atol=1e-4)
    w_world = quat_apply(torch.as_tensor(clip.qpos[:, 3:7]), torch.as_tensor(clip.qvel[:, 3:6])).numpy()
    np.testing.assert_allclose(t["body_ang_vel_w"][:, 0].numpy(), w_world, atol=1e-4)
    # and g1track still reads its own file as canonical (not as a BeyondMimic npz)
    back = load_motion(tmp_path / "squat.npz", g1=g1)
    assert np.array_equal(back.qpos, clip.qpos) and back.source == clip.source
