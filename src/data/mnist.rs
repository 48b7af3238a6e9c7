//! MNIST in its IDX file format (Fashion-MNIST uses the same files and ten classes too; EMNIST's
//! IDX files have more classes, and the loader refuses a label above 9).
//!
//! An IDX file is a 4-byte magic number, one big-endian `u32` per dimension, then the data,
//! row-major. The magic number is two zero bytes, a type code (`0x08` for unsigned bytes, the only
//! type MNIST uses) and the number of dimensions: `00 00 08 03` for images `(N, rows, cols)`,
//! `00 00 08 01` for labels `(N)`. Files may be gzip-compressed (as downloaded) or raw; the magic
//! bytes `1f 8b` tell which.
//!
//! The loader checks everything the header claims: the magic number, that no dimension is zero,
//! that the file holds exactly the announced number of bytes (no fewer, no more), and that the label
//! file has one label per image.

use std::path::{Path, PathBuf};

use ndarray::Array4;

use super::{Dataset, MAX_DATA_FILE, Split, read_maybe_gzip};
use crate::{Error, Result};

/// The IDX type code for unsigned bytes.
const IDX_U8: u8 = 0x08;

// ANCHOR: idx_header
/// Parses the header of an IDX file of unsigned bytes with `ndim` dimensions and checks that the
/// data that follows is exactly as long as the dimensions say. Returns the dimensions and the data.
fn parse_idx<'a>(path: &Path, bytes: &'a [u8], ndim: u8) -> Result<(Vec<usize>, &'a [u8])> {
    let fail = |msg: String| Err(Error::format(path, msg));
    let expected_magic = [0, 0, IDX_U8, ndim];
    let Some(magic) = bytes.get(..4) else {
        return fail(format!(
            "{} bytes long, too short for an IDX header",
            bytes.len()
        ));
    };
    if magic != expected_magic {
        return fail(format!(
            "wrong magic number {:02x?}, expected {:02x?} (IDX, unsigned bytes, {ndim} dimension{})",
            magic,
            expected_magic,
            if ndim == 1 { "" } else { "s" }
        ));
    }
    let header_len = 4 + 4 * usize::from(ndim);
    let Some(dim_bytes) = bytes.get(4..header_len) else {
        return fail(format!(
            "truncated IDX header: {} bytes, need {header_len}",
            bytes.len()
        ));
    };
    // Each dimension is a big-endian u32.
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    if dims.contains(&0) {
        return fail(format!("IDX header has a zero dimension: {dims:?}"));
    }
    let Some(count) = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) else {
        return fail(format!("IDX dimensions {dims:?} overflow"));
    };
    let data = &bytes[header_len..];
    if data.len() != count {
        return fail(format!(
            "IDX header announces dimensions {dims:?}, {count} bytes of data, but the file holds {} \
             bytes after the header ({})",
            data.len(),
            if data.len() < count {
                "truncated"
            } else {
                "trailing bytes"
            }
        ));
    }
    Ok((dims, data))
}
// ANCHOR_END: idx_header

/// Loads MNIST-style images (`idx3`) and, if a path is given, their labels (`idx1`).
///
/// Returns a [`Dataset`] of shape `(N, 1, rows, cols)`. Either file may be raw or gzip. Fails with
/// an [`Error::Format`] naming the file on a wrong magic number, a zero dimension, a byte count
/// that differs from the header's, a corrupt gzip stream, a file of more than 1 GiB (after
/// gunzipping), a label count different from the image count, or a label outside 0..=9.
pub fn load(images: impl AsRef<Path>, labels: Option<&Path>) -> Result<Dataset> {
    let images_path = images.as_ref();
    let bytes = read_maybe_gzip(images_path, MAX_DATA_FILE)?;
    let (dims, data) = parse_idx(images_path, &bytes, 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    let pixels = Array4::from_shape_vec((n, 1, rows, cols), data.to_vec())
        .map_err(|e| Error::format(images_path, e.to_string()))?;

    let labels = match labels {
        None => None,
        Some(labels_path) => {
            let bytes = read_maybe_gzip(labels_path, MAX_DATA_FILE)?;
            let (dims, data) = parse_idx(labels_path, &bytes, 1)?;
            if dims[0] != n {
                return Err(Error::format(
                    labels_path,
                    format!(
                        "holds {} labels but {} holds {n} images",
                        dims[0],
                        images_path.display()
                    ),
                ));
            }
            if let Some(i) = data.iter().position(|&l| l > 9) {
                return Err(Error::format(
                    labels_path,
                    format!("label {i} is {}, out of range 0..=9", data[i]),
                ));
            }
            Some(data.to_vec())
        }
    };
    Dataset::new(pixels, labels)
}

/// Finds `name` or `name.gz` in `dir`; both present is an error (which one is meant?).
fn find_one(dir: &Path, name: &str) -> Result<PathBuf> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    match (raw.is_file(), gz.is_file()) {
        (true, false) => Ok(raw),
        (false, true) => Ok(gz),
        (true, true) => Err(Error::format(
            dir,
            format!("both {name} and {name}.gz are present; remove one"),
        )),
        (false, false) if raw.is_dir() => Err(Error::format(&raw, "is a directory, not a file")),
        (false, false) => Err(Error::format(
            dir,
            format!("neither {name} nor {name}.gz found"),
        )),
    }
}

/// Loads the MNIST images and labels of `split` from a directory holding the files under their
/// official names: `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` for
/// [`Split::Train`], `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` for [`Split::Test`],
/// each with or without a `.gz` suffix.
pub fn load_dir(dir: impl AsRef<Path>, split: Split) -> Result<Dataset> {
    let dir = dir.as_ref();
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = find_one(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = find_one(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    load(images, Some(&labels))
}
