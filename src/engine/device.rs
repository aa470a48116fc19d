//! `--device auto|cpu|cuda|cuda:N`.
use crate::error::{Error, Result};
use tch::Device;

pub fn parse_device(s: &str) -> Result<Device> {
    let cuda_ok = |i: usize| {
        if !tch::Cuda::is_available() {
            return Err(Error::msg(format!(
                "--device {s}: CUDA is not available on this machine (libtorch sees no GPU); use --device cpu"
            )));
        }
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            return Err(Error::msg(format!("--device {s}: only {n} CUDA device(s) present")));
        }
        Ok(Device::Cuda(i))
    };
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda_ok(0),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(i) => cuda_ok(i),
            None => Err(Error::msg(format!("--device '{s}': expected auto, cpu, cuda or cuda:N"))),
        },
    }
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
