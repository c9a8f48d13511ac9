"""Notebook-first toolkit: train a Unitree G1 to track human motions in MuJoCo (teacher -> adaptation -> student) and export a deployable ONNX student.

Modules:

- `g1track.env`: The batched motion-tracking MDP that all three training stages run on: observations, rewards, terminations, reference-state starts, failure-weighted start sampling, domain randomization and left–right mirroring, TensorDict in and out, on either physics backend.
- `g1track.eval.beyondmimic`: `python -m g1track.eval --run_path PROJECT/RUN --export --format beyondmimic` — the deployable student and each training clip in one ONNX graph with BeyondMimic's inputs, outputs and comma-separated metadata.
- `g1track.eval.core`: `python -m g1track.eval --run_path PROJECT/RUN [-p] [--export] [protocol=robust]` — the pipeline quick reference's "Evaluate Policy" commands: a fixed, seeded evaluation of a checkpoint's teacher and student under a named protocol, a video of the policy, and the deployable student as ONNX with everything deployment needs in its metadata.
- `g1track.eval.metrics`: The numbers a motion tracker is judged by — success rate, MPKPE and root-relative MPKPE, joint, hand and foot errors, episode return — as plain numpy functions of recorded arrays, so the training environment and a bare MuJoCo loop score a policy with the same code.
- `g1track.eval.sim2sim`: `python -m g1track.eval.sim2sim MODEL.onnx --motion FILE` — a 50 Hz MuJoCo C loop that reads only the ONNX file and its metadata, computes every policy observation from `MjData` in numpy, runs the network with onnxruntime and tracks the clip: proof that the export carries everything deployment needs.
- `g1track.modules`: The five networks of the teacher → adaptation → student pipeline, the per-group observation normalizer and the Gaussian action head, gathered in one `TrackingPolicy`.
- `g1track.motion`: Motion files in, canonical clips out: every input is reduced to root pose + joint angles and every body is recomputed with our own forward kinematics at the 50 Hz control rate; a `MotionLibrary` serves batched current and future reference frames to thousands of environments.
- `g1track.ppo`: Rollout storage, generalized advantage estimation with correct truncation, clipped PPO over a chosen set of networks, the supervised update of `adapt_module`, optional mirror augmentation, and the distributed plumbing (gradient all-reduce, synchronized normalizers).
- `g1track.robot`: The Unitree G1 (29 joints) as every other module of g1track simulates it: the MuJoCo model with our actuators, sensors and scene, the joint and body tables, the default pose, the left–right mirror tables and a batched forward kinematics in torch.
- `g1track.sim`: One batched, torch-facing simulator of N G1 robots with two engines behind it: MuJoCo C stepping every env in C threads on the CPU, and MuJoCo Warp on a GPU (or, slowly, on the CPU).
- `g1track.stages`: What each stage of the teacher → adaptation → student pipeline runs, trains, freezes and logs — exactly the pipeline quick reference's table — and the loop that runs one iteration of a stage.
- `g1track.train`: `torchrun --nproc_per_node=N -m g1track.train task=G1/G1_tracking +exp=train wandb.id=...` — the pipeline quick reference's commands: Hydra config, distributed ranks, W&B (offline unless you logged in), a progress bar, atomic checkpoints that any stage resumes from, and clear errors for the wrong one."""

__version__ = "0.1.0"
