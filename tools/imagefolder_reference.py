"""Reads an ImageFolder with torchvision, the reference for semu's loader (tests/data.rs):
writes x (N×C×H×W float32) and y (int64) in torchvision's order, one .npz per case (one
process, so torch is imported once).

usage: imagefolder_reference.py ROOT "OUT.npz [--size H,W] [--mean a,b,c] [--std a,b,c] [--grayscale]" …
"""
import argparse
import sys

import numpy as np
import torch
from torchvision import datasets, transforms


def floats(s):
    return [float(v) for v in s.split(",")]


def case(root, spec):
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size", type=lambda s: [int(v) for v in s.split(",")])
    ap.add_argument("--mean", type=floats)
    ap.add_argument("--std", type=floats)
    ap.add_argument("--grayscale", action="store_true")
    a = ap.parse_args(spec.split())
    steps = []
    if a.grayscale:
        steps.append(transforms.Grayscale(1))
    if a.size:
        steps.append(transforms.Resize(tuple(a.size), interpolation=transforms.InterpolationMode.BILINEAR,
                                       antialias=True))
    steps.append(transforms.ToTensor())
    if a.mean or a.std:
        channels = 1 if a.grayscale else 3
        steps.append(transforms.Normalize(a.mean or [0.0] * channels, a.std or [1.0] * channels))
    ds = datasets.ImageFolder(root, transform=transforms.Compose(steps))
    x = torch.stack([ds[i][0] for i in range(len(ds))]).numpy().astype(np.float32)
    y = np.array(ds.targets, dtype=np.int64)
    np.savez(a.out, x=x, y=y)


def main():
    root, *cases = sys.argv[1:]
    for spec in cases:
        case(root, spec)


if __name__ == "__main__":
    main()
