//! SEMU on the UNet as onnxruntime's unet optimizer ships it (fixtures/text_ddpm/
//! unet_optimized.onnx): its com.microsoft NhwcConv weights ([M, kH, kW, C/group], input
//! channels last) are adapted as convs in their O×I×kh×kw view and fold back into their own
//! layout; and the gate, whose onnxruntime has no CPU kernel for them, says so instead of
//! failing or claiming onnxruntime checked the export.
//! (The layout is recorded in the unlearning patch too, which re-creates the same bytes.)
use semu::data::npy::read_npy;
use semu::engine::{Plan, PlanOptions, Registry};
use semu::export::folded_weights;
use semu::onnx::OnnxModel;
use semu::patch::Patch;
use semu::semu::svd::decompose_layer;
use semu::semu::{find_layers, Adapter, Layer, LayerKind, Parity, WeightLayout};
use semu::verify::gate::{self, Probe};
use semu::verify::OrtSession;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fx(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/text_ddpm").join(rel);
    assert!(p.exists(), "{} is missing: run `make fixtures` (tools/make_text_ddpm.py)", p.display());
    p
}

fn fused() -> OnnxModel {
    OnnxModel::load(fx("unet_optimized.onnx")).unwrap()
}

/// The weight as stored, f32 on the CPU.
fn weight(m: &OnnxModel, name: &str) -> Tensor {
    let t = m.tensor(m.initializer(name).unwrap()).unwrap();
    let dims: Vec<i64> = t.dims.clone();
    Tensor::from_data_size(&t.bytes, &dims, Kind::Float)
}

/// The adapter of `l` from a random gradient in the stored layout, R = 0.
fn adapter(m: &OnnxModel, l: &Layer, seed: i64) -> Adapter {
    tch::manual_seed(seed);
    let g = Tensor::randn(&l.dims, (Kind::Float, Device::Cpu));
    let d = decompose_layer(&g, l, 0.9, Parity::Paper).unwrap();
    Adapter::new(l, &weight(m, &l.name), &d, 0.9, Parity::Paper).unwrap().unwrap()
}

fn nhwc_layers(m: &OnnxModel) -> Vec<Layer> {
    find_layers(m).into_iter().filter(|l| l.layout == WeightLayout::ChannelsLast).collect()
}

#[test]
fn every_nhwcconv_weight_is_an_adaptable_conv_with_the_unfused_convs_shapes() {
    let m = fused();
    let inits: BTreeSet<&str> = m.graph().initializer.iter().map(|t| t.name()).collect();
    let in_graph: BTreeSet<String> = m
        .graph()
        .node
        .iter()
        .filter(|n| n.domain() == "com.microsoft" && n.op_type() == "NhwcConv")
        .filter_map(|n| n.input.get(1).filter(|w| inits.contains(w.as_str())).cloned())
        .collect();
    let layers = nhwc_layers(&m);
    let found: BTreeSet<String> = layers.iter().map(|l| l.name.clone()).collect();
    assert_eq!(found, in_graph);
    assert_eq!(found.len(), 39, "the optimizer makes every Conv of this UNet an NhwcConv");
    assert!(layers.iter().all(|l| l.kind == LayerKind::Conv && l.dims.len() == 4));
    // In their O×I×kh×kw view they are the unfused graph's Conv weights, and with them the fused
    // file has as many adaptable parameters as the unfused one (fewer weights: the optimizer
    // packs attention's Q, K and V into one).
    let unfused = find_layers(&OnnxModel::load(fx("unet.onnx")).unwrap());
    let mut views: Vec<Vec<i64>> = layers.iter().map(|l| l.view_dims()).collect();
    let mut convs: Vec<Vec<i64>> =
        unfused.iter().filter(|l| l.kind == LayerKind::Conv).map(|l| l.dims.clone()).collect();
    views.sort();
    convs.sort();
    assert_eq!(views, convs);
    let params = |ls: &[Layer]| ls.iter().map(Layer::numel).sum::<i64>();
    assert_eq!(params(&find_layers(&m)), params(&unfused));
}

/// The reference inputs (sorted by name) of `ref/`.
fn ref_feeds() -> Vec<(String, Tensor)> {
    let mut feeds: Vec<(String, Tensor)> = ["sample", "timestep", "encoder_hidden_states"]
        .iter()
        .map(|n| (n.to_string(), read_npy(&fx(&format!("ref/{n}.npy"))).unwrap()))
        .collect();
    feeds.sort_by(|a, b| a.0.cmp(&b.0));
    feeds
}

/// ∇ of Σ(output · probe) with respect to initializer `name` of `m`, in its stored layout.
fn gradient(m: &OnnxModel, name: &str, probe: &Tensor) -> Tensor {
    let opts = PlanOptions { dynamic: HashSet::from([name.to_string()]), ..Default::default() };
    let plan = Plan::new(m, &Registry::standard(), &opts).unwrap();
    let leaf = plan.param(name).unwrap().detach().set_requires_grad(true);
    let feeds: HashMap<String, Tensor> = ref_feeds().into_iter().collect();
    let out = plan.run_with(&feeds, &HashMap::from([(name.to_string(), leaf.shallow_clone())])).unwrap().remove(0);
    Tensor::run_backward(&[(out * probe).sum(Kind::Float)], &[&leaf], false, false).remove(0)
}

#[test]
fn in_its_view_an_nhwcconv_weights_gradient_is_the_unfused_convs() {
    // So the per-input-channel SVD of the viewed gradient is the one SEMU takes on unet.onnx.
    let (m, unfused) = (fused(), OnnxModel::load(fx("unet.onnx")).unwrap());
    let convs: Vec<Layer> = find_layers(&unfused).into_iter().filter(|l| l.kind == LayerKind::Conv).collect();
    tch::manual_seed(11);
    let probe = Tensor::randn([8, 1, 8, 8], (Kind::Float, Device::Cpu));
    // conv_in (C = 1) and the first 3×3 conv with several input channels.
    let layers = nhwc_layers(&m);
    for l in [&layers[0], layers.iter().find(|l| l.dims[1] == 3 && l.dims[3] > 1).unwrap()] {
        let view = weight(&m, &l.name).movedim(-1, 1);
        let twin = convs
            .iter()
            .find(|c| c.dims == view.size() && weight(&unfused, &c.name).equal(&view))
            .unwrap_or_else(|| panic!("{}: no Conv of unet.onnx holds its values", l.name));
        let (got, want) = (gradient(&m, &l.name, &probe), gradient(&unfused, &twin.name, &probe));
        assert_eq!(got.size(), l.dims);
        let err = (l.view(&got).unwrap() - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        println!("{} vs {}: gradient max abs {err:.2e}, scale {scale:.2e}", l.name, twin.name);
        assert!(scale > 0.0 && err <= 1e-5 * scale, "{} vs {}: max abs {err}, scale {scale}", l.name, twin.name);
    }
}

#[test]
fn the_fold_is_the_oihw_fold_permuted_back_and_r_zero_is_the_same_bytes() {
    let m = fused();
    let dir = tempfile::tempdir().unwrap();
    let layers = nhwc_layers(&m);
    // 3×3 kernels and a 1×1 one (the first 1×1 is a resnet shortcut or attention projection).
    let picked: Vec<&Layer> = layers
        .iter()
        .filter(|l| l.dims[1] == 3)
        .take(3)
        .chain(layers.iter().find(|l| l.dims[1] == 1 && l.dims[0] != l.dims[3]))
        .collect();
    assert_eq!(picked.len(), 4, "{:?}", layers.iter().map(|l| &l.dims).collect::<Vec<_>>());
    for (i, l) in picked.into_iter().enumerate() {
        let a = adapter(&m, l, i as i64);
        let w = weight(&m, &l.name);
        assert_eq!(a.r.size()[0], l.view_dims()[1], "{}: one R per input channel", l.name);
        let at_zero = folded_weights(&m, std::slice::from_ref(&a)).unwrap();
        assert_eq!(
            at_zero[&l.name].bytes,
            m.tensor(m.initializer(&l.name).unwrap()).unwrap().bytes,
            "{}: R = 0 changes the file",
            l.name
        );
        let _g = tch::no_grad_guard();
        a.r.shallow_clone().copy_(&(Tensor::randn(a.r.size(), (Kind::Float, Device::Cpu)) * 1e-2));
        // The reference: U R Vᵀ per input channel (I×O×K), as O×I×kh×kw, added to the weight's
        // view, then channels last again.
        let (u, v) = a.bases();
        let view = l.view_dims();
        let delta = u.matmul(&a.r).matmul(&v.transpose(1, 2)).permute([1, 0, 2]).reshape(&view[..]);
        let want = (w.movedim(-1, 1) + delta).movedim(1, -1).contiguous();
        let got = a.folded().unwrap();
        assert!((&got - &w).abs().max().double_value(&[]) > 1e-5, "{}: R moved nothing", l.name);
        assert!(got.equal(&want), "{}: max abs {}", l.name, (got - want).abs().max().double_value(&[]));
        // The unlearning patch records the layout: read back, it applies to the same bytes.
        let folded = folded_weights(&m, std::slice::from_ref(&a)).unwrap();
        let file = dir.path().join(format!("{i}.patch.safetensors"));
        Patch::from_adapters(&m, std::slice::from_ref(&a), &folded, Default::default()).unwrap().write(&file).unwrap();
        let applied = semu::patch::apply(&m, &Patch::read(&file).unwrap(), false).unwrap();
        assert_eq!(applied.replacements[&l.name].bytes, folded[&l.name].bytes, "{}: patch", l.name);
    }
}

#[test]
fn the_gate_names_the_op_onnxruntime_cannot_run_and_does_not_claim_it_verified() {
    let m = fused();
    let dir = tempfile::tempdir().unwrap();
    // onnxruntime's own refusal, as `semu run --compare-ort` shows it.
    let e = OrtSession::load(&m.path, 1).err().expect("onnxruntime has no CPU NhwcConv").to_string();
    assert!(e.contains("no kernel for NhwcConv") && !e.contains("not a valid ONNX model"), "{e}");

    // An export: a small R folded into one NhwcConv weight.
    let l = &nhwc_layers(&m)[0];
    let a = adapter(&m, l, 7);
    a.r.shallow_clone().detach().copy_(&(Tensor::randn(a.r.size(), (Kind::Float, Device::Cpu)) * 1e-2));
    let export = dir.path().join("export.onnx");
    m.save(&export, &folded_weights(&m, std::slice::from_ref(&a)).unwrap()).unwrap();

    let plan = Plan::new(&m, &Registry::standard(), &PlanOptions::default()).unwrap();
    let output = plan.output_names()[0].to_string();
    let feeds = ref_feeds();
    let feed_map: HashMap<String, Tensor> = feeds.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    let input_out = plan.run(&feed_map).unwrap().swap_remove(0);
    let adapted = OnnxModel::load(&export).unwrap();
    let adapted_out = Plan::new(&adapted, &Registry::standard(), &PlanOptions::default())
        .unwrap()
        .run(&feed_map)
        .unwrap()
        .swap_remove(0);
    let tol = gate::tolerance_for(&adapted_out);
    let probe = |expected: &Tensor| Probe {
        name: "ref".into(),
        feeds: feeds.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
        expected: expected.shallow_clone(),
        input_expected: Some(input_out.shallow_clone()),
    };

    let r = gate::check_with(&export, Some(&m.path), &output, &[probe(&adapted_out)], tol, &mut |_, _| {}).unwrap();
    println!("rows {:#?}\nwarnings {:#?}\nfailure {:?}", r.rows, r.warnings, r.failure());
    assert!(
        r.warnings.iter().any(|w| w.contains("onnxruntime has no kernel for com.microsoft::NhwcConv")),
        "{:?}",
        r.warnings
    );
    assert!(r.unverified.as_deref().is_some_and(|u| u.contains("NhwcConv")));
    assert!(r.rows.iter().all(|x| x.runtime.starts_with("engine") && x.passed), "{:?}", r.rows);
    assert!(!r.rows.is_empty());
    assert!(!r.passed, "nothing but the engine ran the export: it is not verified");
    assert!(r.failure().is_some_and(|f| f.starts_with("not verified") && f.contains("NhwcConv")));

    // The engine's own row still catches a fold that is not the adapted model.
    let r = gate::check_with(&export, Some(&m.path), &output, &[probe(&input_out)], tol, &mut |_, _| {}).unwrap();
    assert!(!r.passed && r.failure().is_some_and(|f| f.contains("engine (folded file)")), "{:?}", r.failure());
}
