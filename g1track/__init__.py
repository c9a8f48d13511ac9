"""Notebook-first toolkit: train a Unitree G1 to track human motions in MuJoCo (teacher -> adaptation -> student) and export a deployable ONNX student.

Modules:

- `g1track.env`: The batched motion-tracking MDP that all three training stages run on: observations, rewards, terminations, reference-state starts, failure-weighted start sampling, domain randomization and left–right mirroring, TensorDict in and out, on either physics backend.
- `g1track.modules`: The five networks of the teacher → adaptation → student pipeline, the per-group observation normalizer and the Gaussian action head, gathered in one `TrackingPolicy`.
- `g1track.motion`: Motion files in, canonical clips out: every input is reduced to root pose + joint angles and every body is recomputed with our own forward kinematics at the 50 Hz control rate; a `MotionLibrary` serves batched current and future reference frames to thousands of environments.
- `g1track.ppo`: Rollout storage, generalized advantage estimation with correct truncation, clipped PPO over a chosen set of networks, the supervised update of `adapt_module`, optional mirror augmentation, and the distributed plumbing (gradient all-reduce, synchronized normalizers).
- `g1track.robot`: The Unitree G1 (29 joints) as every other module of g1track simulates it: the MuJoCo model with our actuators, sensors and scene, the joint and body tables, the default pose, the left–right mirror tables and a batched forward kinematics in torch.
- `g1track.sim`: One batched, torch-facing simulator of N G1 robots with two engines behind it: MuJoCo C stepping every env in C threads on the CPU, and MuJoCo Warp on a GPU (or, slowly, on the CPU)."""

__version__ = "0.1.0"
