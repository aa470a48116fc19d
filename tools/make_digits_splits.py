"""Digits forgetting cases beyond the shipped fixture, for `make quality` (issue 13's bar):
for each split seed, the deployed CNN trained on that split, and for each case (a forgotten class,
or 10% random samples) the forget / retain sets and the gold standard retrained on the retain set
alone. The architecture and training are those of make_digits.py (seed 0 gives the fixture's
model). Not committed: written under target/quality (argument 1), skipped when present.

  target/quality/s{S}/{model.onnx,train.npz,test.npz}
  target/quality/s{S}/{case}/{forget.npz,retain.npz,retrain.onnx}   case = class{C} | random10
"""
import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.dirname(__file__))
from make_digits import accuracy, export, train  # noqa: E402

SEEDS = [0, 1]
CLASSES = [3, 5, 8]


def case_sets(ytr, case, seed):
    if case == "random10":
        rng = np.random.default_rng(seed)
        f = np.zeros(len(ytr), bool)
        f[rng.choice(len(ytr), size=len(ytr) // 10, replace=False)] = True
        return f
    return ytr == int(case.removeprefix("class"))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "target", "quality")
    torch.set_num_threads(2)
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    for seed in SEEDS:
        out = os.path.join(root, f"s{seed}")
        os.makedirs(out, exist_ok=True)
        tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
        np.savez(os.path.join(out, "train.npz"), x=xtr, y=ytr)
        np.savez(os.path.join(out, "test.npz"), x=xte, y=yte)
        if not os.path.exists(os.path.join(out, "model.onnx")):
            m = train(xtr, ytr, seed=seed)
            export(m, os.path.join(out, "model.onnx"))
            print(f"s{seed}: model test acc {accuracy(m, xte, yte):.4f}", flush=True)
        for case in [f"class{c}" for c in CLASSES] + ["random10"]:
            cdir = os.path.join(out, case)
            os.makedirs(cdir, exist_ok=True)
            f = case_sets(ytr, case, seed)
            np.savez(os.path.join(cdir, "forget.npz"), x=xtr[f], y=ytr[f])
            np.savez(os.path.join(cdir, "retain.npz"), x=xtr[~f], y=ytr[~f])
            if not os.path.exists(os.path.join(cdir, "retrain.onnx")):
                m = train(xtr[~f], ytr[~f], seed=seed)
                export(m, os.path.join(cdir, "retrain.onnx"))
                print(f"s{seed}/{case}: retrained, forget acc {accuracy(m, xtr[f], ytr[f]):.4f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
