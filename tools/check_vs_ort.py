"""Differential check of semu's load-time model validation (src/onnx/check) against onnxruntime.

Mutates the digits fixture at random (1-3 edits each: rewired or renamed values, reordered,
duplicated or deleted nodes, element types, value_info, attributes, opset and IR versions,
domains, graph inputs and outputs, node names), asks onnxruntime to load each mutant and
`semu inspect` to read it, and counts where they agree. A model semu refuses that onnxruntime
loads is a bug (printed, kept in the work folder); the reverse lists what semu does not check
(mostly shape inference and op schemas).

    .venv/bin/python tools/check_vs_ort.py [N=400] [SEED=1]
"""
import copy
import os
import random
import subprocess
import sys
import tempfile

import onnx
import onnxruntime as ort
from onnx import helper as h

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ort.set_default_logger_severity(4)
base = onnx.load(os.path.join(ROOT, "fixtures/digits/model.onnx"))
SEMU = os.path.join(ROOT, "target/release/semu")
WORK = tempfile.mkdtemp(prefix="semu-check-vs-ort-")
def names(m):
    g = m.graph
    s = [i.name for i in g.input] + [t.name for t in g.initializer]
    for n in g.node: s += list(n.output)
    return s
def mutate(m, r):
    g = m.graph
    k = r.randrange(16)
    ns = names(m)
    if k == 0 and g.node:
        n = r.choice(g.node); 
        if n.input: n.input[r.randrange(len(n.input))] = r.choice(ns + ["ghost"])
    elif k == 1 and g.node:
        n = r.choice(g.node); n.output[0] = r.choice(ns)
    elif k == 2 and len(g.node) > 1:
        i, j = r.randrange(len(g.node)), r.randrange(len(g.node))
        a, b = copy.deepcopy(g.node[i]), copy.deepcopy(g.node[j]); g.node[i].CopyFrom(b); g.node[j].CopyFrom(a)
    elif k == 3 and g.node:
        g.node.append(copy.deepcopy(r.choice(g.node)))
    elif k == 4 and g.node:
        del g.node[r.randrange(len(g.node))]
    elif k == 5 and g.initializer:
        r.choice(g.initializer).data_type = r.choice(list(range(0, 28)) + [999])
    elif k == 6:
        v = r.choice(list(g.input) + list(g.output)); v.type.tensor_type.elem_type = r.choice(list(range(0, 28)) + [999])
    elif k == 7:
        g.value_info.append(h.make_tensor_value_info(r.choice(ns), r.choice([1, 7, 10, 11, 6, 9, 999, 0]), None))
    elif k == 8 and g.node:
        n = r.choice(g.node)
        if n.attribute: n.attribute.append(copy.deepcopy(r.choice(n.attribute)))
    elif k == 9:
        m.opset_import[0].version = r.choice(list(range(-1, 30)) + [99])
    elif k == 10:
        m.ir_version = r.choice(list(range(0, 16)) + [99])
    elif k == 11:
        v = r.choice(list(g.input) + list(g.output)); v.name = r.choice(ns + ["renamed"])
    elif k == 12 and g.node:
        r.choice(g.node).domain = r.choice(["", "ai.onnx", "com.foo", "ai.onnx.ml"])
    elif k == 13 and g.node:
        n = r.choice(g.node)
        if n.attribute: del n.attribute[r.randrange(len(n.attribute))]
    elif k == 14:
        g.input.append(copy.deepcopy(r.choice(list(g.input))))
    elif k == 15 and g.node:
        n = r.choice(g.node); n.name = r.choice([x.name for x in g.node])
def ort_ok(b):
    try:
        ort.InferenceSession(b, providers=["CPUExecutionProvider"]); return True, ""
    except Exception as e:
        return False, str(e).splitlines()[0][:160]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 400
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
r = random.Random(seed)
stats = {"both_ok":0, "both_refuse":0, "semu_only_refuses":0, "ort_only_refuses":0, "frames":0}
gap = []
for i in range(N):
    m = copy.deepcopy(base)
    for _ in range(r.randint(1, 3)): mutate(m, r)
    b = m.SerializeToString()
    p = os.path.join(WORK, "m.onnx")
    open(p, "wb").write(b)
    ok, why = ort_ok(b)
    o = subprocess.run([SEMU, "inspect", p], capture_output=True, text=True)
    if "Exception raised from" in o.stderr or "frame #" in o.stderr or "panicked" in o.stderr: stats["frames"] += 1
    refused = "not a valid ONNX model" in o.stderr
    if ok and not refused: stats["both_ok"] += 1
    elif not ok and refused: stats["both_refuse"] += 1
    elif refused:
        stats["semu_only_refuses"] += 1; open(os.path.join(WORK, f"false_{i}.onnx"), "wb").write(b); print("FALSE REJECT", i, o.stderr.strip()[:300])
    else:
        stats["ort_only_refuses"] += 1; gap.append(why)
print(stats, "(work folder:", WORK + ")")
from collections import Counter
for k, v in Counter(g[:90] for g in gap).most_common(15): print(v, k)
