//! Which weights SEMU adapts (SEMU.md §1): float initializers feeding the weight operand of a
//! Conv, Gemm or MatMul (or onnxruntime's Attention, FusedMatMul and NhwcConv), directly or
//! through ops that only rename, cast or transpose.
use crate::error::Result;
use crate::onnx::proto::NodeProto;
use crate::onnx::{DType, OnnxModel};
use std::collections::{BTreeMap, HashMap, HashSet};
use tch::Tensor;

/// Op kinds whose weight SEMU can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LayerKind {
    Conv,
    Gemm,
    MatMul,
}

/// How a conv weight's axes are stored in the file. SEMU decomposes every conv weight in the
/// O×I×k… view; a weight stored otherwise is permuted into it for the SVD and back for the fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightLayout {
    /// As stored: O×I×k… for a conv (ONNX Conv), the matrix for Gemm/MatMul.
    #[default]
    Native,
    /// O×k…×I: com.microsoft NhwcConv's weight [M, kH, kW, C/group], input channels last.
    ChannelsLast,
}

impl WeightLayout {
    pub fn is_native(&self) -> bool {
        *self == WeightLayout::Native
    }

    /// The stored shape's O×I×k… view.
    pub fn view_dims(&self, stored: &[i64]) -> Vec<i64> {
        let mut d = stored.to_vec();
        if *self == WeightLayout::ChannelsLast && d.len() >= 3 {
            let c = d.pop().expect("rank >= 3");
            d.insert(1, c);
        }
        d
    }

    /// A stored tensor in the O×I×k… view (a permutation: values unchanged).
    pub fn view(&self, stored: &Tensor) -> Result<Tensor> {
        match self {
            WeightLayout::ChannelsLast if stored.dim() >= 3 => Ok(stored.f_movedim(-1, 1)?),
            _ => Ok(stored.shallow_clone()),
        }
    }

    /// An O×I×k… tensor back in the stored layout (the inverse of [`Self::view`]).
    pub fn stored(&self, view: &Tensor) -> Result<Tensor> {
        match self {
            WeightLayout::ChannelsLast if view.dim() >= 3 => Ok(view.f_movedim(1, -1)?),
            _ => Ok(view.shallow_clone()),
        }
    }
}

/// One adaptable weight (an initializer), with every node that uses it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    /// The initializer's shape as stored (its gradient has the same).
    pub dims: Vec<i64>,
    pub dtype: DType,
    /// Names of the consuming Conv/Gemm/MatMul nodes (a shared weight has several).
    pub nodes: Vec<String>,
    /// How a conv weight's axes are stored ([`WeightLayout::view_dims`] gives the O×I×k… shape).
    #[serde(skip_serializing_if = "WeightLayout::is_native")]
    pub layout: WeightLayout,
}

impl Layer {
    pub fn numel(&self) -> i64 {
        self.dims.iter().product()
    }

    /// The shape SEMU decomposes: O×I×k… for a conv whatever its layout, else `dims`.
    pub fn view_dims(&self) -> Vec<i64> {
        self.layout.view_dims(&self.dims)
    }

    /// A tensor of this weight's stored shape (the weight, its gradient) in the O×I×k… view.
    pub fn view(&self, stored: &Tensor) -> Result<Tensor> {
        self.layout.view(stored)
    }
}

/// FakeQuantize: a quantized weight in its float working copy (`semu::quantized`).
const PASS_THROUGH: &[&str] = &["Identity", "Cast", "Transpose", "FakeQuantize"];

/// Follows `value` back through pass-through ops to an initializer name, if it comes from one.
fn source_initializer<'a>(
    value: &'a str,
    producer: &HashMap<&'a str, &'a NodeProto>,
    inits: &HashMap<&'a str, DType>,
) -> Option<&'a str> {
    let mut v = value;
    for _ in 0..16 {
        if inits.contains_key(v) {
            return Some(v);
        }
        let n = producer.get(v)?;
        if !PASS_THROUGH.contains(&n.op_type()) {
            return None;
        }
        v = n.input.first()?.as_str();
    }
    None
}

/// All adaptable weights of the model, in order of first use.
pub fn find_layers(model: &OnnxModel) -> Vec<Layer> {
    let g = model.graph();
    let inits: HashMap<&str, DType> = g
        .initializer
        .iter()
        .filter_map(|t| DType::from_onnx(t.data_type()).ok().filter(|d| d.is_float()).map(|d| (t.name(), d)))
        .collect();
    let dims: HashMap<&str, &Vec<i64>> = g.initializer.iter().map(|t| (t.name(), &t.dims)).collect();
    let mut producer = HashMap::new();
    for n in &g.node {
        for o in &n.output {
            producer.insert(o.as_str(), n);
        }
    }
    let mut found: BTreeMap<usize, Layer> = BTreeMap::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    // Weights that two consumers read in different layouts: no single view to adapt.
    let mut conflicting: HashSet<usize> = HashSet::new();
    let ms = |n: &NodeProto| n.domain() == "com.microsoft";
    for (i, n) in g.node.iter().enumerate() {
        let (kind, operand, layout) = match n.op_type() {
            "Conv" => (LayerKind::Conv, 1, WeightLayout::Native),
            "Gemm" => (LayerKind::Gemm, 1, WeightLayout::Native),
            "MatMul" => (LayerKind::MatMul, 1, WeightLayout::Native),
            // onnxruntime's fusions: Attention's packed QKV weight, FusedMatMul's operands, and
            // the unet optimizer's channels-last Conv.
            "Attention" | "FusedMatMul" if ms(n) => (LayerKind::MatMul, 1, WeightLayout::Native),
            "NhwcConv" if ms(n) => (LayerKind::Conv, 1, WeightLayout::ChannelsLast),
            _ => continue,
        };
        // MatMul's weight may be either operand (x·W or W·x); Gemm's B is the usual weight but
        // some exporters put it in A.
        let fixed = kind == LayerKind::Conv || n.op_type() == "Attention";
        let candidates: Vec<usize> = if fixed { vec![operand] } else { vec![1, 0] };
        for c in candidates {
            let Some(inp) = n.input.get(c) else { continue };
            let Some(w) = source_initializer(inp, &producer, &inits) else { continue };
            let d = dims[w].clone();
            let ok = match kind {
                LayerKind::Conv => d.len() >= 3,
                _ => d.len() == 2,
            };
            if !ok {
                continue;
            }
            let label = if n.name().is_empty() { format!("{}#{i}", n.op_type()) } else { n.name().to_string() };
            let slot = *index.entry(w).or_insert(i);
            let l = found.entry(slot).or_insert_with(|| Layer {
                name: w.to_string(),
                kind,
                dims: d,
                dtype: inits[w],
                nodes: Vec::new(),
                layout,
            });
            if l.layout != layout {
                conflicting.insert(slot);
            }
            l.nodes.push(label);
            break;
        }
    }
    for slot in &conflicting {
        if let Some(l) = found.remove(slot) {
            tracing::info!("{}: read in two layouts ({}), not adapted", l.name, l.nodes.join(", "));
        }
    }
    found.into_values().collect()
}
