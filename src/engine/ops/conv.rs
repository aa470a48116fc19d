//! Convolutions: Conv and ConvTranspose with auto_pad, dilations, groups, output_padding.
use crate::engine::Registry;

pub fn register(_r: &mut Registry) {}
