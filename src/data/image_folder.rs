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
//! silently smaller than the directory. So is a picture more elongated than [`MAX_ASPECT_RATIO`]
//! or with a side over [`MAX_SIDE`], refused from its header before anything is decoded, since
//! the resize would make its longer side enormous; decoding itself runs under the `image` crate's
//! limits (at most [`MAX_DECODED_BYTES`]).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits};
use ndarray::Array4;

use super::Dataset;
use crate::{Error, Result};

// ANCHOR: picture_limits
/// The longest a picture may be for its width, or wide for its height: 100 to 1.
///
/// The picture is scaled so that its shorter side is `size` *before* the centre crop, so its
/// longer side becomes `size × long / short` pixels: a 1 × 60,000 strip at `size` 32 would be
/// 1.9 million pixels long to keep 32 of them, and the resampler works in 16 bytes a pixel. Real
/// photographs and panoramas stay far below 100:1, and a centre square cut from a picture that
/// elongated would show a hundredth of it anyway.
pub const MAX_ASPECT_RATIO: u32 = 100;

/// The largest width or height decoded: 65,535, the largest a JPEG can declare.
pub const MAX_SIDE: u32 = 65_535;

/// The most bytes one picture may take once decoded: 512 MiB (the `image` crate's default), e.g.
/// an RGB picture of 13,000 × 13,000.
pub const MAX_DECODED_BYTES: u64 = 512 << 20;
// ANCHOR_END: picture_limits

/// The channels to load pictures with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColorMode {
    /// Three channels, red, green, blue. Grey pictures are repeated in all three; alpha is dropped.
    Rgb,
    /// One channel of luminance, as Pillow's `convert('L')` (and so torchvision's `Grayscale`)
    /// computes it (ITU-R 601-2 weights in fixed point). Alpha is dropped; grey pictures keep
    /// their values.
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

// ANCHOR: luma
/// The luminance of a picture, the way Pillow's `convert('L')` computes it from 8-bit RGB: the
/// ITU-R 601-2 weights 0.299, 0.587 and 0.114 held as 16-bit fixed-point integers (19595, 38470,
/// 7471, which sum to 2¹⁶, so a grey pixel keeps its value), rounded half up. Computed in floating
/// point and rounded, a weighted sum such as 104.4999… for (86, 108, 135) would give 104 where
/// Pillow gives 105. The `image` crate's own `to_luma8` uses the Rec. 709 weights instead
/// (0.2126, 0.7152, 0.0722) and would give 54 for pure red, where Pillow gives 76.
fn luma(img: &DynamicImage) -> image::GrayImage {
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let grey = rgb
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            ((19595 * r + 38470 * g + 7471 * b + (1 << 15)) >> 16) as u8
        })
        .collect();
    image::GrayImage::from_raw(w, h, grey).expect("one byte per pixel")
}
// ANCHOR_END: luma

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

// ANCHOR: check_dimensions
/// Why a picture of `w × h` pixels cannot be brought to `size × size`, if it cannot: no pixels,
/// a side over [`MAX_SIDE`], or more elongated than [`MAX_ASPECT_RATIO`].
fn check_dimensions(w: u32, h: u32, size: u32) -> std::result::Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("picture is {w}×{h}: it has no pixels"));
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!(
            "picture is {w}×{h} pixels: the loader decodes at most {MAX_SIDE} on a side"
        ));
    }
    let (long, short) = (u64::from(w.max(h)), u64::from(w.min(h)));
    if long > u64::from(MAX_ASPECT_RATIO) * short {
        return Err(format!(
            "picture is {w}×{h} pixels, more elongated than {MAX_ASPECT_RATIO}:1: scaled to \
             {size} on its shorter side it would be {} pixels long before the centre crop",
            u64::from(size) * long / short
        ));
    }
    Ok(())
}

/// The `image` crate's decoding limits: [`MAX_SIDE`] and [`MAX_DECODED_BYTES`].
fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    limits
}
// ANCHOR_END: check_dimensions

// ANCHOR: jpeg_complete
/// Checks that a JPEG file reaches its end-of-image marker (`FF D9`): `Err` with what is wrong
/// otherwise. Files that are not JPEG (no `FF D8` start) pass.
///
/// The decoder does not need this: given a file cut short, it fills the missing part of the
/// picture in and reports nothing, so a dataset would hold pictures partly made up. The walk
/// follows the file's structure: each marker segment is skipped by its stated length; after a
/// start-of-scan segment the entropy-coded data runs to the next marker, where a data byte `FF` is
/// always followed by `00` (stuffing) and the restart markers `D0`–`D7` may appear. So the `FF D9`
/// found is the file's own, not one inside a segment (an embedded thumbnail has its own).
fn jpeg_is_complete(bytes: &[u8]) -> std::result::Result<(), String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Ok(());
    }
    let cut = |at: usize| {
        Err(format!(
            "the JPEG data ends at byte {at} before its end-of-image marker (the file is cut \
             short)"
        ))
    };
    let mut i = 2;
    loop {
        // Stray bytes before a marker are skipped, as libjpeg does (with a warning), and so are
        // the fill bytes FF that may precede one.
        match bytes[i.min(bytes.len())..].iter().position(|&b| b == 0xFF) {
            Some(k) => i += k,
            None => return cut(bytes.len()),
        }
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return cut(i);
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue, // markers without a segment
            _ => {
                let Some(len) = bytes.get(i..i + 2) else {
                    return cut(bytes.len());
                };
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                if len < 2 {
                    return Err(format!("JPEG segment at byte {i} has length {len}"));
                }
                i += len;
                if marker == 0xDA {
                    // Entropy-coded data up to the next marker.
                    loop {
                        match bytes.get(i..i + 2) {
                            None => return cut(bytes.len()),
                            Some([0xFF, next])
                                if *next != 0x00 && !(0xD0..=0xD7).contains(next) =>
                            {
                                break;
                            }
                            Some([0xFF, _]) => i += 2,
                            Some(_) => i += 1,
                        }
                    }
                }
            }
        }
    }
}
// ANCHOR_END: jpeg_complete

/// Decodes one picture file and brings it to `size × size` in `mode`, as `(C, H, W)` bytes
/// appended to `out`. The dimensions are read from the header and checked first, so that a
/// picture that cannot be used costs no decoding.
fn load_one(path: &Path, size: u32, mode: ColorMode, out: &mut Vec<u8>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let reader = |limits: Limits| -> Result<_> {
        let mut r = ImageReader::new(Cursor::new(&bytes[..]))
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))?;
        r.limits(limits);
        Ok(r)
    };
    let cannot = |e: image::ImageError| Error::format(path, format!("cannot decode picture: {e}"));
    // ANCHOR: load_one_checks
    jpeg_is_complete(&bytes)
        .map_err(|m| Error::format(path, format!("cannot decode picture: {m}")))?;
    // Reading the header allocates nothing for pixels, so it runs without the limit on the sides,
    // which the decoder would report without the numbers; `check_dimensions` says them.
    let (w, h) = reader(Limits::default())?
        .into_dimensions()
        .map_err(cannot)?;
    check_dimensions(w, h, size).map_err(|m| Error::format(path, m))?;
    let img = reader(decode_limits())?.decode().map_err(cannot)?;
    // The header and the decoded picture agree; this guards the crop against a decoder that
    // would not.
    check_dimensions(img.width(), img.height(), size).map_err(|m| Error::format(path, m))?;
    // ANCHOR_END: load_one_checks
    let img = match mode {
        ColorMode::Rgb => DynamicImage::ImageRgb8(img.to_rgb8()),
        ColorMode::Grey => DynamicImage::ImageLuma8(luma(&img)),
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
/// Fails if `size` is zero or the dataset at that size would not fit in memory, if the directory
/// cannot be read or holds no picture file, or, naming the file, if a picture cannot be read or
/// decoded or is too elongated or too large (see [`MAX_ASPECT_RATIO`], [`MAX_SIDE`],
/// [`MAX_DECODED_BYTES`]).
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
    // The caller's size times the number of files may ask for more memory than there is: say so
    // instead of aborting the process.
    let bytes = files
        .len()
        .checked_mul(mode.channels() * s)
        .and_then(|b| b.checked_mul(s));
    let mut pixels = Vec::new();
    bytes
        .and_then(|b| pixels.try_reserve_exact(b).ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "image folder {}: {} pictures of {size}×{size} do not fit in memory",
                dir.display(),
                files.len()
            ))
        })?;
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

    #[test]
    fn dimensions_are_checked_at_their_bounds() {
        let r = MAX_ASPECT_RATIO;
        for (w, h) in [(1, 1), (r, 1), (1, r), (2 * r, 2), (MAX_SIDE, MAX_SIDE)] {
            assert_eq!(check_dimensions(w, h, 32), Ok(()), "{w}×{h}");
        }
        for (w, h, why) in [
            (0, 5, "no pixels"),
            (5, 0, "no pixels"),
            (r + 1, 1, "elongated"),
            (2, 2 * r + 1, "elongated"),
            (MAX_SIDE + 1, MAX_SIDE, "at most"),
            (MAX_SIDE, MAX_SIDE + 1, "at most"),
        ] {
            let err = check_dimensions(w, h, 32).unwrap_err();
            assert!(
                err.contains(why) && err.contains(&format!("{w}×{h}")),
                "{err}"
            );
        }
        // The message says how long the strip would have been.
        let err = check_dimensions(1, 60_000, 32).unwrap_err();
        assert!(err.contains("1920000 pixels long"), "{err}");
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

    /// The walk steps over what a JPEG's entropy-coded data may hold: stuffed `FF 00` bytes and
    /// the restart markers `FF D0`–`FF D7` that a restart interval (the `FF DD` segment, common in
    /// camera files) puts between blocks. A restart marker does not end the scan: taken for its
    /// end, the walk would read the stuffed `FF 00` after it as a marker and the next two data
    /// bytes (`7F 7F`) as a segment length, and jump past the file's end.
    #[test]
    fn jpeg_walk_steps_over_restart_markers_in_the_scan() {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xDD, 0x00, 0x04, 0x00, 0x01];
        // Start of scan: length 8, one component, spectral selection 0..63.
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
        let scan = [
            0x12, 0xFF, 0x00, 0x7F, 0x7F, 0xFF, 0xD0, 0x34, 0xFF, 0x00, 0x7F, 0x7F, 0xFF, 0xD7,
            0x56,
        ];
        jpeg.extend_from_slice(&scan);
        let cut = jpeg.len();
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(jpeg_is_complete(&jpeg), Ok(()));
        let err = jpeg_is_complete(&jpeg[..cut]).unwrap_err();
        assert!(err.contains(&format!("ends at byte {cut}")), "{err}");
    }

    /// The longer side is scaled and truncated, as torchvision's `int(size * long / short)`: a
    /// 10 × 3 picture at size 2 becomes 6 × 2 (6.67 truncated), not 7 × 2 (rounded up), before
    /// its centre is cut out at round(4 / 2) = 2; likewise a 3 × 10 one. A gradient along the
    /// long side makes the two resizes give other pixels (checked, so the test can tell).
    #[test]
    fn the_longer_side_is_truncated_as_torchvision() {
        let ramp = |t: u32| image::Luma([t as u8 * 25]);
        let wide = image::GrayImage::from_fn(10, 3, |x, _| ramp(x));
        let tall = image::GrayImage::from_fn(3, 10, |_, y| ramp(y));
        for (img, (w, h), (x, y)) in [(wide, (6, 2), (2, 0)), (tall, (2, 6), (0, 2))] {
            let img = DynamicImage::ImageLuma8(img);
            let resized = |w, h| {
                img.resize_exact(w, h, FilterType::Triangle)
                    .crop_imm(x, y, 2, 2)
            };
            let want = resized(w, h);
            assert_eq!(resize_and_crop(img.clone(), 2).as_bytes(), want.as_bytes());
            let rounded_up = resized(w + (w > h) as u32, h + (h > w) as u32);
            assert_ne!(rounded_up.as_bytes(), want.as_bytes());
        }
    }
}
