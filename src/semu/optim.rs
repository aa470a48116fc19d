//! SGD (momentum, weight decay) and Adam over the R matrices, with PyTorch's update rules,
//! written on fallible tensor ops so a libtorch error is an error, not an abort.
use crate::error::Result;
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

pub struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    step: i64,
    /// Momentum buffers (SGD) or first moments (Adam), and Adam's second moments.
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, lr: f64, momentum: f64, weight_decay: f64, n: usize) -> Self {
        let none = || (0..n).map(|_| None).collect();
        Optimizer { kind, lr, momentum, weight_decay, step: 0, m: none(), v: none() }
    }

    /// Changes the learning rate for the next steps (lr schedules); the buffers are kept.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// One update of `params` (leaves with gradients from the last backward), then zero grads.
    pub fn step(&mut self, params: &mut [Tensor]) -> Result<()> {
        let _g = tch::no_grad_guard();
        self.step += 1;
        for (i, p) in params.iter_mut().enumerate() {
            let mut grad = p.grad();
            if !grad.defined() {
                continue;
            }
            let mut g = grad.f_detach()?;
            if self.weight_decay != 0.0 {
                g = g.f_add(&p.f_mul_scalar(self.weight_decay)?)?;
            }
            let update = match self.kind {
                OptimizerKind::Sgd => {
                    if self.momentum != 0.0 {
                        let buf = match self.m[i].take() {
                            Some(b) => b.f_mul_scalar(self.momentum)?.f_add(&g)?,
                            None => g.f_detach_copy()?,
                        };
                        self.m[i] = Some(buf.shallow_clone());
                        buf
                    } else {
                        g
                    }
                }
                OptimizerKind::Adam => {
                    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
                    let m = match self.m[i].take() {
                        Some(m) => m.f_mul_scalar(b1)?.f_add(&g.f_mul_scalar(1.0 - b1)?)?,
                        None => g.f_mul_scalar(1.0 - b1)?,
                    };
                    let v = match self.v[i].take() {
                        Some(v) => v.f_mul_scalar(b2)?.f_add(&g.f_square()?.f_mul_scalar(1.0 - b2)?)?,
                        None => g.f_square()?.f_mul_scalar(1.0 - b2)?,
                    };
                    let mh = m.f_div_scalar(1.0 - b1.powi(self.step as i32))?;
                    let vh = v.f_div_scalar(1.0 - b2.powi(self.step as i32))?;
                    self.m[i] = Some(m);
                    self.v[i] = Some(v);
                    mh.f_div(&vh.f_sqrt()?.f_add_scalar(eps)?)?
                }
            };
            let _ = p.f_sub_(&update.f_mul_scalar(self.lr)?)?;
            let _ = grad.f_zero_()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn sgd_matches_pytorch_rule_with_momentum_and_decay() {
        // p=1, grad of (p²)/2 is p. PyTorch: g = p + wd·p; buf = g (first) then μ·buf + g.
        let mut p = vec![Tensor::ones([1], (Kind::Float, Device::Cpu)).set_requires_grad(true)];
        let mut opt = Optimizer::new(OptimizerKind::Sgd, 0.1, 0.9, 0.5, 1);
        let mut expect_p = 1.0f64;
        let mut buf = 0.0f64;
        for step in 0..3 {
            let loss = p[0].square().sum(Kind::Float) * 0.5;
            loss.backward();
            opt.step(&mut p).unwrap();
            let g = expect_p + 0.5 * expect_p;
            buf = if step == 0 { g } else { 0.9 * buf + g };
            expect_p -= 0.1 * buf;
            let got = p[0].double_value(&[0]);
            assert!((got - expect_p).abs() < 1e-6, "step {step}: {got} vs {expect_p}");
        }
    }
}
