"""Trains the shipped default model: a small CNN on scikit-learn's digits (a real data set the
package ships), exports it to ONNX and writes the class-3 and 10%-random forget/retain splits.

Output (committed; regenerate with `make fixtures FORCE=1`):
  fixtures/digits/model.onnx          the "deployed" model, opset 17, dynamic batch
  fixtures/digits/train.npz, test.npz stratified 80/20 split, seed 0 (x: N×1×8×8 float32, y: int64)
  fixtures/digits/forget_class3.npz   training samples of class 3;  retain_class3.npz: the rest
  fixtures/digits/forget_random10.npz 10% of the training set (seed 0); retain_random10.npz: the rest
  fixtures/digits/retrain_class3.onnx the same architecture trained on retain_class3 only (gold standard)
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "digits")


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def train(x, y, seed=0, epochs=40):
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model, path):
    dummy = torch.zeros(1, 1, 8, 8)
    torch.onnx.export(model, dummy, path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)


def main():
    force = os.environ.get("FORCE") == "1"
    os.makedirs(OUT, exist_ok=True)
    if not force and os.path.exists(os.path.join(OUT, "retrain_class3.onnx")):
        print("fixtures/digits: present (FORCE=1 regenerates)")
        return
    torch.set_num_threads(2)
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, stratify=y, random_state=0)
    xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
    save = lambda name, xs, ys, **kw: np.savez(os.path.join(OUT, name), x=xs, y=ys, **kw)
    save("train.npz", xtr, ytr, index=tr)
    save("test.npz", xte, yte, index=te)
    f3 = ytr == 3
    save("forget_class3.npz", xtr[f3], ytr[f3], index=np.nonzero(f3)[0])
    save("retain_class3.npz", xtr[~f3], ytr[~f3], index=np.nonzero(~f3)[0])
    rng = np.random.default_rng(0)
    fr = np.zeros(len(ytr), bool)
    fr[rng.choice(len(ytr), size=len(ytr) // 10, replace=False)] = True
    save("forget_random10.npz", xtr[fr], ytr[fr], index=np.nonzero(fr)[0])
    save("retain_random10.npz", xtr[~fr], ytr[~fr], index=np.nonzero(~fr)[0])

    model = train(xtr, ytr)
    export(model, os.path.join(OUT, "model.onnx"))
    print(f"digits CNN: train acc {accuracy(model, xtr, ytr):.4f}, test acc {accuracy(model, xte, yte):.4f}, "
          f"params {sum(p.numel() for p in model.parameters())}")
    retrained = train(xtr[~f3], ytr[~f3])
    export(retrained, os.path.join(OUT, "retrain_class3.onnx"))
    print(f"retrained without class 3: test acc (others) {accuracy(retrained, xte[yte != 3], yte[yte != 3]):.4f}, "
          f"class 3 {accuracy(retrained, xte[yte == 3], yte[yte == 3]):.4f}")


if __name__ == "__main__":
    sys.exit(main())
