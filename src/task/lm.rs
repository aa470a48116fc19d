//! Next-token arithmetic of a causal LM on B×T×V logits: position t predicts token t+1, and
//! targets at padding (attention mask 0) do not count — PyTorch's `cross_entropy` with labels
//! −100 at padding, which is what the Hugging Face models compute.
use crate::error::Result;
use tch::{Kind, Tensor};

/// Per-position NLL of `targets[:, 1:]` under `logits[:, :-1]` (B×(T−1), f32) and the mask of
/// the positions that count (B×(T−1), f32).
pub fn token_nll(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
    let t = logits.size()[1];
    let lp = logits.f_narrow(1, 0, t - 1)?.f_to_kind(Kind::Float)?.f_log_softmax(-1, Kind::Float)?;
    let dev = lp.device();
    let next = targets.f_narrow(1, 1, t - 1)?.f_to_kind(Kind::Int64)?.f_to_device(dev)?;
    let nll = lp.f_gather(2, &next.f_unsqueeze(2)?, false)?.f_squeeze_dim(2)?.f_neg()?;
    let m = mask.f_narrow(1, 1, t - 1)?.f_to_kind(Kind::Float)?.f_to_device(dev)?;
    Ok((nll, m))
}

/// Mean next-token NLL over the positions that count.
pub fn mean_nll(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (nll, m) = token_nll(logits, targets, mask)?;
    Ok(nll.f_mul(&m)?.f_sum(Kind::Float)?.f_div(&m.f_sum(Kind::Float)?.f_clamp_min(1.0)?)?)
}

/// Greedy next-token hits and positions scored.
pub fn greedy_correct(logits: &Tensor, ids: &Tensor, mask: &Tensor) -> Result<(i64, i64)> {
    let s = per_sample(logits, ids, mask, 0.2)?;
    Ok((s.iter().map(|x| x.correct).sum(), s.iter().map(|x| x.tokens).sum()))
}

/// What one text scores, teacher-forced: the quantities behind the LLM-unlearning metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleScore {
    /// Σ NLL over the text's predicted tokens.
    pub nll: f64,
    pub tokens: i64,
    /// Greedy next-token hits.
    pub correct: i64,
    /// Extraction strength: 1 − k/n for the shortest prefix k after which every greedy next
    /// token is right (0 when the last one is wrong).
    pub extraction: f64,
    /// Min-K% probability: the mean log-probability of the text's lowest K% tokens.
    pub min_k: f64,
}

/// Scores every text of a batch (no gradients; CPU values). `k` is Min-K%'s share (0, 1].
pub fn per_sample(logits: &Tensor, ids: &Tensor, mask: &Tensor, k: f64) -> Result<Vec<SampleScore>> {
    let _g = tch::no_grad_guard();
    let (nll, m) = token_nll(logits, ids, mask)?;
    let t = logits.size()[1];
    let pred = logits.f_narrow(1, 0, t - 1)?.f_argmax(-1, false)?;
    let next = ids.f_narrow(1, 1, t - 1)?.f_to_kind(Kind::Int64)?.f_to_device(pred.device())?;
    let hit = pred.f_eq_tensor(&next)?.f_to_kind(Kind::Float)?;
    let rows = nll.size()[0] as usize;
    let nll: Vec<Vec<f32>> = to_rows(&nll)?;
    let m: Vec<Vec<f32>> = to_rows(&m)?;
    let hit: Vec<Vec<f32>> = to_rows(&hit)?;
    let mut out = Vec::with_capacity(rows);
    for r in 0..rows {
        let pos: Vec<usize> = (0..m[r].len()).filter(|&j| m[r][j] > 0.5).collect();
        let n = pos.len();
        let hits: Vec<bool> = pos.iter().map(|&j| hit[r][j] > 0.5).collect();
        // Shortest prefix after which every prediction is right.
        let tail = hits.iter().rev().take_while(|&&h| h).count();
        let mut lps: Vec<f64> = pos.iter().map(|&j| -(nll[r][j] as f64)).collect();
        lps.sort_by(|a, b| a.total_cmp(b));
        let take = ((k * n as f64).ceil() as usize).clamp(1.min(n), n);
        out.push(SampleScore {
            nll: pos.iter().map(|&j| nll[r][j] as f64).sum(),
            tokens: n as i64,
            correct: hits.iter().filter(|&&h| h).count() as i64,
            extraction: if n == 0 { 0.0 } else { tail as f64 / n as f64 },
            min_k: if take == 0 { 0.0 } else { lps[..take].iter().sum::<f64>() / take as f64 },
        });
    }
    Ok(out)
}

fn to_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let t = t.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Float)?;
    let (r, c) = (t.size()[0], t.size()[1]);
    let flat = Vec::<f32>::try_from(t.f_reshape([-1])?)?;
    Ok((0..r as usize).map(|i| flat[i * c as usize..(i + 1) * c as usize].to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_does_not_count_and_extraction_reads_the_correct_tail() {
        // Vocabulary 3; one text of 4 tokens, the second padded after 3.
        let ids = Tensor::from_slice(&[0i64, 1, 2, 1, 0, 2, 1, 0]).reshape([2, 4]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 0]).reshape([2, 4]);
        // Logits that predict token (position + 1) % 3 strongly.
        let mut v = vec![0f32; 2 * 4 * 3];
        for b in 0..2 {
            for t in 0..4 {
                v[(b * 4 + t) * 3 + (t + 1) % 3] = 5.0;
            }
        }
        let logits = Tensor::from_slice(&v).reshape([2, 4, 3]);
        let s = per_sample(&logits, &ids, &mask, 0.5).unwrap();
        // Text 0 targets 1,2,1; predictions 1,2,0: hits T,T,F → extraction 0.
        assert_eq!((s[0].tokens, s[0].correct), (3, 2));
        assert_eq!(s[0].extraction, 0.0);
        // Text 1 targets 2,1 (the padded 0 is not scored); predictions 1,2 → no hits.
        assert_eq!((s[1].tokens, s[1].correct), (2, 0));
        let mean = mean_nll(&logits, &ids, &mask).unwrap().double_value(&[]);
        let total: f64 = s.iter().map(|x| x.nll).sum();
        assert!((mean - total / 5.0).abs() < 1e-5, "{mean} vs {}", total / 5.0);
    }
}
