//! Pictures of batches: PNG grids, as torchvision's `make_grid` and `save_image`.
//!
//! A batch `(N, C, H, W)` of `f32` in `[0, 1]` (`C` = 1 for grey, 3 for RGB) is laid out
//! `nrow` pictures to a row, with `padding` pixels of `pad_value` around and between them, and
//! written as an 8-bit PNG: each value becomes `clamp(v · 255 + 0.5, 0, 255)` truncated, as
//! `save_image` does (values outside `[0, 1]` are clamped; NaN becomes 0). Files are written
//! atomically ([`write_atomic`]), so a viewer never sees half a picture.

use std::path::Path;

use ndarray::{Array3, ArrayView3, ArrayView4, s};

use image::ImageEncoder;
use image::codecs::png::PngEncoder;

use super::checkpoint::write_atomic;
use crate::{Error, Result};

/// Layout of a grid of pictures; the defaults are torchvision's (`nrow=8, padding=2,
/// pad_value=0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridOptions {
    /// Pictures per row (the last row may be shorter).
    pub nrow: usize,
    /// Pixels of border around and between pictures.
    pub padding: usize,
    /// Value of the border, in the pictures' `[0, 1]` scale.
    pub pad_value: f32,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            nrow: 8,
            padding: 2,
            pad_value: 0.0,
        }
    }
}

/// Lays a batch `(N, C, H, W)` out as one picture `(C, H', W')`, as torchvision's `make_grid`:
/// `min(nrow, N)` columns, `ceil(N / columns)` rows, `padding` pixels of `pad_value` around every
/// cell. A batch of one picture is returned as it is, without padding (as torchvision).
///
/// Fails with an [`Error::Invalid`] on an empty batch or `nrow = 0`.
pub fn make_grid(images: ArrayView4<f32>, opts: &GridOptions) -> Result<Array3<f32>> {
    let (n, c, h, w) = images.dim();
    if n == 0 {
        return Err(Error::Invalid(
            "cannot make a grid of an empty batch".into(),
        ));
    }
    if opts.nrow == 0 {
        return Err(Error::Invalid(
            "grid needs at least one picture per row (nrow = 0)".into(),
        ));
    }
    if n == 1 {
        return Ok(images.index_axis(ndarray::Axis(0), 0).to_owned());
    }
    let p = opts.padding;
    let cols = opts.nrow.min(n);
    let rows = n.div_ceil(cols);
    let (cell_h, cell_w) = (h + p, w + p);
    let mut grid = Array3::from_elem((c, rows * cell_h + p, cols * cell_w + p), opts.pad_value);
    for (k, picture) in images.outer_iter().enumerate() {
        let (y, x) = ((k / cols) * cell_h + p, (k % cols) * cell_w + p);
        grid.slice_mut(s![.., y..y + h, x..x + w]).assign(&picture);
    }
    Ok(grid)
}

/// Writes one picture `(C, H, W)` (`C` = 1 or 3, values in `[0, 1]`, clamped) as an 8-bit PNG.
///
/// Errors name the path: an unsupported channel count or an oversized picture is an
/// [`Error::Invalid`], a failed write an [`Error::Io`].
pub fn save_png(path: impl AsRef<Path>, picture: ArrayView3<f32>) -> Result<()> {
    let path = path.as_ref();
    let (c, h, w) = picture.dim();
    let color = match c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => {
            return Err(Error::Invalid(format!(
                "{}: a PNG needs 1 (grey) or 3 (RGB) channels, the picture has {c}",
                path.display()
            )));
        }
    };
    let (Ok(w32), Ok(h32)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(Error::Invalid(format!(
            "{}: picture {w}×{h} is too large",
            path.display()
        )));
    };
    if w == 0 || h == 0 {
        return Err(Error::Invalid(format!(
            "{}: picture {w}×{h} has no pixels",
            path.display()
        )));
    }
    // (C, H, W) planes to the (H, W, C) interleaving of PNG rows.
    let mut bytes = Vec::with_capacity(c * h * w);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                bytes.push(to_byte(picture[[ch, y, x]]));
            }
        }
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&bytes, w32, h32, color)
        .map_err(|e| Error::Invalid(format!("{}: cannot encode PNG: {e}", path.display())))?;
    write_atomic(path, &png)
}

/// `[0, 1]` to a byte as torchvision's `save_image`: `v · 255 + 0.5`, clamped to `[0, 255]`,
/// truncated. NaN maps to 0.
fn to_byte(v: f32) -> u8 {
    (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8
}

/// Writes a batch `(N, C, H, W)` as a PNG grid, `nrow` pictures to a row, 2 pixels of black
/// padding (torchvision's defaults otherwise). See [`save_grid_with`] for the other options.
pub fn save_grid(path: impl AsRef<Path>, images: ArrayView4<f32>, nrow: usize) -> Result<()> {
    save_grid_with(
        path,
        images,
        &GridOptions {
            nrow,
            ..GridOptions::default()
        },
    )
}

/// Writes a batch `(N, C, H, W)` as a PNG grid laid out by `opts` ([`make_grid`], [`save_png`]).
/// Errors name the path.
pub fn save_grid_with(
    path: impl AsRef<Path>,
    images: ArrayView4<f32>,
    opts: &GridOptions,
) -> Result<()> {
    let path = path.as_ref();
    let grid = make_grid(images, opts).map_err(|e| match e {
        Error::Invalid(msg) => Error::Invalid(format!("{}: {msg}", path.display())),
        e => e,
    })?;
    save_png(path, grid.view())
}

/// Writes a batch `(N, C, H, W)` as a single row of pictures (a strip), e.g. the successive
/// stages of one Langevin chain. Errors name the path.
pub fn save_strip(path: impl AsRef<Path>, images: ArrayView4<f32>) -> Result<()> {
    let nrow = images.dim().0.max(1);
    save_grid(path, images, nrow)
}
