//! A directory of PNG and JPEG pictures as an unlabelled dataset (CelebA and the like).
//!
//! Every file whose extension is `png`, `jpg` or `jpeg` (any case) directly in the directory is
//! loaded, in file-name order; other files are ignored, and so are subdirectories. Each picture is
//! resized so that its shorter side is `size` pixels, then the central `size × size` square is cut
//! out, as torchvision's `Resize(size)` followed by `CenterCrop(size)`. The resize filter is
//! bilinear (the `image` crate's `Triangle`, which widens its support when shrinking, as
//! torchvision does with `antialias=True`); pixel values therefore agree with torchvision's to
//! within rounding, not bit for bit.
//!
//! A file with a picture extension that does not decode is an error naming it: a dataset is never
//! silently smaller than the directory.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};
use ndarray::Array4;

use super::Dataset;
use crate::{Error, Result};

/// The channels to load pictures with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColorMode {
    /// Three channels, red, green, blue. Grey pictures are repeated in all three; alpha is dropped.
    Rgb,
    /// One channel of luminance (the `image` crate's conversion from RGB).
    Grey,
}

impl ColorMode {
    /// The number of channels, `C`.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Grey => 1,
        }
    }
}

/// Whether `path` has a picture extension this module loads.
fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            let e = e.to_ascii_lowercase();
            e == "png" || e == "jpg" || e == "jpeg"
        })
        .unwrap_or(false)
}

/// The PNG and JPEG files directly in `dir`, sorted by path.
pub fn picture_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if is_picture(&path) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Python's `round` for a half-integer margin: halves go to the even neighbour. torchvision's
/// `CenterCrop` computes its offset as `int(round((h - size) / 2.0))`.
fn centre_offset(extra: u32) -> u32 {
    let half = extra / 2;
    if extra % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Resizes `img` so its shorter side is `size` (the longer one scaled in proportion and
/// truncated, as torchvision) and cuts out the central `size × size` square.
fn resize_and_crop(img: DynamicImage, size: u32) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let scale = |long: u32, short: u32| {
        let l = u64::from(size) * u64::from(long) / u64::from(short);
        u32::try_from(l).unwrap_or(u32::MAX).max(size)
    };
    let (nw, nh) = if w <= h {
        (size, scale(h, w))
    } else {
        (scale(w, h), size)
    };
    let img = if (nw, nh) == (w, h) {
        img
    } else {
        img.resize_exact(nw, nh, FilterType::Triangle)
    };
    img.crop_imm(
        centre_offset(nw - size),
        centre_offset(nh - size),
        size,
        size,
    )
}

/// Decodes one picture file and brings it to `size × size` in `mode`, as `(C, H, W)` bytes
/// appended to `out`.
fn load_one(path: &Path, size: u32, mode: ColorMode, out: &mut Vec<u8>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::format(path, format!("cannot decode picture: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::format(path, "picture has no pixels"));
    }
    let img = match mode {
        ColorMode::Rgb => DynamicImage::ImageRgb8(img.to_rgb8()),
        ColorMode::Grey => DynamicImage::ImageLuma8(img.to_luma8()),
    };
    let img = resize_and_crop(img, size);
    // The image crate interleaves channels, (H, W, C); the dataset wants planes, (C, H, W).
    let hwc = img.as_bytes();
    let c = mode.channels();
    let start = out.len();
    out.resize(start + hwc.len(), 0);
    let plane = hwc.len() / c;
    for (p, pixel) in hwc.chunks_exact(c).enumerate() {
        for (ch, &v) in pixel.iter().enumerate() {
            out[start + ch * plane + p] = v;
        }
    }
    Ok(())
}

/// Loads every PNG/JPEG directly in `dir` (sorted by name) as a `(N, C, size, size)` dataset
/// without labels; see the [module docs](self) for the resize and crop.
///
/// Fails if `size` is zero, if the directory cannot be read or holds no picture file, or, naming
/// the file, if a picture cannot be read or decoded.
pub fn load(dir: impl AsRef<Path>, size: u32, mode: ColorMode) -> Result<Dataset> {
    let dir = dir.as_ref();
    if size == 0 {
        return Err(Error::Invalid(
            "image folder: size must be at least 1".into(),
        ));
    }
    let files = picture_files(dir)?;
    if files.is_empty() {
        return Err(Error::format(dir, "no PNG or JPEG files in this directory"));
    }
    let s = size as usize;
    let mut pixels = Vec::with_capacity(files.len() * mode.channels() * s * s);
    for file in &files {
        load_one(file, size, mode, &mut pixels)?;
    }
    let images = Array4::from_shape_vec((files.len(), mode.channels(), s, s), pixels)
        .map_err(|e| Error::Invalid(format!("image folder {}: {e}", dir.display())))?;
    Dataset::new(images, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_offset_rounds_half_to_even_as_python() {
        // int(round(extra / 2.0)) in Python 3.
        let python = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 2),
            (6, 3),
            (7, 4),
            (9, 4),
        ];
        for (extra, want) in python {
            assert_eq!(centre_offset(extra), want, "extra {extra}");
        }
    }

    #[test]
    fn resize_keeps_aspect_and_crops_the_centre() {
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(10, 4, |x, _| {
            image::Luma([x as u8 * 20])
        }));
        let out = resize_and_crop(img, 2);
        assert_eq!((out.width(), out.height()), (2, 2));
        // 10×4 → 5×2 (shorter side 2), centre crop starts at round(1.5) = 2.
        let wide = DynamicImage::ImageLuma8(image::GrayImage::new(7, 3));
        let out = resize_and_crop(wide, 3);
        assert_eq!((out.width(), out.height()), (3, 3));
    }

    /// Which pixels the crop keeps, on pictures whose shorter side is already `size` (so nothing
    /// is resampled): a margin of 3 starts the crop at round(1.5) = 2, across for a wide picture
    /// and down for a tall one, and every kept pixel is the one at that offset.
    #[test]
    fn the_crop_keeps_the_central_pixels() {
        let value = |x: u32, y: u32| image::Luma([(10 * y + x) as u8]);
        for (w, h, dx, dy) in [(6, 3, 2, 0), (3, 6, 0, 2)] {
            let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(w, h, value));
            let out = resize_and_crop(img, 3).into_luma8();
            assert_eq!(out.dimensions(), (3, 3));
            for (x, y, p) in out.enumerate_pixels() {
                assert_eq!(*p, value(x + dx, y + dy), "{w}×{h}: pixel ({x}, {y})");
            }
        }
    }
}
