//! Class-conditional diffusion models whose ONNX graph holds only the noise network ε_θ(x_t, t, y):
//! the noise schedule and the settings read from the model's `semu.diffusion.*` metadata
//! ([`schedule`]), DDIM/DDPM sampling with classifier-free guidance ([`sampler`]), and a latent
//! model's VAE ([`vae`]).
pub mod files;
pub mod prompts;
pub mod sampler;
pub mod schedule;
pub mod vae;

pub use sampler::{sample, step_sequence, Network, SampleOptions};
pub use schedule::{BetaSchedule, LatentSettings, Overrides, Prediction, Settings, TextSettings};
pub use vae::Vae;
