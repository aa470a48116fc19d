//! ImageDecoder (opset 20): a 1-D uint8 tensor of encoded bytes (BMP, JPEG, PNG, TIFF, WebP,
//! PNM) → uint8 pixels, height × width × channels. Decoding runs on the CPU with the `image`
//! crate; pixel data has no gradient.
//!
//! Exactness: lossless formats match the reference (Pillow) bit for bit. JPEG decoders may differ
//! by ±1 in places (IDCT and chroma upsampling rounding), as the spec allows. JPEG 2000 has no
//! decoder here and is a runtime error.
use crate::data::image_folder::luma601;
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use image::{ColorType, DynamicImage};
use tch::{Device, Kind, Tensor};

pub fn register(r: &mut Registry) {
    r.add("ImageDecoder", 20, image_decoder);
}

#[derive(Clone, Copy)]
enum PixelFormat {
    Rgb,
    Bgr,
    Grayscale,
}

impl PixelFormat {
    fn channels(self) -> i64 {
        match self {
            PixelFormat::Grayscale => 1,
            _ => 3,
        }
    }
}

fn image_decoder(ctx: &OpCtx) -> Result<BoxOp> {
    let fmt = match ctx.node.get_s("pixel_format")?.as_deref().unwrap_or("RGB") {
        "RGB" => PixelFormat::Rgb,
        "BGR" => PixelFormat::Bgr,
        "Grayscale" => PixelFormat::Grayscale,
        other => return Err(ctx.node.attr_err("pixel_format", format!("'{other}' is not RGB, BGR or Grayscale"))),
    };
    op(move |x| {
        let t = x.req(0)?;
        if t.kind() != Kind::Uint8 || t.dim() != 1 {
            return Err(x.err(format!(
                "expected a 1-D uint8 tensor of encoded bytes, got {:?} {:?}",
                t.kind(),
                t.size()
            )));
        }
        let bytes = Vec::<u8>::try_from(&t.f_to_device(Device::Cpu)?.f_contiguous()?)?;
        if is_jpeg2000(&bytes) {
            return Err(x.err("JPEG 2000 images are not supported (no decoder available)"));
        }
        let reader = image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
            .with_guessed_format()
            .map_err(|e| x.err(format!("cannot read the image ({e})")))?;
        let (h, w, data) = match crate::limits::decode_image(reader) {
            Ok(img) => pixels(&img, fmt),
            Err(e) if e.starts_with("too large") => return Err(x.err(e)),
            // The spec: an undecodable stream gives an empty image, not an error.
            Err(e) => {
                tracing::warn!(node = %x.node.label(), "ImageDecoder: cannot decode the image ({e}); output is empty");
                (0, 0, Vec::new())
            }
        };
        let y = Tensor::f_from_slice(&data)?.f_reshape([h, w, fmt.channels()])?;
        Ok(vec![y.f_to_device(t.device())?])
    })
}

/// JP2 container signature box, or a raw JPEG 2000 codestream (SOC + SIZ markers).
fn is_jpeg2000(b: &[u8]) -> bool {
    b.starts_with(&[0, 0, 0, 0x0C, b'j', b'P', b' ', b' ', 0x0D, 0x0A, 0x87, 0x0A])
        || b.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
}

/// Height, width and row-major HWC bytes in the requested layout (alpha is dropped).
fn pixels(img: &DynamicImage, fmt: PixelFormat) -> (i64, i64, Vec<u8>) {
    let (h, w) = (img.height() as i64, img.width() as i64);
    let data = match fmt {
        PixelFormat::Rgb => img.to_rgb8().into_raw(),
        PixelFormat::Bgr => {
            let mut v = img.to_rgb8().into_raw();
            v.chunks_exact_mut(3).for_each(|p| p.swap(0, 2));
            v
        }
        PixelFormat::Grayscale => match img.color() {
            ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16 => img.to_luma8().into_raw(),
            // Colour → luma as Pillow's convert("L") (the ImageFolder reader's grayscale too).
            _ => img.to_rgb8().into_raw().chunks_exact(3).map(luma601).collect(),
        },
    };
    (h, w, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Inputs;
    use crate::onnx::build::{attr_string, node};

    fn decode(fmt: &str, bytes: &[u8]) -> Result<Tensor> {
        let mut n = node("ImageDecoder", &["x"], &["y"]);
        n.attribute = vec![attr_string("pixel_format", fmt)];
        let op = image_decoder(&OpCtx::new(&n, 20))?;
        let x = Tensor::from_slice(bytes);
        Ok(op.run(&Inputs { node: &n, vals: vec![Some(&x)] })?.remove(0))
    }

    fn bytes(t: &Tensor) -> Vec<u8> {
        Vec::<u8>::try_from(&t.reshape([-1])).unwrap()
    }

    #[test]
    fn decodes_png_in_each_layout() {
        let img = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 50, y as u8 * 100, 7]));
        let mut png = std::io::Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img.clone()).write_to(&mut png, image::ImageFormat::Png).unwrap();
        let png = png.into_inner();
        let rgb = decode("RGB", &png).unwrap();
        assert_eq!((rgb.kind(), rgb.size()), (Kind::Uint8, vec![2, 3, 3]));
        assert_eq!(bytes(&rgb), img.as_raw().as_slice());
        let bgr: Vec<u8> = img.as_raw().chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
        assert_eq!(bytes(&decode("BGR", &png).unwrap()), bgr);
        let gray = decode("Grayscale", &png).unwrap();
        assert_eq!(gray.size(), vec![2, 3, 1]);
        assert_eq!(bytes(&gray), img.as_raw().chunks(3).map(luma601).collect::<Vec<_>>());
        // Undecodable data gives an empty image (the spec); JPEG 2000 is an error.
        assert_eq!(decode("RGB", &[1, 2, 3]).unwrap().size(), vec![0, 0, 3]);
        assert!(decode("RGB", &[0xFF, 0x4F, 0xFF, 0x51, 0, 0]).is_err());
        assert!(decode("YUV", &png).is_err());
    }

    #[test]
    fn luma_matches_601_weights() {
        assert_eq!(luma601(&[255, 255, 255]), 255);
        assert_eq!(luma601(&[0, 0, 0]), 0);
        // 0.299·200 + 0.587·100 + 0.114·50 = 124.25
        assert_eq!(luma601(&[200, 100, 50]), 124);
    }

    #[test]
    fn detects_jpeg2000() {
        assert!(is_jpeg2000(&[0xFF, 0x4F, 0xFF, 0x51, 0]));
        assert!(!is_jpeg2000(&[0xFF, 0xD8, 0xFF, 0xE0]));
    }
}
