"""The ONNX model test suites `pytorch-converted`, `pytorch-operator` and `simple` (real
architectures and operators with reference outputs) are no longer in the onnx 1.22 wheel; the
onnx 1.16.2 wheel on PyPI still ships them. Extracts just those folders into
.venv/onnx-suites/<suite>/<case>/ (idempotent)."""
import glob
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(ROOT, ".venv", "onnx-suites")
SUITES = ("pytorch-converted", "pytorch-operator", "simple")


def main():
    stamp = os.path.join(DEST, ".complete")
    if os.path.exists(stamp):
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                        "onnx==1.16.2", "-d", tmp], check=True)
        wheel = glob.glob(os.path.join(tmp, "onnx-1.16.2-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                parts = name.split("/")
                # onnx/backend/test/data/<suite>/<case>/...
                if len(parts) > 5 and parts[:4] == ["onnx", "backend", "test", "data"] and parts[4] in SUITES:
                    target = os.path.join(DEST, *parts[4:])
                    if name.endswith("/"):
                        continue
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with z.open(name) as src, open(target, "wb") as dst:
                        dst.write(src.read())
    open(stamp, "w").close()
    counts = {s: len(os.listdir(os.path.join(DEST, s))) for s in SUITES}
    print(f"onnx model suites extracted to {DEST}: {counts}")


if __name__ == "__main__":
    main()
