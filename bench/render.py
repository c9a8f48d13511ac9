"""Rendering throughput of the G1 at 320x240 on this machine (CPU, offscreen).

Renders a moving trajectory (so nothing is cached) with g1track's defaults (no shadows, reflections
or multisampling) and, in the same run, with shadows and reflections on for reference.
Target: >= 20 frames/s with the defaults on a 2-core machine.

    python bench/render.py [--frames 100]
"""
import argparse, os, pathlib, sys, time
import numpy as np

shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if shared.is_dir(): os.environ.setdefault("MENAGERIE_ROOT", str(shared))

from g1track.robot import load_g1
from g1track import viz


def frames_per_second(model, qpos, **kw) -> float:
    with viz.Renderer(model, width=320, height=240, **kw) as r:
        r.render(qpos[0])                                   # warm-up: context and textures
        t0 = time.perf_counter()
        for q in qpos: r.render(q)
        return len(qpos) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    a = ap.parse_args()
    g1 = load_g1()
    t = np.linspace(0, 2 * np.pi, a.frames)
    qpos = np.tile(g1.default_qpos, (a.frames, 1))
    qpos[:, 0] = 0.3 * np.sin(t); qpos[:, 7:] += 0.3 * np.sin(t)[:, None]
    fancy = frames_per_second(g1.model, qpos, shadows=True, reflections=True)
    fast = frames_per_second(g1.model, qpos)
    print(f"gl_backend={viz.gl_backend()} cpus={os.cpu_count()} size=320x240 frames={a.frames}")
    print(f"shadows+reflections: {fancy:.1f} frames/s")
    print(f"render_fps={fast:.1f} target_fps=20 ratio_to_target={fast / 20:.2f} speedup_vs_shadows={fast / fancy:.2f}")
    return 0 if fast >= 20 else 1


if __name__ == "__main__":
    sys.exit(main())
