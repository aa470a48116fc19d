//! Step 2 of SEMU.md: the forget-set gradient of every adapted weight,
//! `G_W = Σ_batches ∇_W L(f(x), y)` with the task's loss on the true targets (cross-entropy on
//! class ids; next-token NLL for a language model), batch-mean, summed over batches.
//! Memory: one batch's activations plus one gradient per weight.
use crate::data::{batches, Dataset};
use crate::error::Result;
use crate::task::{Model, Targets};
use std::collections::HashMap;
use tch::Tensor;

/// Accumulates the forget gradient of `names` (dynamic initializers of the model's plan).
/// `on_batch(samples_done)` reports progress.
pub fn forget_gradient(
    net: &mut Model,
    names: &[String],
    forget: &dyn Dataset,
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<HashMap<String, Tensor>> {
    // Leaves that require grad stand in for the weights during this pass only.
    let mut leaves = Vec::with_capacity(names.len());
    for n in names {
        let w = net.plan.param(n).expect("planned as dynamic").f_detach()?.f_set_requires_grad(true)?;
        leaves.push(w);
    }
    let overrides: HashMap<String, Tensor> =
        names.iter().cloned().zip(leaves.iter().map(|t| t.shallow_clone())).collect();
    let mut acc: Vec<Option<Tensor>> = names.iter().map(|_| None).collect();
    let order: Vec<usize> = (0..forget.len()).collect();
    let mut done = 0;
    for idx in batches(&order, batch_size) {
        let b = forget.records(idx)?;
        let loss = net.loss(&net.forward(&b, &overrides)?, &b, &Targets::True)?;
        let grads = Tensor::f_run_backward(&[&loss], &leaves, false, false)?;
        for (a, g) in acc.iter_mut().zip(grads) {
            let g = g.f_to_kind(tch::Kind::Float)?;
            *a = Some(match a.take() {
                Some(prev) => prev.f_add(&g)?,
                None => g,
            });
        }
        done += idx.len();
        on_batch(done);
    }
    let mut out = HashMap::new();
    for (n, (a, w)) in names.iter().zip(acc.into_iter().zip(&leaves)) {
        let g = match a {
            Some(g) => g,
            None => w.f_zeros_like()?.f_to_kind(tch::Kind::Float)?,
        };
        out.insert(n.clone(), g);
    }
    Ok(out)
}
