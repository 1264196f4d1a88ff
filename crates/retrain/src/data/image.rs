//! Image files to tensors: decode (JPEG, PNG, GIF, BMP, WebP), honour EXIF orientation, convert
//! to RGB, resize the shorter side with a real interpolating filter, center-crop.

use crate::error::{Error, Result};
use crate::zoo::{Interpolation, PretrainedConfig};
use burn::tensor::{Device, Tensor, TensorData};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// Largest width or height accepted, and most bytes a decoder may allocate (decompression bombs).
const MAX_SIDE: u32 = 30_000;
const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Decode an image file to 8-bit RGB, upright as its EXIF orientation says.
///
/// Grayscale, alpha (dropped, like PIL's `convert("RGB")`), 16-bit and CMYK JPEGs all become RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_rgb(&bytes).map_err(|message| Error::Image {
        path: path.to_path_buf(),
        message,
    })
}

/// Decode image bytes to upright 8-bit RGB; the error says why it failed.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not a recognized image format".into());
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(reason)?;
    let orientation = decoder.orientation().map_err(reason)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(reason)?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// Why a decode failed, in one line; over-limit images (decompression bombs) say which limit.
fn reason(error: image::ImageError) -> String {
    match error {
        image::ImageError::Limits(_) => format!(
            "the image is larger than the decoding limits ({MAX_SIDE} pixels a side, {} MiB decoded)",
            MAX_DECODE_BYTES >> 20
        ),
        other => other.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// `image`, or its `region` (left, top, width, height), resized to `width` x `height` with the
/// interpolation's filter (Pillow's convolution resampling, as torchvision and timm resize): the
/// `fast_image_resize` crate, SIMD chosen at run time.
pub fn resize_region(
    image: &RgbImage,
    region: Option<[u32; 4]>,
    width: u32,
    height: u32,
    interpolation: Interpolation,
) -> RgbImage {
    let algorithm = match interpolation {
        Interpolation::Nearest => ResizeAlg::Nearest,
        Interpolation::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        Interpolation::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
    };
    let mut options = ResizeOptions::new().resize_alg(algorithm);
    if let Some([left, top, w, h]) = region {
        options = options.crop(left.into(), top.into(), w.into(), h.into());
    }
    let source = ImageRef::new(
        image.width(),
        image.height(),
        image.as_raw(),
        PixelType::U8x3,
    )
    .expect("an RgbImage holds width x height RGB pixels");
    let mut resized = Image::new(width.max(1), height.max(1), PixelType::U8x3);
    Resizer::new()
        .resize(&source, &mut resized, &options)
        .expect("RGB to RGB, non-empty sizes, a crop inside the image");
    RgbImage::from_raw(width.max(1), height.max(1), resized.into_vec())
        .expect("the resized buffer holds width x height RGB pixels")
}

/// Resize so the shorter side is `short`, keeping the aspect ratio; the longer side is truncated
/// like torchvision's `Resize(int)`.
pub fn resize_shorter(image: &RgbImage, short: usize, interpolation: Interpolation) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (nw, nh) = if w <= h {
        (short, (short * h / w).max(1))
    } else {
        ((short * w / h).max(1), short)
    };
    resize_region(image, None, nw as u32, nh as u32, interpolation)
}

/// Crop the center `height` x `width` (the image must be at least that large). Offsets round
/// half to even, like torchvision's `CenterCrop` (Python's `round`).
pub fn center_crop(image: &RgbImage, height: usize, width: usize) -> RgbImage {
    let [left, top] = center_offsets(image, height, width);
    image::imageops::crop_imm(image, left, top, width as u32, height as u32).to_image()
}

/// Left and top of the centered `height` x `width` crop of `image` ([`center_crop`]'s).
fn center_offsets(image: &RgbImage, height: usize, width: usize) -> [u32; 2] {
    let offset = |size: u32, crop: usize| {
        ((f64::from(size) - crop as f64) / 2.0)
            .round_ties_even()
            .max(0.0) as u32
    };
    [offset(image.width(), width), offset(image.height(), height)]
}

/// [`center_crop`] as CHW values in [0, 255] ([`to_chw`]), read from `image` in place instead
/// of through a cropped copy.
pub fn center_chw(image: &RgbImage, height: usize, width: usize) -> Vec<f32> {
    if (image.height() as usize) < height || (image.width() as usize) < width {
        return to_chw(&center_crop(image, height, width));
    }
    let [left, top] = center_offsets(image, height, width).map(|v| v as usize);
    let (plane, stride) = (height * width, image.width() as usize * 3);
    let mut out = vec![0.0; 3 * plane];
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    for (y, row) in image
        .as_raw()
        .chunks_exact(stride)
        .skip(top)
        .take(height)
        .enumerate()
    {
        let pixels = row[left * 3..(left + width) * 3].chunks_exact(3);
        let at = y * width..(y + 1) * width;
        for (((r, g), b), px) in red[at.clone()]
            .iter_mut()
            .zip(&mut green[at.clone()])
            .zip(&mut blue[at])
            .zip(pixels)
        {
            (*r, *g, *b) = (px[0].into(), px[1].into(), px[2].into());
        }
    }
    out
}

/// Resize the shorter side and center-crop as the pretrained config says; CHW values in [0, 255].
pub fn prepare(image: &RgbImage, config: &PretrainedConfig) -> Vec<f32> {
    let [h, w] = config.input_size;
    let resized = resize_shorter(
        image,
        config.resize_to().max(h.max(w)),
        config.interpolation,
    );
    center_chw(&resized, h, w)
}

/// Planar CHW f32 values in [0, 255]: [`center_chw`] of the whole image.
pub fn to_chw(image: &RgbImage) -> Vec<f32> {
    center_chw(image, image.height() as usize, image.width() as usize)
}

/// Decode and prepare one file for a pretrained model.
pub fn load_for_model(path: &Path, config: &PretrainedConfig) -> Result<Vec<f32>> {
    Ok(prepare(&load_rgb(path)?, config))
}

/// Stack prepared CHW images of `height` x `width` into an NCHW tensor.
pub fn batch_tensor(
    images: &[Vec<f32>],
    height: usize,
    width: usize,
    device: &Device,
) -> Tensor<4> {
    let data: Vec<f32> = images.concat();
    Tensor::from_data(
        TensorData::new(data, [images.len(), 3, height, width]),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb};

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bytes)
            .write_image(
                img,
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        bytes
    }

    #[test]
    fn resizes_shorter_side_and_crops_center() {
        let mut img = RgbImage::new(40, 20);
        for x in 0..40 {
            for y in 0..20 {
                img.put_pixel(x, y, Rgb([if x < 20 { 0 } else { 255 }, 0, 0]));
            }
        }
        let r = resize_shorter(&img, 10, Interpolation::Bilinear);
        assert_eq!((r.width(), r.height()), (20, 10));
        let c = center_crop(&r, 10, 10);
        assert_eq!((c.width(), c.height()), (10, 10));
        // Left half dark, right half bright: a real resize, not a reshape.
        assert!(c.get_pixel(0, 5)[0] < 30);
        assert!(c.get_pixel(9, 5)[0] > 225);
    }

    #[test]
    fn chw_layout_puts_channels_in_planes() {
        let img = RgbImage::from_pixel(2, 1, Rgb([1, 2, 3]));
        assert_eq!(to_chw(&img), vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    }

    #[test]
    fn center_chw_reads_the_crop_in_place() {
        // Every pixel distinct; odd and even margins (half rounded to even), and an image
        // smaller than the crop (the cropped copy's rule: clamped).
        let img = RgbImage::from_fn(9, 6, |x, y| Rgb([x as u8, y as u8, (x * 10 + y) as u8]));
        for (h, w) in [(4, 4), (3, 6), (6, 9), (1, 1), (8, 12)] {
            assert_eq!(
                center_chw(&img, h, w),
                to_chw(&center_crop(&img, h, w)),
                "{h}x{w}"
            );
        }
    }

    #[test]
    fn decodes_png_and_refuses_garbage() {
        let img = RgbImage::from_pixel(3, 2, Rgb([9, 8, 7]));
        let decoded = decode_rgb(&png(&img)).unwrap();
        assert_eq!(decoded.get_pixel(2, 1), &Rgb([9, 8, 7]));
        assert!(decode_rgb(b"").unwrap_err().contains("empty"));
        assert!(decode_rgb(b"definitely not an image").is_err());
        let truncated = png(&RgbImage::from_pixel(64, 64, Rgb([1, 2, 3])));
        assert!(decode_rgb(&truncated[..truncated.len() / 2]).is_err());
    }
}
