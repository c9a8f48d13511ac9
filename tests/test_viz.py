"""Visualization: labels, reference-beside-robot videos and the rollout player (its widgets driven from Python)."""
import io
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def squat(g1):
    "Ten frames of the built-in squat (as reference) and the same frames lifted 20 cm (as a 'robot')."
    from g1track.motion import builtin_motion
    ref = builtin_motion("squat").qpos[::40][:10]
    robot = ref.copy(); robot[:, 2] += 0.2
    return robot, ref


def test_label_is_drawn(g1):
    from g1track import viz
    with viz.Renderer(g1.model, width=160, height=120) as r:
        plain, labelled = r.render(g1.default_qpos), r.render(g1.default_qpos, label="robot")
    diff = np.abs(plain.astype(int) - labelled.astype(int)).sum(-1) > 30   # (two renders may differ by a rounding step)
    assert diff.sum() > 50 and diff[:30, :80].sum() == diff.sum()        # text, only in the top-left corner


def test_reference_vs_robot_puts_the_reference_alone_on_the_left(g1, squat):
    from g1track import viz
    robot, ref = squat
    video = viz.reference_vs_robot(g1.model, robot, ref, width=160, height=120)
    assert video.shape == (10, 120, 320, 3)
    left = viz.render_trajectory(g1.model, ref, label="reference", width=160, height=120)
    right = viz.render_trajectory(g1.model, robot, ghost=ref, label="robot", width=160, height=120)
    close = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean() < 0.5
    assert close(video[:, :, :160], left) and close(video[:, :, 160:], right)
    assert not close(left, right)


def _decode(b: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


def test_player_slider_shows_the_frame_and_moves_the_cursor(g1, squat):
    from g1track import viz
    robot, ref = squat
    rewards = {"body_pos": np.linspace(0, 0.02, 10), "action_rate": -np.linspace(0, 0.01, 10)}
    p = viz.Player((g1.model, robot), ref, rewards, fps=50, width=160, height=120, prerender=False)
    try:
        assert p.widget.children[0].children == (p.play, p.slider) and p.slider.max == 9
        first_image, first_plot = p.image.value, p.plot_image.value
        p.slider.value = 7                                             # what dragging the slider (or play) does
        assert p.image.value != first_image and p.plot_image.value != first_plot
        shown = _decode(p.image.value).astype(int)
        expected = viz.render_trajectory(g1.model, robot[7:8], ghost=ref[7:8], width=160, height=120)[0].astype(int)
        assert np.abs(shown - expected).mean() < 3                     # JPEG: the same picture up to compression
        assert "step 7/9" in p.info.value and "body_pos +0.0156" in p.info.value
        cols = p.plot.columns
        assert np.all(np.diff(cols) > 0)                               # the cursor moves right with time
        red = lambda img: np.flatnonzero(((img == (220, 30, 30)).all(-1)).any(0))
        assert cols[7] in red(p.plot.at(7)) and cols[7] not in red(p.plot.at(2))
        assert set(p._cache) == {0, 7}                                 # rendered on demand, once
    finally:
        p.close()


def test_player_of_frames_and_of_an_episode(g1, squat):
    from g1track import viz
    from g1track.eval.metrics import Episode
    robot, ref = squat
    frames = viz.render_trajectory(g1.model, robot, width=160, height=120)
    p = viz.Player(frames)
    p.show(100)                                                         # clamped to the last frame
    assert p.slider.value == 9 and p.plot is None
    ep = Episode("squat", ("pelvis",), robot[:, None, :3], ref[:, None, :3], robot[:, 7:], ref[:, 7:], False,
                 extras=dict(qpos=robot, ref_qpos=ref, reward_terms={"anchor_pos": np.ones(10)}))
    p = viz.Player.from_episode(ep, g1.model, width=160, height=120)
    assert p.frames.shape == (10, 120, 160, 3) and p.fps == 50 and "anchor_pos" in p.info.value
    with pytest.raises(ValueError, match="ref_qpos has 3 frames"):
        viz.Player((g1.model, robot), ref[:3])


def test_plot_run_draws_every_stage_of_the_lineage_from_local_files(tmp_path, capsys):
    import json, torch
    from g1track import viz
    from g1track.config import compose
    from g1track.train import train
    common = ["task.num_envs=8", "algo.train_every=16", f"run_dir={tmp_path}", "task.motions=[builtin:squat]", "progress=false",
              "wandb.mode=disabled"]
    torch.set_num_threads(1)
    train(compose(["+exp=train", "total_frames=512", "wandb.id=pr_train", *common]))
    train(compose(["+exp=adapt", "total_frames=256", "wandb.id=pr_adapt", "checkpoint_path=run:g1track/pr_train", *common]))
    stages = viz.run_lineage("g1track/pr_adapt", tmp_path)
    assert [s for s, _ in stages] == ["train", "adapt"] and stages[0][1] == tmp_path / "g1track" / "pr_train"
    rows = viz.read_metrics(stages[0][1])
    assert len(rows) == 4 and all("frames" in r for r in rows)                     # 512 frames / (8 envs x 16 steps)
    fig = viz.plot_run("g1track/pr_adapt", tmp_path)
    axes = fig.get_axes()
    assert len(axes) == 2 * len(viz.CURVES)                                          # one column per stage
    assert axes[0].get_title().startswith("train") and axes[1].get_title().startswith("adapt")
    est = [ax for ax in axes if ax.lines and ax.get_ylabel() == "estimator loss"]
    assert est and len(est[0].lines[0].get_xdata()) == len(rows)                    # the logged points, all of them
    assert viz.main(["g1track/pr_adapt", "--run_dir", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 5000 and "train pr_train, adapt pr_adapt" in capsys.readouterr().out
    assert viz.main(["g1track/nope", "--run_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_viz_reads_a_log_cut_short_by_a_kill_as_one_run(tmp_path, capsys):
    "A killed run leaves a partial last line; an older resume logged iterations twice: both read as one run."
    import json
    from g1track import viz
    from g1track.runs import CHECKPOINT_FORMAT, atomic_save
    run = tmp_path / "g1track" / "k"
    atomic_save({"format": CHECKPOINT_FORMAT, "stage": "train", "lineage": [{"stage": "train", "run_id": "k", "project": "g1track"}]},
                run / "checkpoints" / "latest.pt")
    rows = [{"iteration": i, "frames": 64 * i, "episode/return": 0.1 * i} for i in (1, 2, 3, 2, 3, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 5, "fra')
    assert [r["iteration"] for r in viz.read_metrics(run)] == [1, 2, 3, 4]
    assert viz.main(["g1track/k", "--run_dir", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 5000 and "train k" in capsys.readouterr().out
