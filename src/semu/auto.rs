//! `--lr auto` and the stop rule: train until the forget set is forgotten to the level a model
//! retrained without it would show (the *target*), with the smallest learning rate that gets
//! there within the epoch budget. The smallest such rate moves the model least: larger ones
//! overshoot in their first steps and drag the other classes along (measured on digits: the
//! usable band is about one decade wide and moves with the model).
use super::optim::OptimizerKind;
use super::train::EpochStats;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::task::{Model, TaskKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A learning rate, or `auto` (chosen by the probe).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Lr {
    #[default]
    Auto,
    Fixed(f64),
}

impl Lr {
    /// The fixed rate, or `default` for `auto` (methods that do not probe: the baselines).
    pub fn or(self, default: f64) -> f64 {
        match self {
            Lr::Auto => default,
            Lr::Fixed(v) => v,
        }
    }
}

impl fmt::Display for Lr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lr::Auto => f.write_str("auto"),
            Lr::Fixed(v) => write!(f, "{v:e}"),
        }
    }
}

impl FromStr for Lr {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Lr::Auto);
        }
        match s.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Ok(Lr::Fixed(v)),
            _ => Err(format!("'{s}' is not a learning rate: give a number > 0 or `auto`")),
        }
    }
}

impl Serialize for Lr {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Lr::Auto => s.serialize_str("auto"),
            Lr::Fixed(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for Lr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(v) => Ok(Lr::Fixed(v)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What "forgotten" is measured by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Forget-set accuracy at most the value.
    Accuracy,
    /// Forget-set median loss (true targets) at least the value.
    Loss,
}

/// The level a model retrained without the forget set would show on it, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub metric: Metric,
    pub value: f64,
    pub reason: String,
}

impl Target {
    pub fn reached(&self, e: &EpochStats) -> bool {
        match self.metric {
            Metric::Accuracy => e.forget_acc <= self.value,
            Metric::Loss => e.forget_loss.is_some_and(|l| l >= self.value),
        }
    }
    /// Where an epoch stands on the target's metric, for messages.
    pub fn show(&self, e: &EpochStats) -> String {
        match self.metric {
            Metric::Accuracy => {
                format!("forget accuracy {:.2}% (target ≤ {:.2}%)", 100.0 * e.forget_acc, 100.0 * self.value)
            }
            Metric::Loss => {
                format!("forget loss {:.4} (target ≥ {:.4})", e.forget_loss.unwrap_or(f64::NAN), self.value)
            }
        }
    }
    /// How far an epoch is from the target (0 once reached), to rank runs that missed it.
    fn distance(&self, e: &EpochStats) -> f64 {
        match self.metric {
            Metric::Accuracy => (e.forget_acc - self.value).max(0.0),
            Metric::Loss => (self.value - e.forget_loss.unwrap_or(0.0)).max(0.0) / self.value.max(1e-12),
        }
    }
}

/// The target for `forget`. Whole classes: accuracy 0 (a model that never saw them cannot name
/// them). Samples: the input model's mean loss on held-out `test` data, the level a model that
/// never saw the forget set shows on it (accuracy moves in steps of one sample and says nothing
/// of confidence, which is what membership inference reads). None without either.
pub fn forget_target(
    net: &Model,
    forget_classes: &[i64],
    test: Option<&dyn Dataset>,
    batch: usize,
) -> Result<Option<Target>> {
    if !forget_classes.is_empty() {
        let reason = format!(
            "class forgetting (class {}): a model retrained without it scores 0% on it",
            forget_classes.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        );
        return Ok(Some(Target { metric: Metric::Accuracy, value: 0.0, reason }));
    }
    let Some(test) = test else { return Ok(None) };
    let loss = net.median_loss(test, batch, &HashMap::new())?;
    let per = if net.task == TaskKind::CausalLm { "per token" } else { "per sample" };
    let reason = format!("sample forgetting: the input model's median loss {per} on the test data, {loss:.4}");
    Ok(Some(Target { metric: Metric::Loss, value: loss, reason }))
}

/// The rates `auto` tries, smallest first: half-decade steps over the optimizer's usual range.
pub fn candidates(opt: OptimizerKind) -> Vec<f64> {
    match opt {
        OptimizerKind::Sgd => vec![1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
        OptimizerKind::Adam => vec![1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    }
}

/// Without a target `auto` cannot probe: the optimizer's middle rate (measured on digits).
pub fn fallback(opt: OptimizerKind) -> f64 {
    candidates(opt)[2]
}

/// One probed rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    pub lr: f64,
    pub epochs: usize,
    pub forget_acc: f64,
    pub forget_loss: Option<f64>,
    pub reached: bool,
}

/// What `auto` chose and why (in the report and the log).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LrChoice {
    pub lr: f64,
    pub reason: String,
    pub target: Option<Target>,
    pub tried: Vec<Trial>,
}

/// Tries `candidates` in order with `run(lr)` (a full training run from R = 0 that stops at the
/// target) and keeps the first that reaches the target; when none does, the one that came
/// closest. `run` returns its epochs and a snapshot of what it trained; the chosen run's pair is
/// returned with the choice.
pub fn choose<S>(
    candidates: &[f64],
    target: &Target,
    mut run: impl FnMut(f64) -> Result<(Vec<EpochStats>, S)>,
) -> Result<(LrChoice, Vec<EpochStats>, S)> {
    let mut tried = Vec::new();
    let mut best: Option<(f64, f64, Vec<EpochStats>, S)> = None;
    for &lr in candidates {
        let (epochs, state) = run(lr)?;
        let last = epochs.last().ok_or_else(|| Error::msg("lr probe: a run trained no epoch"))?;
        let reached = target.reached(last);
        let t = Trial { lr, epochs: epochs.len(), forget_acc: last.forget_acc, forget_loss: last.forget_loss, reached };
        tried.push(t);
        let at = target.show(last);
        tracing::info!("lr {lr:e}: {at} after {} epoch(s){}", epochs.len(), if reached { ": reached" } else { "" });
        if reached {
            let reason = "the smallest rate that reached the target".to_string();
            return Ok((LrChoice { lr, reason, target: Some(target.clone()), tried }, epochs, state));
        }
        let d = target.distance(last);
        if best.as_ref().is_none_or(|b| d < b.1) {
            best = Some((lr, d, epochs, state));
        }
    }
    let (lr, _, epochs, state) = best.ok_or_else(|| Error::msg("lr probe: no candidate rate"))?;
    let reason = "no rate reached the target within the epochs; this one came closest: give more --epochs".to_string();
    tracing::warn!("lr auto: {reason}");
    Ok((LrChoice { lr, reason, target: Some(target.clone()), tried }, epochs, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_parses_numbers_and_auto_and_refuses_the_rest() {
        assert_eq!("auto".parse::<Lr>().unwrap(), Lr::Auto);
        assert_eq!("3e-4".parse::<Lr>().unwrap(), Lr::Fixed(3e-4));
        for bad in ["0", "-1", "nan", "inf", "fast"] {
            assert!(bad.parse::<Lr>().is_err(), "{bad}");
        }
        let t: HashMap<String, Lr> = toml::from_str("a = 0.01\nb = \"auto\"").unwrap();
        assert_eq!((t["a"], t["b"]), (Lr::Fixed(0.01), Lr::Auto));
        assert_eq!(serde_json::to_string(&Lr::Auto).unwrap(), "\"auto\"");
    }

    #[test]
    fn candidates_rise_by_half_decades() {
        let c = candidates(OptimizerKind::Sgd);
        assert_eq!(c.len(), 7);
        assert_eq!((c[0], c[1], c[6]), (1e-4, 3e-4, 1e-1), "exact decimal rates, as printed");
        assert!(c.windows(2).all(|w| w[1] > w[0]));
    }

    fn stats(acc: f64) -> EpochStats {
        EpochStats {
            epoch: 1,
            loss: 0.0,
            forget_acc: acc,
            forget_loss: None,
            retain_acc: None,
            seconds: 0.0,
            batches: None,
        }
    }

    #[test]
    fn choose_keeps_the_smallest_rate_that_reaches_the_target() {
        let target = Target { metric: Metric::Accuracy, value: 0.0, reason: "t".into() };
        let mut seen = Vec::new();
        let (c, _, s) = choose(&[1.0, 2.0, 3.0, 4.0], &target, |lr| {
            seen.push(lr);
            Ok((vec![stats(if lr >= 3.0 { 0.0 } else { 0.5 })], lr))
        })
        .unwrap();
        assert_eq!((c.lr, s), (3.0, 3.0));
        assert_eq!(seen, [1.0, 2.0, 3.0], "stops probing at the first rate that reaches the target");
        assert_eq!(c.tried.iter().map(|t| t.reached).collect::<Vec<_>>(), [false, false, true]);
    }

    #[test]
    fn choose_falls_back_to_the_closest_rate_and_says_so() {
        let target = Target { metric: Metric::Accuracy, value: 0.0, reason: "t".into() };
        let (c, _, s) =
            choose(&[1.0, 2.0, 3.0], &target, |lr| Ok((vec![stats([0.4, 0.1, 0.2][lr as usize - 1])], lr))).unwrap();
        assert_eq!((c.lr, s), (2.0, 2.0));
        assert!(c.reason.contains("no rate reached"), "{}", c.reason);
    }
}
