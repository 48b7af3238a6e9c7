//! Image datasets: loading them from their file formats, and feeding them to training in shuffled,
//! transformed mini-batches.
//!
//! # Formats
//!
//! | module | format | typical source |
//! | --- | --- | --- |
//! | [`mnist`] | IDX (`idx3` images, `idx1` labels), raw or gzip | MNIST, Fashion-MNIST |
//! | [`cifar10`] | CIFAR-10 "binary version" batches, raw or gzip | CIFAR-10 |
//! | [`image_folder`] | every PNG/JPEG in a directory, resized and centre-cropped | CelebA, your own pictures |
//!
//! Every loader returns a [`Dataset`]: the whole set of pictures held in memory as 8-bit
//! intensities, laid out `(N, C, H, W)`, with labels where the format has them. Pixels stay `u8`
//! in memory (a quarter of the size of `f32`: the 50,000 CIFAR-10 training images take 150 MiB
//! instead of 600 MiB); they become `f32` in `[0, 1]` only when a mini-batch is cut from them
//! ([`Dataset::to_f32`], [`Batches`]).
//!
//! # Error policy
//!
//! Loading reads bytes from outside the program, so it never panics on them. Every fault is an
//! [`Error`] naming the file and what is wrong with it (a wrong magic number, a length
//! that does not match the header, a label out of range, an image that does not decode). A loader
//! either returns the complete dataset or an error: never a shorter dataset with the bad part
//! skipped, never a half-filled one.
//!
//! Compressed files are recognised by their first two bytes (the gzip magic `1f 8b`), not by their
//! names, so `train-images-idx3-ubyte` works whether or not it was gunzipped after download.

pub mod batch;
pub mod cifar10;
pub mod image_folder;
pub mod mnist;
pub mod transform;

pub use batch::{Batch, BatchOptions, Batches};
pub use transform::{Transform, dequantize, inverse_logit, logit, random_hflip};

use std::io::Read;
use std::path::Path;

use ndarray::{Array4, Axis};

use crate::{Error, Result};

/// Which part of a dataset to load, for the formats that ship a fixed train/test split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training set (MNIST `train-*`, CIFAR-10 `data_batch_*`).
    Train,
    /// The test set (MNIST `t10k-*`, CIFAR-10 `test_batch`).
    Test,
}

/// A set of 8-bit images held in memory, with optional class labels.
///
/// `images` has shape `(N, C, H, W)` (batch, channel, row, column, as PyTorch), each entry the
/// intensity `0..=255` of one channel of one pixel; `C` is 1 for grey images and 3 for RGB.
/// `labels`, when present, has exactly `N` entries. Build one with [`Dataset::new`], which checks
/// that, or with one of the loaders.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The pixels, `(N, C, H, W)`, intensities `0..=255`.
    pub images: Array4<u8>,
    /// One class label per image, if the format has them.
    pub labels: Option<Vec<u8>>,
}

impl Dataset {
    /// A dataset from its parts. Fails if there is a label list whose length is not the number
    /// of images.
    pub fn new(images: Array4<u8>, labels: Option<Vec<u8>>) -> Result<Self> {
        if let Some(l) = &labels
            && l.len() != images.len_of(Axis(0))
        {
            return Err(Error::Invalid(format!(
                "dataset has {} images but {} labels",
                images.len_of(Axis(0)),
                l.len()
            )));
        }
        Ok(Dataset { images, labels })
    }

    /// The number of images, `N`.
    pub fn len(&self) -> usize {
        self.images.len_of(Axis(0))
    }

    /// Whether the dataset holds no image at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one image, `(C, H, W)`.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        let (_, c, h, w) = self.images.dim();
        (c, h, w)
    }

    /// The images at `indices`, in that order, as `f32` in `[0, 1]` (intensity / 255, as
    /// torchvision's `ToTensor`). Panics if an index is out of range.
    pub fn gather_f32(&self, indices: &[usize]) -> Array4<f32> {
        let (c, h, w) = self.image_shape();
        let mut out = Array4::<f32>::zeros((indices.len(), c, h, w));
        for (mut dst, &i) in out.outer_iter_mut().zip(indices) {
            let src = self.images.index_axis(Axis(0), i);
            dst.zip_mut_with(&src, |d, &s| *d = f32::from(s) / 255.0);
        }
        out
    }

    /// The whole dataset as `f32` in `[0, 1]`, `(N, C, H, W)`. Four times the memory of the
    /// dataset itself; for small sets and tests (training goes through [`Batches`]).
    pub fn to_f32(&self) -> Array4<f32> {
        self.images.mapv(|v| f32::from(v) / 255.0)
    }

    /// The label of image `i`, if the dataset has labels. Panics if `i` is out of range.
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.as_ref().map(|l| l[i])
    }
}

/// The most bytes a dataset file may hold, after gunzipping: 1 GiB. The largest file read here,
/// MNIST's training images, is 47 MB; the cap keeps a corrupt or hostile gzip stream (a few
/// kilobytes can inflate to gigabytes) from exhausting memory.
pub(crate) const MAX_DATA_FILE: u64 = 1 << 30;

/// Reads a whole file, gunzipping it when it starts with the gzip magic bytes `1f 8b`.
///
/// A gzip stream that is corrupt or cut short (bad header, bad deflate data, CRC or length
/// mismatch in the trailer), bytes after it that are not another gzip member, or a file that
/// holds (or inflates to) more than `limit` bytes, is an [`Error::Format`] naming the file;
/// nothing past the limit is read.
pub(crate) fn read_maybe_gzip(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let too_big = || Error::format(path, format!("holds more than {limit} bytes"));
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > limit {
        return Err(too_big());
    }
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    // Member by member (a gzip file may be several concatenated), so that bytes after the last
    // one are named as such rather than reported as a broken header.
    let mut out = Vec::new();
    let mut rest = raw.as_slice();
    while !rest.is_empty() {
        if !rest.starts_with(&[0x1f, 0x8b]) {
            return Err(Error::format(
                path,
                format!(
                    "{} bytes of trailing data after the gzip stream (at byte {})",
                    rest.len(),
                    raw.len() - rest.len()
                ),
            ));
        }
        let mut member = flate2::bufread::GzDecoder::new(rest);
        (&mut member)
            .take(limit + 1 - out.len() as u64)
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("corrupt gzip stream: {e}")))?;
        if out.len() as u64 > limit {
            return Err(too_big());
        }
        rest = member.into_inner();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A gzip stream that inflates past the limit is refused by name, without inflating all of it;
    /// the same file under a larger limit reads back whole, and so does a plain file.
    #[test]
    fn gzip_streams_past_the_limit_are_refused() {
        let dir = std::env::temp_dir().join(format!("ncsn-gzip-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("zeros.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 1 << 20]).unwrap(); // 1 MiB of zeros: about 1 KiB of gzip
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let err = read_maybe_gzip(&path, 1000).unwrap_err().to_string();
        assert!(
            err.contains("zeros.gz") && err.contains("more than 1000 bytes"),
            "{err}"
        );
        assert_eq!(read_maybe_gzip(&path, 1 << 20).unwrap().len(), 1 << 20);
        let plain = dir.join("plain.bin");
        std::fs::write(&plain, [7u8; 2000]).unwrap();
        assert!(
            read_maybe_gzip(&plain, 1999)
                .unwrap_err()
                .to_string()
                .contains("plain.bin")
        );
        assert_eq!(read_maybe_gzip(&plain, 2000).unwrap(), vec![7u8; 2000]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
