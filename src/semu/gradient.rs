//! Step 2 of SEMU.md: the forget-set gradient of every adapted weight,
//! `G_W = Σ_batches ∇_W L(f(x), y)` with the task's loss on the true targets (cross-entropy on
//! class ids; next-token NLL for a language model; a diffusion model's guided noise error),
//! batch-mean, summed over batches.
//! Memory: one batch's activations plus one gradient per weight.
//!
//! Being a sum over batches, it splits into shards ([`Shard`]) that separate processes compute
//! and `semu gradient reduce` adds (`semu::gradient_file`).
use crate::data::{batches, Dataset};
use crate::error::{Error, Result};
use crate::task::diffusion::{self, Draw, Phase};
use crate::task::{Model, Targets};
use std::collections::HashMap;
use std::ops::Range;
use tch::{Kind, Tensor};

/// Shard `index` of `count` of the forget set: whole batches (of the run's batch size, in
/// sample order), so every batch — and its batch-mean loss — is the one a single process sees,
/// and the shards' gradients add up to the single-process one term by term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(Error::msg("the number of shards must be at least 1"));
        }
        if index >= count {
            return Err(Error::msg(format!(
                "shard index {index} is out of range for {count} shard(s): indices run from 0 to {}",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// The batches of this shard among `total` batches: the contiguous range
    /// `⌊I·B/N⌋ .. ⌊(I+1)·B/N⌋` (empty when there are more shards than batches).
    pub fn batches(&self, total: usize) -> Range<usize> {
        let at = |i: usize| (i as u128 * total as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// The sample indices of this shard of a forget set of `len` samples in batches of `batch_size`.
    pub fn samples(&self, len: usize, batch_size: usize) -> Range<usize> {
        let bs = batch_size.max(1);
        let b = self.batches(len.div_ceil(bs));
        (b.start * bs).min(len)..(b.end * bs).min(len)
    }
}

/// Accumulates the forget gradient of `names` (dynamic initializers of the model's plan) in f32.
/// `on_batch(samples_done)` reports progress.
pub fn forget_gradient(
    net: &mut Model,
    names: &[String],
    forget: &dyn Dataset,
    batch_size: usize,
    on_batch: impl FnMut(usize),
) -> Result<HashMap<String, Tensor>> {
    forget_gradient_part(net, names, forget, batch_size, None, Kind::Float, None, on_batch)
}

/// [`forget_gradient`] and, from the same forwards, the input model's accuracy on the forget set
/// (a classifier's or a language model's; `None` for a diffusion model): the pass that would
/// otherwise measure it again.
pub fn forget_gradient_scored(
    net: &mut Model,
    names: &[String],
    forget: &dyn Dataset,
    batch_size: usize,
    on_batch: impl FnMut(usize),
) -> Result<(HashMap<String, Tensor>, Option<f64>)> {
    let mut score = (0i64, 0i64);
    let scorable = net.diffusion.is_none();
    let g = forget_gradient_part(
        net,
        names,
        forget,
        batch_size,
        None,
        Kind::Float,
        scorable.then_some(&mut score),
        on_batch,
    )?;
    let (correct, scored) = score;
    Ok((g, scorable.then(|| if scored == 0 { 0.0 } else { correct as f64 / scored as f64 })))
}

/// [`forget_gradient`] over one shard's batches (all with `None`), summed in `acc` (f32, or f64
/// for `semu gradient`, whose parts are added again later). With `score` (not for a diffusion
/// model), adds the input model's correct and scored predictions on the batches to it.
#[allow(clippy::too_many_arguments)]
pub fn forget_gradient_part(
    net: &mut Model,
    names: &[String],
    forget: &dyn Dataset,
    batch_size: usize,
    shard: Option<Shard>,
    acc: Kind,
    mut score: Option<&mut (i64, i64)>,
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
    let mut sums: Vec<Option<Tensor>> = names.iter().map(|_| None).collect();
    let all = shard.unwrap_or(Shard { index: 0, count: 1 }).samples(forget.len(), batch_size);
    let order: Vec<usize> = all.collect();
    let mut done = 0;
    // The authors' diffusion code clips each batch's whole gradient to norm 1 before summing.
    let clip = net.diffusion.as_ref().is_some_and(|d| d.clip_batch);
    // Replayed draws (parity checks) bring their own batches.
    let plan: Vec<(&[usize], Draw)> = match net.diffusion.as_ref().and_then(|d| d.replay.as_ref()) {
        Some(r) => {
            r.gradient.iter().enumerate().map(|(i, b)| (b.as_slice(), Draw::Replay(Phase::Gradient, i))).collect()
        }
        None => batches(&order, batch_size).map(|b| (b, Draw::Keyed(diffusion::GRADIENT))).collect(),
    };
    // f32 without the clip: autograd adds each batch's gradient into the leaves' own `.grad` in
    // place, weight by weight, so only one gradient per weight is ever alive (the same sums, in
    // the same order, as adding whole-batch gradients).
    let in_place = !clip && acc == Kind::Float;
    for (idx, draw) in plan {
        let b = net.records_with(forget, idx, draw)?;
        let before = (done == 0).then(crate::engine::memory::usage).flatten();
        let loss = match score.as_deref_mut() {
            Some((correct, scored)) => {
                let out = net.forward(&b, &overrides)?;
                let (c, n) = net.correct(&out.f_detach()?, &b)?;
                (*correct, *scored) = (*correct + c, *scored + n);
                net.loss(&out, &b, &Targets::True)?
            }
            None => net.gradient_loss(&b, &overrides)?,
        };
        if let (Some((_, a)), Some((_, z))) = (before, crate::engine::memory::usage()) {
            tracing::debug!("gradient: one batch's activations take {:.3} GiB", z - a);
        }
        if in_place {
            loss.f_backward()?;
        } else {
            let mut grads = Tensor::f_run_backward(&[&loss], &leaves, false, false)?;
            if clip {
                let sq: f64 = grads
                    .iter()
                    .map(|g| g.f_square()?.f_sum(Kind::Double)?.f_double_value(&[]))
                    .sum::<Result<f64, _>>()?;
                let scale = 1.0 / (sq.sqrt() + 1e-6);
                if scale < 1.0 {
                    grads = grads.iter().map(|g| g.f_mul_scalar(scale)).collect::<Result<_, _>>()?;
                }
            }
            for (a, g) in sums.iter_mut().zip(grads) {
                let g = g.f_to_kind(acc)?;
                *a = Some(match a.take() {
                    Some(mut prev) => {
                        let _ = prev.f_add_(&g)?;
                        prev
                    }
                    None => g,
                });
            }
        }
        done += idx.len();
        on_batch(done);
    }
    if in_place {
        for (a, w) in sums.iter_mut().zip(&leaves) {
            let g = w.grad();
            *a = g.defined().then(|| g.f_detach()).transpose()?;
        }
    }
    let mut out = HashMap::new();
    for (n, (a, w)) in names.iter().zip(sums.into_iter().zip(&leaves)) {
        let g = match a {
            Some(g) => g,
            None => w.f_zeros_like()?.f_to_kind(acc)?,
        };
        out.insert(n.clone(), g);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn shards_cover_every_batch_once_in_order() {
        for (len, bs, n) in [(180usize, 16usize, 3usize), (10, 4, 5), (7, 100, 2), (0, 8, 3), (64, 16, 4)] {
            let mut next = 0;
            for i in 0..n {
                let s = Shard::new(i, n).unwrap().samples(len, bs);
                assert_eq!(s.start, next, "len {len} bs {bs} shard {i}/{n}");
                assert!(s.start.is_multiple_of(bs) || s.start == len, "starts on a batch boundary");
                next = s.end;
            }
            assert_eq!(next, len);
        }
        // 12 batches in 3 shards: 4 each.
        assert_eq!(Shard::new(1, 3).unwrap().batches(12), 4..8);
        assert!(Shard::new(3, 3).is_err() && Shard::new(0, 0).is_err());
    }
}
