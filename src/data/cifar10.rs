//! CIFAR-10 in its "binary version" (`cifar-10-binary.tar.gz`, unpacked).
//!
//! Each batch file is a sequence of 3073-byte records: one label byte (`0..=9`) followed by the
//! 32×32 picture as 1024 red, 1024 green and 1024 blue bytes, each plane row-major. That is
//! exactly the `(C, H, W)` layout of one image, so a record's pixels are copied as they are.
//!
//! A directory is loaded as it is unpacked: the training split is every `data_batch_*.bin` in it,
//! in file-name order (the official download has five), the test split is `test_batch.bin`. Either
//! may be gzip-compressed and named `*.bin.gz`.

use std::path::{Path, PathBuf};

use ndarray::Array4;

use super::{Dataset, MAX_DATA_FILE, Split, read_maybe_gzip};
use crate::{Error, Result};

/// Side of a CIFAR-10 image, in pixels.
pub const SIDE: usize = 32;
/// Bytes of one record: the label and 3 × 32 × 32 pixel bytes.
pub const RECORD_LEN: usize = 1 + 3 * SIDE * SIDE;
/// Number of classes; labels are `0..NUM_CLASSES`.
pub const NUM_CLASSES: u8 = 10;

/// The class names, in label order (as `batches.meta.txt`).
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses one batch file's bytes (already gunzipped) into `out_pixels` and `out_labels`.
fn parse_batch(
    path: &Path,
    bytes: &[u8],
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::format(path, "empty file, no CIFAR-10 records"));
    }
    if !bytes.len().is_multiple_of(RECORD_LEN) {
        return Err(Error::format(
            path,
            format!(
                "length {} bytes is not a multiple of the {RECORD_LEN}-byte CIFAR-10 record \
                 (1 label + 3072 pixels): {} whole records and {} left over",
                bytes.len(),
                bytes.len() / RECORD_LEN,
                match bytes.len() % RECORD_LEN {
                    1 => "1 byte".to_string(),
                    n => format!("{n} bytes"),
                }
            ),
        ));
    }
    // Check every label before copying anything, so a bad file leaves nothing behind.
    for (i, record) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        if record[0] >= NUM_CLASSES {
            return Err(Error::format(
                path,
                format!(
                    "record {i} (byte offset {}): label {} is out of range 0..=9",
                    i * RECORD_LEN,
                    record[0]
                ),
            ));
        }
    }
    pixels.reserve(bytes.len());
    labels.reserve(bytes.len() / RECORD_LEN);
    for record in bytes.chunks_exact(RECORD_LEN) {
        labels.push(record[0]);
        pixels.extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// Loads CIFAR-10 batch files, in the order given, into one [`Dataset`] of shape
/// `(N, 3, 32, 32)` with labels.
///
/// Each file may be raw or gzip. Fails with an [`Error::Format`] naming the file on an empty
/// file, a length that is not a whole number of 3073-byte records, a label above 9, a corrupt
/// gzip stream, or more than 1 GiB (after gunzipping); an empty list is an [`Error::Invalid`].
pub fn load_files<P: AsRef<Path>>(files: &[P]) -> Result<Dataset> {
    if files.is_empty() {
        return Err(Error::Invalid("no CIFAR-10 batch files given".into()));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        let path = file.as_ref();
        let bytes = read_maybe_gzip(path, MAX_DATA_FILE)?;
        parse_batch(path, &bytes, &mut pixels, &mut labels)?;
    }
    let n = labels.len();
    let images = Array4::from_shape_vec((n, 3, SIDE, SIDE), pixels)
        .map_err(|e| Error::Invalid(format!("CIFAR-10: {e}")))?;
    Dataset::new(images, Some(labels))
}

/// The batch files of `split` in `dir`: `data_batch_*.bin[.gz]` sorted by file name for
/// [`Split::Train`], `test_batch.bin[.gz]` for [`Split::Test`].
///
/// Fails, naming the directory, if it cannot be read, holds no file of the split, or holds a
/// batch both raw and gzipped (`data_batch_1.bin` and `data_batch_1.bin.gz`), which would
/// otherwise be loaded twice.
pub fn batch_files(dir: impl AsRef<Path>, split: Split) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let stem = name.strip_suffix(".gz").unwrap_or(name);
        let wanted = match split {
            Split::Train => stem.starts_with("data_batch_") && stem.ends_with(".bin"),
            Split::Test => stem == "test_batch.bin",
        };
        if wanted && path.is_file() {
            found.push((stem.to_string(), path));
        }
    }
    found.sort();
    for pair in found.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(Error::format(
                dir,
                format!("both {0} and {0}.gz are present; remove one", pair[0].0),
            ));
        }
    }
    if found.is_empty() {
        let what = match split {
            Split::Train => "no data_batch_*.bin (or .bin.gz) files",
            Split::Test => "no test_batch.bin (or .bin.gz) file",
        };
        return Err(Error::format(
            dir,
            format!("{what}: not a CIFAR-10 binary directory"),
        ));
    }
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Loads the `split` of the CIFAR-10 binary version from `dir` (see [`batch_files`] for which
/// files, [`load_files`] for the checks).
pub fn load(dir: impl AsRef<Path>, split: Split) -> Result<Dataset> {
    load_files(&batch_files(dir, split)?)
}
