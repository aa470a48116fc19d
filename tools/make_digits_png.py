"""Writes the digits fixture as an ImageFolder of PNG files, the layout most users bring:
fixtures/digits_png/{train,test}/<class>/<i>.png, 8×8 grayscale, pixel = round(v × 255) for the
x values v = k/16 of train.npz / test.npz. <i> is the sample's index in that .npz (zero-padded so
that file order is index order), so a test can compare each PNG with its array row.
Idempotent: skips what exists (FORCE=1 rewrites)."""
import os

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
SRC = os.path.join(ROOT, "digits")
OUT = os.path.join(ROOT, "digits_png")


def write(split):
    data = np.load(os.path.join(SRC, f"{split}.npz"))
    x, y = data["x"], data["y"]
    pixels = np.rint(x[:, 0] * 255.0).astype(np.uint8)
    for i, (img, label) in enumerate(zip(pixels, y)):
        folder = os.path.join(OUT, split, str(int(label)))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(img).save(os.path.join(folder, f"{i:04d}.png"), optimize=False)
    return len(y)


def main():
    done = os.path.join(OUT, ".complete")
    if os.path.exists(done) and os.environ.get("FORCE") != "1":
        print("fixtures/digits_png: present (FORCE=1 regenerates)")
        return
    counts = {split: write(split) for split in ("train", "test")}
    open(done, "w").close()
    print(f"fixtures/digits_png: {counts['train']} train and {counts['test']} test PNG files")


if __name__ == "__main__":
    main()
