"""Makes every fixture the tests and the demo need; idempotent (skips what exists).
FORCE=1 regenerates the committed ones."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(script):
    subprocess.run([sys.executable, os.path.join(HERE, script)], check=True)


def external_variants():
    """The digits model with its weights as external data (one file, and one file per tensor),
    and as float16: the model I/O layer must keep each layout and dtype."""
    import onnx
    from onnx import numpy_helper
    src = os.path.join(ROOT, "fixtures", "digits", "model.onnx")
    one = os.path.join(ROOT, "fixtures", "external", "single", "model.onnx")
    many = os.path.join(ROOT, "fixtures", "external", "per_tensor", "model.onnx")
    f16 = os.path.join(ROOT, "fixtures", "digits_f16", "model.onnx")
    if all(os.path.exists(p) for p in (one, many, f16)) and os.environ.get("FORCE") != "1":
        return
    for path, all_in_one in ((one, True), (many, False)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        m = onnx.load(src)
        onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=all_in_one,
                        location="model.onnx.data" if all_in_one else None, size_threshold=0)
    # float16 weights with Cast nodes in front, as a half-precision export would look.
    m = onnx.load(src)
    g = m.graph
    casts = []
    for init in g.initializer:
        arr = numpy_helper.to_array(init).astype("float16")
        init.CopyFrom(numpy_helper.from_array(arr, init.name + "_f16"))
        casts.append(onnx.helper.make_node("Cast", [init.name], [init.name[:-4]], to=onnx.TensorProto.FLOAT,
                                           name="cast_" + init.name[:-4]))
    rest = list(g.node)
    del g.node[:]
    g.node.extend(casts + rest)
    os.makedirs(os.path.dirname(f16), exist_ok=True)
    onnx.save(m, f16)


def main():
    run("make_digits.py")
    run("make_digits_png.py")
    external_variants()
    run("make_deployed.py")  # half, fixed-batch and quantized exports of the digits CNN
    run("make_ddpm.py")  # the class-conditional DDPM ε-network of the diffusion task, and its judge
    run("make_text_ddpm.py")  # the prompt-conditioned diffusers UNet + CLIP text encoder (needs ddpm's judge)
    run("make_latent_ddpm.py")  # a VAE + UNet on its latents over text_ddpm's text encoder (needs both above)
    if os.path.exists(os.path.join(HERE, "export_models.py")):
        run("export_models.py")
    # Text fixtures (transformers + tokenizers); each script skips when its outputs exist.
    run("make_text_classifier.py")
    run("make_text_lm.py")
    # onnxruntime contrib-op cases and the optimizer's rewrites of the two text models and a ViT.
    run("make_contrib_cases.py")
    print("fixtures ready")


if __name__ == "__main__":
    main()
