//! Classic-ML ops: TfIdfVectorizer (ai.onnx) here, the tree ensembles of ai.onnx.ml in `tree`.
//! Their outputs are counts or piecewise-constant scores: nothing here carries a gradient.
use crate::engine::convert::to_tensor;
use crate::engine::{to_ints, vop, BoxOp, OpCtx, Registry, Value};
use crate::error::Result;
use crate::onnx::{NodeExt, TensorData};
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use tch::{Device, Kind, Tensor};

mod tree;

pub fn register(r: &mut Registry) {
    r.add("TfIdfVectorizer", 9, tfidf_vectorizer);
    tree::register(r);
}

/// A tensor attribute read as f64 values (any numeric element type), None when absent.
fn tensor_attr(ctx: &OpCtx, name: &str) -> Result<Option<Vec<f64>>> {
    let Some(tp) = ctx.node.get_t(name)? else { return Ok(None) };
    let err = |e: crate::error::Error| ctx.node.attr_err(name, e.to_string());
    let t = to_tensor(&TensorData::from_proto(tp, Path::new(".")).map_err(err)?).map_err(err)?;
    Ok(Some(Vec::<f64>::try_from(&t.f_to_kind(Kind::Double)?.f_reshape([-1])?)?))
}

/// A trie of the pool's n-grams. `id` is 1 + the n-gram's position among all n-grams of the pool
/// (the index into `ngram_indexes`), or 0 for a node that is only a prefix.
struct Gram<K> {
    id: usize,
    next: HashMap<K, Gram<K>>,
}

impl<K: Eq + Hash + Clone> Gram<K> {
    fn new() -> Self {
        Gram { id: 0, next: HashMap::new() }
    }

    fn insert(&mut self, gram: &[K], id: usize) {
        let mut node = self;
        for k in gram {
            node = node.next.entry(k.clone()).or_insert_with(Gram::new);
        }
        node.id = id;
    }
}

enum Pool {
    Ints(Gram<i64>),
    Strs(Gram<String>),
}

#[derive(Clone, Copy, PartialEq)]
enum Weighting {
    Tf,
    Idf,
    TfIdf,
}

struct TfIdf {
    mode: Weighting,
    min: usize,
    max: usize,
    skip: usize,
    /// Output column of each pool n-gram.
    columns: Vec<usize>,
    width: usize,
    /// Weight of each output column (empty: all 1).
    weights: Vec<f32>,
}

/// Builds the trie from the pool: `counts[i]` is where the (i+1)-grams start. Ids advance over
/// every n-gram, also those outside [min, max] that are left out, so ids stay aligned with
/// `ngram_indexes`.
fn build_pool<K: Eq + Hash + Clone>(ctx: &OpCtx, pool: &[K], counts: &[i64], cfg: &TfIdf) -> Result<Gram<K>> {
    let mut root = Gram::new();
    let mut id = 1;
    for (i, &start) in counts.iter().enumerate() {
        let end = counts.get(i + 1).copied().unwrap_or(pool.len() as i64);
        if start < 0 || end < start || end as usize > pool.len() {
            return Err(ctx
                .node
                .attr_err("ngram_counts", format!("{counts:?} does not split a pool of {}", pool.len())));
        }
        let size = i + 1;
        let items = &pool[start as usize..end as usize];
        if !items.len().is_multiple_of(size) {
            return Err(ctx.node.attr_err("ngram_counts", format!("{} items do not make {size}-grams", items.len())));
        }
        for gram in items.chunks_exact(size) {
            if (cfg.min..=cfg.max).contains(&size) {
                root.insert(gram, id);
            }
            id += 1;
        }
    }
    if id - 1 > cfg.columns.len() {
        return Err(ctx
            .node
            .attr_err("ngram_indexes", format!("has {} entries for {} n-grams", cfg.columns.len(), id - 1)));
    }
    Ok(root)
}

fn tfidf_vectorizer(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let mode = match n.get_s("mode")?.as_deref() {
        Some("TF") => Weighting::Tf,
        Some("IDF") => Weighting::Idf,
        Some("TFIDF") => Weighting::TfIdf,
        other => return Err(n.attr_err("mode", format!("{other:?} is not TF, IDF or TFIDF"))),
    };
    let (min, max, skip) = (n.req_i("min_gram_length")?, n.req_i("max_gram_length")?, n.req_i("max_skip_count")?);
    if min < 1 || max < min || skip < 0 {
        return Err(n.attr_err("min_gram_length", format!("need 1 <= min ({min}) <= max ({max}), skip ({skip}) >= 0")));
    }
    let idx = n.req_ints("ngram_indexes")?;
    if idx.iter().any(|&i| i < 0) {
        return Err(n.attr_err("ngram_indexes", "has a negative index"));
    }
    let columns: Vec<usize> = idx.iter().map(|&i| i as usize).collect();
    let width = columns.iter().max().map_or(0, |m| m + 1);
    // The i-th weight belongs to the i-th pool n-gram, so it scales that n-gram's column (as in
    // ONNX Runtime; the reference implementation indexes weights by column instead).
    let weights = match n.get_floats("weights")? {
        Some(w) if w.len() != columns.len() => {
            return Err(n.attr_err("weights", format!("{} weights for {} n-grams", w.len(), columns.len())));
        }
        Some(w) => {
            let mut by_col = vec![1.0; width];
            columns.iter().zip(&w).for_each(|(&c, &w)| by_col[c] = w);
            by_col
        }
        None => vec![],
    };
    let cfg = TfIdf { mode, min: min as usize, max: max as usize, skip: skip as usize, columns, width, weights };
    let counts = n.req_ints("ngram_counts")?;
    let pool = match (n.get_ints("pool_int64s")?, n.get_strings("pool_strings")?) {
        (Some(p), None) => Pool::Ints(build_pool(ctx, &p, &counts, &cfg)?),
        (None, Some(p)) => Pool::Strs(build_pool(ctx, &p, &counts, &cfg)?),
        _ => return Err(n.attr_err("pool_int64s", "exactly one of pool_int64s and pool_strings must be set")),
    };
    vop(move |x| {
        let (dims, freq, dev) = match (x.req(0)?, &pool) {
            (Value::Tensor(t), Pool::Ints(root)) => {
                let (dims, freq) = cfg.count(&t.size(), &to_ints(t)?, root).map_err(|e| x.err(e))?;
                (dims, freq, t.device())
            }
            (Value::Str(s), Pool::Strs(root)) => {
                let (dims, freq) = cfg.count(&s.dims, &s.data, root).map_err(|e| x.err(e))?;
                (dims, freq, Device::Cpu)
            }
            (v, _) => return Err(x.err(format!("input {} does not match the pool's element type", v.describe()))),
        };
        let y = Tensor::f_from_slice(&cfg.weigh(&freq))?.f_reshape(dims)?.f_to_device(dev)?;
        Ok(vec![Value::Tensor(y)])
    })
}

impl TfIdf {
    /// N-gram counts of each row of `data` (shape [C] or [B, C]): output shape and counts.
    fn count<K: Eq + Hash>(
        &self,
        shape: &[i64],
        data: &[K],
        root: &Gram<K>,
    ) -> std::result::Result<(Vec<i64>, Vec<u32>), String> {
        let (rows, dims) = match shape {
            [] | [_] => (1, vec![self.width as i64]),
            [b, _] => (*b as usize, vec![*b, self.width as i64]),
            _ => return Err(format!("input must be [C] or [B, C], got {shape:?}")),
        };
        let mut freq = vec![0u32; rows * self.width];
        let c = data.len().checked_div(rows).unwrap_or(0);
        for r in 0..rows {
            let out = &mut freq[r * self.width..(r + 1) * self.width];
            self.count_row(&data[r * c..(r + 1) * c], root, |id| out[self.columns[id - 1]] += 1);
        }
        Ok((dims, freq))
    }

    /// Walks the trie from every start position for each skip distance (items `dist` apart).
    /// Unigrams do not depend on the distance, so they are counted in the first pass only.
    fn count_row<K: Eq + Hash>(&self, row: &[K], root: &Gram<K>, mut hit: impl FnMut(usize)) {
        let mut first = self.min;
        for dist in 1..=self.skip + 1 {
            for start in 0..row.len() {
                // Too close to the end for even the shortest wanted n-gram.
                if start + dist * (first - 1) >= row.len() {
                    break;
                }
                let (mut node, mut item, mut size) = (root, start, 1);
                while size <= self.max && item < row.len() {
                    let Some(next) = node.next.get(&row[item]) else { break };
                    if size >= first && next.id != 0 {
                        hit(next.id);
                    }
                    (node, item, size) = (next, item + dist, size + 1);
                }
            }
            if first == 1 {
                first = 2;
                if first > self.max {
                    break;
                }
            }
        }
    }

    /// Applies the weighting to raw counts (row-major, `width` columns).
    fn weigh(&self, freq: &[u32]) -> Vec<f32> {
        let w = |i: usize| if self.weights.is_empty() { 1.0 } else { self.weights[i % self.width] };
        freq.iter()
            .enumerate()
            .map(|(i, &f)| match self.mode {
                Weighting::Tf => f as f32,
                Weighting::Idf => {
                    if f > 0 {
                        w(i)
                    } else {
                        0.0
                    }
                }
                Weighting::TfIdf => w(i) * f as f32,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: usize, max: usize, skip: usize, columns: Vec<usize>) -> TfIdf {
        let width = columns.iter().max().unwrap() + 1;
        TfIdf { mode: Weighting::Tf, min, max, skip, columns, width, weights: vec![] }
    }

    #[test]
    fn counts_skip_grams() {
        // Pool: unigram [5], bigrams [5 6] and [6 7]; up to one skipped item.
        let c = cfg(1, 2, 1, vec![0, 1, 2]);
        let mut root = Gram::new();
        root.insert(&[5i64], 1);
        root.insert(&[5, 6], 2);
        root.insert(&[6, 7], 3);
        // [5 6 7 5 0 7]: unigram 5 twice, (5 6) and (6 7) adjacent once each; two apart
        // there are only (5 7), (6 5) and (5 7), none in the pool.
        let (dims, f) = c.count(&[6], &[5, 6, 7, 5, 0, 7], &root).unwrap();
        assert_eq!(dims, vec![3]);
        assert_eq!(f, vec![2, 1, 1]);
        // [5 9 6 8 7]: no adjacent pair, but (5 6) and (6 7) two apart; [7 6 5 6 7]: adjacent.
        let (dims, f) = c.count(&[2, 5], &[5, 9, 6, 8, 7, 7, 6, 5, 6, 7], &root).unwrap();
        assert_eq!(dims, vec![2, 3]);
        assert_eq!(f, vec![1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn weighs_columns() {
        let mut c = cfg(1, 1, 0, vec![0, 1]);
        c.weights = vec![0.5, 2.0];
        c.mode = Weighting::Idf;
        assert_eq!(c.weigh(&[3, 0, 1, 2]), vec![0.5, 0.0, 0.5, 2.0]);
        c.mode = Weighting::TfIdf;
        assert_eq!(c.weigh(&[3, 0, 1, 2]), vec![1.5, 0.0, 0.5, 4.0]);
    }
}
