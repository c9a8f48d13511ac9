"""Bad input gets one sentence and changes nothing.

One row of `CASES` per case: the command (a module whose `main` takes the arguments), a fragment of the
sentence it must print, and how to make the bad input. One runner checks every row the same way: the exit
status is not 0, the fragment is in the output, there is no traceback, and nothing in the case's folder
was written, changed or removed. The next case is one more row.

Rows run `main(argv)` in this process (fast; an unexpected exception fails the test with its traceback
anyway); `subprocess=True` runs `python -m MODULE` instead, where the real command line is the point."""
import contextlib, errno, hashlib, importlib, io, os, pathlib, shlex, shutil, struct, subprocess, sys, zipfile
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

TINY = ("task.num_envs=8 algo.train_every=8 algo.num_minibatches=2 algo.ppo_epochs=2 task.motions=[builtin:squat] "
        "policy.actor=[64,64] policy.critic=[64,64] policy.adapt_module=[64] policy.encoder_priv=[64] "
        "wandb.mode=disabled progress=false")
FRAMES_PER_IT = 8 * 8
T = "{tmp}/runs/g1track/t"            # the finished run of rows with run=True: stage 1, 2 iterations, a checkpoint after each


@dataclass
class Case:
    "A bad input: `module`'s main with `args` ({tmp}: the case's folder; {tiny}: a tiny training config; {t}: run t's folder)."
    id: str
    module: str
    args: str
    expect: str                               # a fragment of the one sentence
    run: bool = False                         # start with {tmp}/runs holding a copy of a finished run g1track/t
    prepare: Callable | None = None           # prepare(tmp, monkeypatch): make the bad input
    subprocess: bool = False                  # `python -m module args` in a fresh process


# ---- ways to make bad input ----

def flip_a_weight(path) -> None:
    "Flip one bit inside the largest tensor of a torch file (a zip, stored uncompressed), as a bad disk or copy would."
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        pos = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(pos); byte = f.read(1)[0]
        f.seek(pos); f.write(bytes([byte ^ 0x10]))


def broken_robot_model(tmp, monkeypatch) -> None:
    "MENAGERIE_ROOT at a folder whose G1 file is not valid XML (no network involved): the robot model cannot be loaded."
    (tmp / "menagerie" / "unitree_g1").mkdir(parents=True)
    (tmp / "menagerie" / "unitree_g1" / "g1_mjlab.xml").write_text("<mujoco><worldbody><body name='x'>")
    monkeypatch.setenv("MENAGERIE_ROOT", str(tmp / "menagerie"))


def truncate(path, keep: int = 200) -> None:
    p = pathlib.Path(path); p.write_bytes(p.read_bytes()[:keep])


def read_only(tmp, monkeypatch) -> None:
    "{tmp}/ro, a folder nobody may write (root ignores permission bits, so os.access is told so too)."
    ro = tmp / "ro"; ro.mkdir(); ro.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if pathlib.Path(p) == ro else real(p, mode, *a, **k))


def damage_metrics_line(tmp, monkeypatch) -> None:
    f = tmp / "runs/g1track/t/metrics.jsonl"
    lines = f.read_text().splitlines(keepends=True)
    f.write_text('{"iteration": 1, "epis\n' + "".join(lines[1:]))


# ---- ways to make bad input for evaluation, export, sim2sim and g1track-motion ----

def a_csv(tmp, monkeypatch) -> None:
    "{tmp}/good.csv: the first two seconds of the LAFAN1 dance, a good Unitree CSV."
    src = pathlib.Path(__file__).resolve().parents[2] / "shared/motions/lafan1_g1_dance2_subject1.csv"     # as conftest's motions_dir
    if not src.is_file(): pytest.skip("../shared/motions (third-party test clips) is not beside this checkout")
    (tmp / "good.csv").write_text("".join(src.read_text().splitlines(keepends=True)[:60]))


def a_file_in_the_way(tmp, monkeypatch) -> None:
    (tmp / "a_file").write_text("a file where a folder is needed")


def read_only_run(tmp, monkeypatch) -> None:
    "The finished run's folder {tmp}/runs/g1track/t made read-only (as `read_only` does for {tmp}/ro)."
    run = tmp / "runs/g1track/t"; run.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if pathlib.Path(p) == run else real(p, mode, *a, **k))


def onnx_with_broken_metadata(tmp, monkeypatch) -> None:
    "{tmp}/policy.onnx: a g1track export whose 'observation' metadata was cut short (not JSON any more)."
    import onnx
    from onnx import helper, TensorProto
    graph = helper.make_graph([helper.make_node("Identity", ["policy_obs"], ["action"])], "g",
                              [helper.make_tensor_value_info("policy_obs", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (("format", '"g1track-onnx/1"'), ("observation", '{"input": "policy_obs", "terms": [{"name": "joint_')):
        p = model.metadata_props.add(); p.key, p.value = k, v
    onnx.save(model, str(tmp / "policy.onnx"))


EVAL = "--run_path g1track/t --run_dir {tmp}/runs"
S2S = "{tmp}/policy.onnx --motion builtin:squat"

TRAIN = "+exp=train run_dir={tmp}/runs {tiny}"

CASES = [
    # settings, checked once where the config is read
    Case("total_frames=0", "g1track.train", TRAIN + " total_frames=0", "total_frames=0 is not allowed: pass an integer >= 1"),
    Case("total_frames<0", "g1track.train", TRAIN + " total_frames=-5", "total_frames=-5 is not allowed"),
    Case("num_minibatches=0", "g1track.train", TRAIN + " algo.num_minibatches=0", "algo.num_minibatches=0 is not allowed"),
    Case("train_every=0", "g1track.train", TRAIN + " algo.train_every=0", "algo.train_every=0 is not allowed"),
    Case("termination limit<0", "g1track.train", TRAIN + " task.terminations.anchor_height.limit=-1",
         "needs a limit > 0, e.g. terminations.anchor_height.limit=0.25"),
    Case("termination parameter misspelt", "g1track.train", TRAIN + " +task.terminations.ee_height.bodys=[pelvis]",
         "did you mean task.terminations.ee_height.bodies?"),
    Case("robot model unreadable", "g1track.train", TRAIN, "Could not load MuJoCo Menagerie model 'unitree_g1'",
         prepare=broken_robot_model, subprocess=True),
    Case("+typo", "g1track.train", TRAIN + " +algo.lrr=1e-3", "algo.lrr is not a setting in g1track/cfg"),
    Case("+typo, from a shell", "g1track.train", TRAIN + " +algo.lrr=1e-3", "did you mean algo.lr?", subprocess=True),
    Case("an older noise key", "g1track.train", TRAIN + " +task.observations.noise.joint_vel=0.3", "observation noise is set on a group's entry now"),
    # runs and checkpoints: never mix two runs
    Case("same id, from scratch", "g1track.train", TRAIN + " wandb.id=t total_frames=128", "to continue it pass "
         "checkpoint_path=run:g1track/t, to start a new run pass a fresh wandb.id", run=True),
    Case("next stage under an existing id", "g1track.train", "+exp=adapt run_dir={tmp}/runs {tiny} wandb.id=t "
         "checkpoint_path=run:g1track/t total_frames=64", "run g1track/t already exists", run=True),
    Case("resume an older checkpoint in place", "g1track.train", TRAIN + " wandb.id=t total_frames=256 "
         "checkpoint_path=" + T + "/checkpoints/ckpt_000001.pt", "would mix two histories", run=True),
    Case("resume with total_frames below the checkpoint", "g1track.train", TRAIN + " wandb.id=t total_frames=64 "
         "checkpoint_path=run:g1track/t", "has already trained 128 frames (iteration 2), and total_frames=64 leaves "
         "nothing to train", run=True),
    Case("checkpoint file missing", "g1track.train", TRAIN + " checkpoint_path=" + T + "/checkpoints/ckpt_000009.pt",
         "ckpt_000009.pt does not exist (its folder holds ckpt_000001.pt, ckpt_000002.pt)", run=True),
    Case("relative checkpoint file missing", "g1track.train", TRAIN + " checkpoint_path=old/ckpt_000003.pt",
         "checkpoint old/ckpt_000003.pt does not exist"),
    Case("checkpoint with a flipped bit", "g1track.train", TRAIN + " wandb.id=t total_frames=256 checkpoint_path=run:g1track/t",
         "do not match the checksum written with them", run=True,
         prepare=lambda tmp, mp: flip_a_weight(tmp / "runs/g1track/t/checkpoints/latest.pt")),
    Case("environment state cut short", "g1track.train", TRAIN + " wandb.id=t total_frames=256 checkpoint_path=run:g1track/t",
         "environment state", run=True,
         prepare=lambda tmp, mp: truncate(tmp / "runs/g1track/t/checkpoints/ckpt_000002.env0.pt")),
    Case("run_dir under a file", "g1track.train", "+exp=train run_dir={tmp}/a_file/runs {tiny}", "a_file is a file, not a folder",
         prepare=lambda tmp, mp: (tmp / "a_file").write_text("")),
    Case("run_dir read-only", "g1track.train", "+exp=train run_dir={tmp}/ro {tiny}", "ro is read-only; pass run_dir=",
         prepare=read_only),
    # reading a run's log
    Case("damaged metrics line", "g1track.viz", "g1track/t --run_dir {tmp}/runs --out {tmp}/curves.png",
         "metrics.jsonl line 1 is not JSON", run=True, prepare=damage_metrics_line),
    # evaluation and export (g1track.eval): settings checked once, before a checkpoint is opened; folders before any work
    Case("eval max_episode_s<0", "g1track.eval.cli", EVAL + " max_episode_s=-1",
         "max_episode_s=-1 would end every episode before it starts: give a number > 0, or max_episode_s=null", run=True),
    Case("eval max_episode_s<0, from a shell", "g1track.eval", EVAL + " max_episode_s=-1", "max_episode_s=-1 would end every episode",
         run=True, subprocess=True),
    Case("eval episodes_per_clip=0", "g1track.eval.cli", EVAL + " episodes_per_clip=0",
         "episodes_per_clip=0 evaluates nothing: give a whole number >= 1", run=True),
    Case("eval --out under a file", "g1track.eval.cli", EVAL + " --out {tmp}/a_file/eval", "a_file is a file, not a folder",
         run=True, prepare=a_file_in_the_way),
    Case("eval run folder read-only", "g1track.eval.cli", EVAL, "t is read-only; make it writable or choose another folder",
         run=True, prepare=read_only_run),
    Case("export of a stage-1 run", "g1track.eval.cli", EVAL + " --export --no-eval", "never been trained", run=True),
    Case("eval, robot model unreadable", "g1track.eval", EVAL, "Fix: set MENAGERIE_ROOT to a directory that contains",
         run=True, prepare=broken_robot_model, subprocess=True),
    # sim2sim: every condition checked when it is read, before the file is opened
    Case("sim2sim latency<0", "g1track.eval.sim2sim_cli", S2S + " --latency-ms -5", "--latency-ms -5 is not a latency"),
    Case("sim2sim latency<0, from a shell", "g1track.eval.sim2sim", S2S + " --latency-ms -5", "--latency-ms -5 is not a latency",
         subprocess=True),
    Case("sim2sim nan", "g1track.eval.sim2sim_cli", S2S + " --yaw nan", "--yaw nan is not an angle"),
    Case("sim2sim obs-noise<0", "g1track.eval.sim2sim_cli", S2S + " --obs-noise -1", "--obs-noise -1 is not a noise scale"),
    Case("sim2sim friction<0", "g1track.eval.sim2sim_cli", S2S + " --friction -1", "--friction -1 is not a friction coefficient"),
    Case("sim2sim max-seconds=0", "g1track.eval.sim2sim_cli", S2S + " --max-seconds 0", "--max-seconds 0 leaves nothing to track"),
    Case("sim2sim --json under a file", "g1track.eval.sim2sim_cli", S2S + " --json {tmp}/a_file/m.json",
         "cannot write the --json file into {tmp}/a_file: {tmp}/a_file is a file, not a folder", prepare=a_file_in_the_way),
    Case("sim2sim --video read-only", "g1track.eval.sim2sim_cli", S2S + " --video {tmp}/ro/v.mp4", "ro is read-only",
         prepare=read_only),
    Case("sim2sim broken metadata JSON", "g1track.eval.sim2sim_cli", S2S, "metadata entry 'observation' is not valid JSON",
         prepare=onnx_with_broken_metadata),
    # g1track-motion convert: never over its input, never npz bytes under another name, never a 23 TB resample
    Case("convert onto its input", "g1track.motion.cli", "convert {tmp}/good.csv {tmp}/good.csv",
         "{tmp}/good.csv is the input: writing the canonical npz there would destroy it", prepare=a_csv),
    Case("convert to a .csv name", "g1track.motion.cli", "convert {tmp}/good.csv {tmp}/out.csv",
         "nothing loads under a '.csv' extension; name the output {tmp}/out.npz", prepare=a_csv),
    Case("convert under a file", "g1track.motion.cli", "convert builtin:squat {tmp}/a_file/squat.npz", "a_file is a file, not a folder",
         prepare=a_file_in_the_way),
    Case("convert into a read-only folder", "g1track.motion.cli", "convert builtin:squat {tmp}/ro/squat.npz", "ro is read-only",
         prepare=read_only),
    Case("convert --fps 1e-9", "g1track.motion.cli", "convert {tmp}/good.csv {tmp}/good.npz --fps 1e-9",
         "--fps 1e-09 is not the frame rate of a motion recording", prepare=a_csv),
]


# ---- the runner ----

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    "run_dir with g1track/t: stage 1, 2 iterations, a checkpoint (and environment state) after each, all kept."
    from g1track.config import compose
    from g1track.train import train
    runs = tmp_path_factory.mktemp("base") / "runs"
    train(compose(["+exp=train", f"run_dir={runs}", "wandb.id=t", f"total_frames={2 * FRAMES_PER_IT}", "save_every=1",
                   "keep_checkpoints=0", *TINY.split()]))
    return runs


def snapshot(folder) -> dict:
    "{relative path: sha1 of the bytes, or 'dir'} of everything below `folder`."
    folder = pathlib.Path(folder)
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def invoke(case: Case, tmp: pathlib.Path) -> tuple:
    "(exit status, stdout and stderr together) of the case's command."
    argv = shlex.split(case.args.format(tmp=tmp, tiny=TINY))
    if case.subprocess:
        r = subprocess.run([sys.executable, "-m", case.module, *argv], capture_output=True, text=True, timeout=300)
        return r.returncode, r.stdout + r.stderr
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try: rc = importlib.import_module(case.module).main(argv)
        except SystemExit as e: rc = e.code
    return rc, out.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_sentence_and_changes_nothing(case, tmp_path, request, monkeypatch):
    if case.run: shutil.copytree(request.getfixturevalue("finished_run"), tmp_path / "runs")
    if case.prepare: case.prepare(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    rc, out = invoke(case, tmp_path)
    assert rc not in (0, None), out
    assert case.expect.format(tmp=tmp_path) in out, out
    assert "Traceback" not in out, out
    assert snapshot(tmp_path) == before, "the folder changed"


# ---- failures in the middle of a run: nothing half-written, and the resume reads as one run ----

def iterations_logged(folder) -> list:
    import json
    return [json.loads(l)["iteration"] for l in (folder / "metrics.jsonl").read_text().splitlines() if l.strip()]


def train_main(argv: str, tmp) -> tuple:
    return invoke(Case("", "g1track.train", argv, ""), tmp)


def test_a_full_disk_during_a_checkpoint_stops_in_one_sentence_and_the_resume_reads_as_one_run(tmp_path, monkeypatch):
    real_save = torch.save
    def full_disk(obj, f, *a, **k):
        if ".ckpt_000002.pt.tmp" in str(f):                   # the second checkpoint: half of it, then no space
            pathlib.Path(f).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "runs/g1track/d"
    rc, out = train_main(TRAIN + f" wandb.id=d total_frames={3 * FRAMES_PER_IT} save_every=1", tmp_path)
    err = [l for l in out.splitlines() if l.startswith("error:")]
    assert rc == 2 and len(err) == 1 and "Traceback" not in out, out
    assert "No space left on device" in err[0] and "ckpt_000001.pt" in err[0] and "checkpoint_path=run:g1track/d" in err[0]
    from g1track.runs import load_checkpoint
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["ckpt_000001.env0.pt", "ckpt_000001.pt", "latest.pt"]   # no debris
    assert load_checkpoint(ckpts / "latest.pt")["iteration"] == 1
    assert iterations_logged(run) == [1, 2]
    monkeypatch.setattr(torch, "save", real_save)              # space again: resume as the sentence says
    rc, out = train_main(TRAIN + f" wandb.id=d total_frames={3 * FRAMES_PER_IT} save_every=1 checkpoint_path=run:g1track/d",
                         tmp_path)
    assert rc in (0, None), out
    assert iterations_logged(run) == [1, 2, 3]                 # iteration 2 of the lost attempt is gone
    assert load_checkpoint(ckpts / "latest.pt")["iteration"] == 3


def test_killed_writes_leave_nothing_once_the_run_resumes(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "runs")
    run = tmp_path / "runs/g1track/t"
    dead = subprocess.Popen(["true"]); dead.wait()             # a writer killed before its rename
    debris = [run / f"checkpoints/.ckpt_000005.pt.tmp{dead.pid}", run / f"checkpoints/.latest.pt.tmp{dead.pid}",
              run / "checkpoints/ckpt_000005.env0.pt", run / f".metrics.jsonl.tmp{dead.pid}"]     # (an env state, no checkpoint)
    for f in debris: f.write_bytes(b"partial")
    with open(run / "metrics.jsonl", "a") as f: f.write('{"iteration": 3, "frames": 192}\n{"iteration": 4, "fra')   # killed mid-line
    rc, out = train_main(TRAIN + f" wandb.id=t total_frames={3 * FRAMES_PER_IT} checkpoint_path=run:g1track/t", tmp_path)
    assert rc in (0, None), out
    assert not any(f.exists() for f in debris)
    assert iterations_logged(run) == [1, 2, 3]
    from g1track.viz import read_metrics
    assert [r["iteration"] for r in read_metrics(run)] == [1, 2, 3]


def test_a_resume_without_its_environment_state_says_it_is_not_exact(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "runs")
    (tmp_path / "runs/g1track/t/checkpoints/ckpt_000002.env0.pt").unlink()
    rc, out = train_main(TRAIN + f" wandb.id=t total_frames={3 * FRAMES_PER_IT} checkpoint_path=run:g1track/t", tmp_path)
    warnings = [l for l in out.splitlines() if "warning" in l]
    assert rc in (0, None) and len(warnings) == 1, out
    assert "ckpt_000002.env0.pt is missing, so this resume is not exact" in warnings[0]


def test_plus_still_selects_config_groups():
    from g1track.config import check_added_keys, compose
    cfg = compose(["+exp=train", "+preset=cpu_demo"])
    check_added_keys(["+exp=train", "+preset=cpu_demo", "task=G1/G1_tracking", "algo.lr=1e-3", "++algo.lr=2e-3"], cfg)
