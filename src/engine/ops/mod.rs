//! ONNX ops, one small builder each, grouped by family. Each family registers its ops here.
use super::Registry;

pub mod util;

pub mod activation;
pub mod attention;
pub mod cast;
pub mod control;
pub mod conv;
pub mod elementwise;
pub mod image;
pub mod index;
pub mod layout;
pub mod linalg;
pub mod logic;
pub mod loss;
pub mod misc;
pub mod ml;
pub mod nms;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod random;
pub mod reduce;
pub mod resize;
pub mod rnn;
pub mod sample;
pub mod sequence;
pub mod shape;
pub mod signal;
pub mod softmax;
pub mod ssm;
pub mod strings;
pub mod training;

pub fn register_all(r: &mut Registry) {
    elementwise::register(r);
    activation::register(r);
    logic::register(r);
    cast::register(r);
    conv::register(r);
    pool::register(r);
    norm::register(r);
    linalg::register(r);
    softmax::register(r);
    shape::register(r);
    layout::register(r);
    index::register(r);
    reduce::register(r);
    resize::register(r);
    sequence::register(r);
    control::register(r);
    training::register(r);
    loss::register(r);
    quant::register(r);
    signal::register(r);
    misc::register(r);
    attention::register(r);
    sample::register(r);
    nms::register(r);
    rnn::register(r);
    ssm::register(r);
    strings::register(r);
    image::register(r);
    ml::register(r);
    random::register(r);
}
