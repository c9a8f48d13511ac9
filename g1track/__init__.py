"""Notebook-first toolkit: train a Unitree G1 to track human motions in MuJoCo (teacher -> adaptation -> student) and export a deployable ONNX student.

Modules:

- `g1track.robot`: The Unitree G1 (29 joints) as every other module of g1track simulates it: the MuJoCo model with our actuators, sensors and scene, the joint and body tables, the default pose, the left–right mirror tables and a batched forward kinematics in torch."""

__version__ = "0.1.0"
