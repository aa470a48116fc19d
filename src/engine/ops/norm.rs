//! Normalisation: BatchNormalization (inference), InstanceNormalization, LayerNormalization, GroupNormalization, LRN.
use crate::engine::Registry;

pub fn register(_r: &mut Registry) {}
