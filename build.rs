//! Link-time set-up for libtorch and onnxruntime.
//!
//! tch's own build script cannot pass `--no-as-needed` to downstream binaries, so without these
//! lines the linker drops `libtorch_cuda.so` and CUDA is silently unavailable. We also bake an
//! rpath (RUNPATH, so LD_LIBRARY_PATH can still override it) to the venv's torch, and the path of
//! the venv's onnxruntime library, so the binary runs from anywhere without environment set-up.
use std::path::PathBuf;
use std::process::Command;

fn python() -> String {
    std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python".to_string())
}

fn ask_python(code: &str) -> Option<String> {
    let out = Command::new(python()).arg("-c").arg(code).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    // ONNX protobuf types, generated from the schema shipped with onnx 1.22 (proto/onnx.proto),
    // by protox (pure Rust), so no protoc is needed and every field of IR v11 round-trips.
    // onnx-data.proto adds SequenceProto/OptionalProto (test data for sequence-valued graphs).
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-changed=proto/onnx-data.proto");
    let fds = protox::compile(["proto/onnx.proto", "proto/onnx-data.proto"], ["proto"]).expect("proto/*.proto compile");
    prost_build::Config::new().compile_fds(fds).expect("prost generates the ONNX types");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    println!("cargo:rerun-if-env-changed=PATH");
    let torch_lib = match std::env::var("LIBTORCH") {
        Ok(root) => Some(PathBuf::from(root).join("lib")),
        Err(_) => ask_python("import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
            .map(PathBuf::from),
    };
    if let Some(lib) = &torch_lib {
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-ltorch_cuda");
        }
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
        println!("cargo:rustc-env=SEMU_BUILD_LIBTORCH={}", lib.display());
    }
    let ort = ask_python(
        "import onnxruntime, os, glob; d=os.path.join(os.path.dirname(onnxruntime.__file__),'capi'); \
         print(sorted(glob.glob(os.path.join(d,'libonnxruntime.so*')))[-1])",
    )
    .unwrap_or_default();
    println!("cargo:rustc-env=SEMU_BUILD_ORT_DYLIB={ort}");
    git_commit();
}

/// The commit the audit record names (`SEMU_GIT_COMMIT`), "unknown" outside a git checkout;
/// rebuilt when HEAD or the branch it points to moves.
fn git_commit() {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SEMU_GIT_COMMIT={commit}");
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    // Only files that exist: a missing one would make cargo rerun this script on every build.
    for what in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(p) = git(&["rev-parse", "--git-path", what]).filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
