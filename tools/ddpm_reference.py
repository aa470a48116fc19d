"""Reference DDIM samples for `semu sample --noise` (tests/sample.rs): the sampler of
tools/make_ddpm.py (η = 0, steps over range(0, T, T//S), ε̂ = (1+w)ε_c − wε_∅, final image
clamped), run through onnxruntime from a fixed starting noise instead of a seed. No training.

Output (committed; `python tools/ddpm_reference.py` rewrites it):
  fixtures/ddpm/ref/ddim_noise.npy  x_T, f32[6,1,8,8], N(0, I) drawn with numpy seed 7
  fixtures/ddpm/ref/ddim_y.npy      the classes, i64[6]
  fixtures/ddpm/ref/ddim_x0.npy     the final samples, f32[6,1,8,8] in [-1, 1]
  fixtures/ddpm/ref/ddim_traj.npy   x after each of the 25 steps, f32[25,6,1,8,8]
"""
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_ddpm import DDIM_STEPS, GUIDANCE, OUT, ddim_from  # noqa: E402


def main():
    sess = ort.InferenceSession(os.path.join(OUT, "model.onnx"), providers=["CPUExecutionProvider"])
    y = np.array([0, 3, 7, 1, 5, 9], np.int64)
    noise = np.random.default_rng(7).standard_normal((len(y), 1, 8, 8)).astype(np.float32)
    x0, traj = ddim_from(sess, noise, y)
    ref = os.path.join(OUT, "ref")
    for name, a in [("ddim_noise", noise), ("ddim_y", y), ("ddim_x0", x0), ("ddim_traj", traj)]:
        tmp = os.path.join(ref, name + ".tmp.npy")
        np.save(tmp, a)
        os.replace(tmp, os.path.join(ref, name + ".npy"))
    print(f"wrote {ref}/ddim_*.npy: {len(y)} rows, {DDIM_STEPS} steps, w {GUIDANCE}")


if __name__ == "__main__":
    main()
