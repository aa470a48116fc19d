"""Checks `semu eval --task diffusion` against numpy/scipy/onnxruntime on the samples it wrote:
the judge (onnxruntime) relabels the samples of --report-dir, and the rates and FD-other are
recomputed with make_ddpm.frechet (scipy sqrtm, the ε·I offset when not finite).

  semu eval --model M --judge J --forget-class C --test T [--original O] [--retrained R] \
      --json out.json --report-dir DIR
  python tools/check_eval_diffusion.py out.json DIR
Exits 1 when a rate differs or an FD differs by more than 1e-3 (relative)."""
import json
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_ddpm import frechet  # noqa: E402


def main(out_json, report_dir):
    with open(out_json) as f:
        out = json.load(f)
    c = out["forget_class"]
    judge = ort.InferenceSession(out["judge"], providers=["CPUExecutionProvider"])
    name = judge.get_inputs()[0].name
    feat = [o.name for o in judge.get_outputs()].index(out["judge_features"])
    real = None
    if out.get("test"):
        t = np.load(out["test"])
        real = judge.run(None, {name: t["x"][t["y"] != c].astype(np.float32)})[feat]
    bad = 0
    for role in ("model", "original", "retrained"):
        if role not in out:
            continue
        r = out[role]
        s = np.load(os.path.join(report_dir, f"samples_{role}.npz"))
        x, y = s["x"], s["y"]
        outs = judge.run(None, {name: ((x + 1) / 2).astype(np.float32)})  # data range -1,1 → [0, 1]
        pred = outs[0].argmax(1)
        forget = float((pred[y == c] == c).mean())
        other = float((pred[y != c] == y[y != c]).mean())
        line = f"{role:10s} forget {forget:.4f} ({r['forget_rate']:.4f}) other {other:.4f} ({r['other_accuracy']:.4f})"
        bad += forget != r["forget_rate"] or abs(other - r["other_accuracy"]) > 1e-12
        if real is not None:
            fd = frechet(outs[feat][y != c], real)
            rel = abs(fd - r["fd_other"]) / fd
            line += f" FD-other scipy {fd:.6f} semu {r['fd_other']:.6f} (rel {rel:.1e})"
            bad += rel > 1e-3
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
