"""Writes src/onnx/check/schemas.json: each standard op's schema history from the onnx package
(input and output counts, attributes with their types and whether required), which semu checks
every node against at load, as the ONNX checker and onnxruntime do.

    .venv/bin/python tools/make_op_schemas.py
"""
import json
import os

import onnx
import onnx.defs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = {}
for s in onnx.defs.get_all_schemas_with_history():
    attrs = {name: [int(a.type), bool(a.required)] for name, a in sorted(s.attributes.items())}
    entry = [s.since_version, s.min_input, s.max_input, s.min_output, s.max_output, attrs]
    out.setdefault(f"{s.domain}|{s.name}", []).append(entry)
for v in out.values():
    v.sort(key=lambda e: e[0])
path = os.path.join(ROOT, "src/onnx/check/schemas.json")
with open(path, "w") as f:
    f.write(f'{{"onnx": "{onnx.__version__}", "ops": ')
    json.dump(dict(sorted(out.items())), f, separators=(",", ":"))
    f.write("}\n")
print(f"{path}: {len(out)} ops, {sum(len(v) for v in out.values())} versions (onnx {onnx.__version__})")
