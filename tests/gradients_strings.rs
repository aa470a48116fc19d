//! Gradient check for the ops the string family re-registered as value ops: Identity (any value)
//! and Equal/Constant keep their tensor paths. Only Identity carries a gradient; it must still
//! pass it through for graph inputs and trainable parameters alike, at every opset.
#[allow(dead_code)]
#[path = "gradients/harness.rs"]
mod harness;

use harness::{Case, Gen};

#[test]
fn identity_passes_gradients() {
    for (i, opset) in [1, 14, 16, 21, 25].into_iter().enumerate() {
        let mut g = Gen::new(i as u64);
        let x = g.val(&[2, 3]);
        Case::new("Identity", opset, i as u64).input(x.clone()).check().unwrap();
        Case::new("Identity", opset, i as u64).param(x).check().unwrap();
    }
}
