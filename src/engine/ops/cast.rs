//! Type conversion and pass-through ops: Cast, CastLike, Identity, Dropout (inference).
use crate::engine::Registry;

pub fn register(_r: &mut Registry) {}
