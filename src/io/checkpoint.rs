//! Checkpoints: named `f32` tensors and string metadata in a safetensors file.
//!
//! # The file
//!
//! [safetensors](https://huggingface.co/docs/safetensors) is a little-endian `u64` header length,
//! a JSON header mapping each tensor name to its dtype, shape and byte range, then the raw bytes.
//! The JSON may hold a `__metadata__` object of string keys and string values; the training step,
//! the configuration and the like go there. The format has no code in it (unlike a pickled `.pth`),
//! needs no parsing beyond the header, and is read by PyTorch, JAX and candle alike.
//!
//! # Writing
//!
//! [`save`] writes through [`write_atomic`]: the bytes go to a temporary file in the target's
//! directory, are flushed to disk, and the temporary file is renamed over the target. A crash or
//! a full disk at any moment leaves either the old checkpoint or the new one, never a torn file.
//! The header's metadata carries, under [`CHECKSUM_KEY`], a CRC-32 of the data section (every
//! byte after the header) and of the other metadata entries, so that bytes changed on disk or on
//! the way are noticed on reading, and under [`FORMAT_KEY`] a mark that the file has one.
//!
//! # Reading
//!
//! [`load`] checks the whole file before returning anything: a truncated or corrupt file, or a
//! tensor of another dtype than `F32` (named, with its dtype), is an [`Error::Format`] naming the
//! file, and so is a file whose data or metadata does not match the checksum in its header, or
//! that is marked as written here and has lost its checksum (one without either, such as a file
//! converted from PyTorch, is read as it is). [`check_shapes`] then compares the loaded set with
//! what a model expects and reports every missing, extra and mis-shaped tensor at once;
//! [`load_expecting`] does both. Loading never touches a model: the
//! caller copies tensors in only after these checks pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors};

use crate::{Error, Result};

/// Named `f32` tensors, ordered by name.
pub type Tensors = BTreeMap<String, ArrayD<f32>>;

/// String metadata (the safetensors `__metadata__`), ordered by key.
pub type Metadata = BTreeMap<String, String>;

/// A checkpoint in memory: named `f32` tensors and string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// The tensors, by name (for a model, its parameter names such as `res1.0.conv1.weight`).
    pub tensors: Tensors,
    /// Free-form string metadata: training step, configuration, provenance.
    pub metadata: Metadata,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a tensor; returns `self` for chaining.
    pub fn with_tensor(mut self, name: impl Into<String>, tensor: ArrayD<f32>) -> Self {
        self.tensors.insert(name.into(), tensor);
        self
    }

    /// Adds (or replaces) a metadata entry; returns `self` for chaining.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.metadata.insert(key.into(), value.to_string());
        self
    }

    /// The metadata entry `key` parsed as a `T` (a step count, a learning rate): `Ok(None)` if
    /// absent, an [`Error::Invalid`] naming the key and value if it does not parse.
    pub fn metadata_as<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Error::Invalid(format!(
                    "checkpoint metadata `{key}` = {v:?} is not a valid {}",
                    std::any::type_name::<T>()
                ))
            }),
        }
    }

    /// Writes the checkpoint to `path` atomically (see [`save`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save(
            path,
            self.tensors.iter().map(|(k, v)| (k.as_str(), v.view())),
            &self.metadata,
        )
    }

    /// Reads a checkpoint (see [`load`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load(path)
    }

    /// Checks the tensors against the expected names and shapes (see [`check_shapes`]).
    pub fn check<S: AsRef<str>, Sh: AsRef<[usize]>>(
        &self,
        expected: impl IntoIterator<Item = (S, Sh)>,
    ) -> Result<()> {
        check_shapes(&self.tensors, expected)
    }
}

// ANCHOR: atomic_write
/// Tells apart the temporary files of concurrent writes from one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` so that `path` holds either its old content or all of `bytes`, never
/// a part: write a temporary file in the same directory, flush it to disk, rename it over `path`.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let Some(name) = path.file_name() else {
        return Err(Error::Invalid(format!(
            "{}: not a file name",
            path.display()
        )));
    };
    // The same directory, hence the same file system: rename is then atomic.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let unique = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.{}-{unique}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        // create_new: never write through somebody else's file.
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        // The data must be on disk before the name points at it, or a crash could leave the new
        // name on an empty file.
        file.sync_all()?;
        drop(file);
        // Readers see the old file or the new one, whole.
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Make the rename itself durable by flushing the directory (POSIX; best effort).
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
// ANCHOR_END: atomic_write

/// How long a temporary file must have gone unwritten before [`remove_stale_temporaries`] may
/// take it for an interrupted write's: a live write touches its file every few seconds at most.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Removes from `dir` the temporary files [`write_atomic`] leaves when its process is killed
/// between creating one and renaming it, and returns how many it removed. A file is stale when the
/// process that made it (its name carries the process id) is no longer running *and* it was last
/// written more than [`STALE_AFTER`] ago, so the temporaries of a live writer — a training run
/// whose directory another process samples from — are left alone, even when that writer's
/// process id means nothing here (another container's process namespace, another host over
/// NFS). Where running processes cannot be listed (no `/proc`), nothing is removed.
pub fn remove_stale_temporaries(dir: impl AsRef<Path>) -> Result<usize> {
    let dir = dir.as_ref();
    if !Path::new("/proc/self").exists() {
        return Ok(0);
    }
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // `.{name}.{pid}-{counter}.tmp`
        let pid = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(_, tag)| tag.split_once('-'))
            .filter(|(_, counter)| counter.parse::<u64>().is_ok())
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        let idle = || {
            fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_AFTER)
        };
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && path.is_file()
            && idle()
        {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

// ANCHOR: checksum
/// The metadata key under which [`save`] stores the file's checksum as 8 lowercase hex digits: a
/// CRC-32 of the data section (every byte after the header), then of the other metadata entries
/// in key order. [`load`] checks it when present (and requires it when [`FORMAT_KEY`] is) and
/// removes it from the metadata it hands back; [`save`] refuses it in the caller's metadata. It
/// cannot be mistaken for the training state's keys (`step`, `config`, `optimizer.…`).
pub const CHECKSUM_KEY: &str = "ncsn.crc32";

/// The metadata key that marks a file written by [`save`], with the value [`FORMAT_VERSION`]. A
/// marked file must hold [`CHECKSUM_KEY`]: without the mark, one changed byte in the checksum's own
/// key would make a damaged file read as one that never had a checksum (a file converted from
/// PyTorch, say) and skip the check. The mark is covered by the checksum like any other entry,
/// so a change to it is caught too. [`load`] leaves it out of the metadata it hands back.
pub const FORMAT_KEY: &str = "ncsn.format";

/// The value stored under [`FORMAT_KEY`]: this layout, tensors in name order after a header whose
/// keys are sorted, with the checksum of [`CHECKSUM_KEY`].
pub const FORMAT_VERSION: &str = "1";

/// The CRC-32 stored under [`CHECKSUM_KEY`]: of the data section (every byte after the header),
/// then of the other metadata entries in key order, each key and value followed by a zero byte.
/// The tensors' names, shapes and byte ranges need no checksum of their own: the loader checks
/// that the ranges tile the data and the caller that names and shapes are the model's. The
/// metadata's values (a step, a random stream's position, the configuration) are checked by
/// nothing else.
fn checksum(data: &[u8], metadata: &Metadata) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    for (key, value) in metadata.iter().filter(|(k, _)| *k != CHECKSUM_KEY) {
        for part in [key, value] {
            crc.update(part.as_bytes());
            crc.update(&[0]);
        }
    }
    crc.finalize()
}

/// The bytes of a safetensors file holding `tensors` (in name order, no gaps) and `metadata` plus
/// [`FORMAT_KEY`] and [`CHECKSUM_KEY`]. All of the header's keys are in sorted order (serde_json's
/// map is ordered), so the same tensors and metadata always give the same bytes: two runs with the
/// same seed write identical files.
///
/// The header comes before the data it describes, yet holds the data's checksum. Its length does
/// not depend on the checksum's value (always 8 hex digits), so the header is laid out first with
/// a zero checksum, the data is written after it, and the header is then written again, with the
/// checksum of that data, over the same bytes.
fn serialize(tensors: &[(String, ArrayViewD<'_, f32>)], metadata: &Metadata) -> Vec<u8> {
    let mut metadata = metadata.clone();
    metadata.insert(FORMAT_KEY.into(), FORMAT_VERSION.into());
    let header = |crc: u32| -> Vec<u8> {
        let mut meta = serde_json::Map::new();
        for (key, value) in &metadata {
            meta.insert(key.clone(), value.clone().into());
        }
        meta.insert(CHECKSUM_KEY.into(), format!("{crc:08x}").into());
        let mut json = serde_json::Map::new();
        json.insert("__metadata__".into(), meta.into());
        let mut offset = 0;
        for (name, view) in tensors {
            let end = offset + 4 * view.len();
            json.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": view.shape(), "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut bytes = serde_json::to_vec(&json).expect("strings and numbers always serialise");
        // The data starts 8-byte aligned, as the safetensors writer pads it.
        bytes.resize(bytes.len().next_multiple_of(8), b' ');
        bytes
    };
    let head = header(0);
    let data_len: usize = tensors.iter().map(|(_, v)| 4 * v.len()).sum();
    let mut bytes = Vec::with_capacity(8 + head.len() + data_len);
    bytes.extend_from_slice(&(head.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&head);
    for (_, view) in tensors {
        // Logical (row-major) order, whatever the view's strides: the file is C-ordered.
        bytes.extend(view.iter().flat_map(|v| v.to_le_bytes()));
    }
    let start = 8 + head.len();
    let sealed = header(checksum(&bytes[start..], &metadata));
    assert_eq!(sealed.len(), head.len(), "the checksum has a fixed width");
    bytes[8..start].copy_from_slice(&sealed);
    bytes
}

/// Checks the data section of `bytes`, whose header is `header_len` bytes long, and `metadata`
/// against the value stored under [`CHECKSUM_KEY`]: an [`Error::Format`] naming `path` if it is
/// not a checksum or does not match.
fn verify(
    path: &Path,
    bytes: &[u8],
    header_len: usize,
    metadata: &Metadata,
    stored: &str,
) -> Result<()> {
    // Exactly 8 hex digits (`from_str_radix` alone would also take "+1" or "a").
    let hex = stored.len() == 8 && stored.bytes().all(|b| b.is_ascii_hexdigit());
    let stored_crc = u32::from_str_radix(stored, 16)
        .ok()
        .filter(|_| hex)
        .ok_or_else(|| {
            Error::format(
                path,
                format!("metadata `{CHECKSUM_KEY}` = {stored:?} is not a CRC-32 (8 hex digits)"),
            )
        })?;
    let crc = checksum(&bytes[8 + header_len..], metadata);
    if crc != stored_crc {
        return Err(Error::format(
            path,
            format!(
                "the data and metadata do not match their checksum (`{CHECKSUM_KEY}` is \
                 {stored_crc:08x}, theirs is {crc:08x}): the file is damaged"
            ),
        ));
    }
    Ok(())
}
// ANCHOR_END: checksum

/// Writes named `f32` tensors and string metadata to a safetensors file at `path`, atomically
/// ([`write_atomic`]).
///
/// Takes views, so a model can save its parameters without copying them into a [`Tensors`] map
/// first. Names must be unique and must not be `__metadata__`, and the metadata must not use
/// [`CHECKSUM_KEY`] or [`FORMAT_KEY`] (an [`Error::Invalid`] otherwise): the file's checksum and
/// its mark go there. In the file, tensors are stored in name order.
pub fn save<'a, S: AsRef<str>>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (S, ArrayViewD<'a, f32>)>,
    metadata: &Metadata,
) -> Result<()> {
    let path = path.as_ref();
    let mut seen = BTreeSet::new();
    let mut views = Vec::new();
    for (name, view) in tensors {
        let name = name.as_ref().to_string();
        if name == "__metadata__" {
            return Err(Error::Invalid(format!(
                "{}: `__metadata__` is reserved and cannot name a tensor",
                path.display()
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(Error::Invalid(format!(
                "{}: tensor name `{name}` given twice",
                path.display()
            )));
        }
        views.push((name, view));
    }
    for (key, what) in [(CHECKSUM_KEY, "checksum"), (FORMAT_KEY, "format mark")] {
        if metadata.contains_key(key) {
            return Err(Error::Invalid(format!(
                "{}: metadata key `{key}` is reserved for the file's {what}",
                path.display()
            )));
        }
    }
    views.sort_by(|(a, _), (b, _)| a.cmp(b));
    write_atomic(path, &serialize(&views, metadata))
}

/// Reads a safetensors file of `f32` tensors.
///
/// The whole file is validated first: a file that is truncated, has a corrupt header or byte
/// ranges that do not tile the data, has data or metadata that does not match the checksum
/// stored under [`CHECKSUM_KEY`], or holds tensors of any other dtype than `F32` (each named with
/// its dtype) is an [`Error::Format`] naming the file, and so is a file marked under [`FORMAT_KEY`]
/// that has no checksum. A file with neither (not written by [`save`]) is read unchecked. Nothing
/// is returned unless every tensor was read; the checksum and the mark are not among the metadata
/// returned.
pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |e: safetensors::SafeTensorError| {
        Error::format(path, format!("not a valid safetensors file: {e}"))
    };
    // ANCHOR: verify_on_load
    // The header parses and its byte ranges tile the rest of the file; then the data itself is
    // checked, before a single value is converted. The key goes no further than here.
    let (header_len, header) = SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
    let mut metadata: Metadata = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    match metadata.remove(CHECKSUM_KEY) {
        Some(stored) => verify(path, &bytes, header_len, &metadata, &stored)?,
        None if metadata.contains_key(FORMAT_KEY) => {
            return Err(Error::format(
                path,
                format!(
                    "the header is marked `{FORMAT_KEY}` (written by ncsn) but has no \
                     `{CHECKSUM_KEY}` checksum: the file is damaged"
                ),
            ));
        }
        None => {}
    }
    metadata.remove(FORMAT_KEY);
    // ANCHOR_END: verify_on_load
    let file = SafeTensors::deserialize(&bytes).map_err(corrupt)?;

    let mut wrong: Vec<String> = file
        .iter()
        .filter(|(_, t)| t.dtype() != Dtype::F32)
        .map(|(name, t)| format!("`{name}` is {:?}", t.dtype()))
        .collect();
    if !wrong.is_empty() {
        wrong.sort();
        return Err(Error::format(
            path,
            format!(
                "only F32 tensors are supported, but tensor {} (convert with `.float()` before \
                 saving)",
                wrong.join(", tensor ")
            ),
        ));
    }

    let mut tensors = Tensors::new();
    for (name, view) in file.iter() {
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let array = ArrayD::from_shape_vec(IxDyn(view.shape()), values)
            .map_err(|e| Error::format(path, format!("tensor `{name}`: {e}")))?;
        tensors.insert(name.to_string(), array);
    }
    Ok(Checkpoint { tensors, metadata })
}

/// Compares `tensors` with the `expected` names and shapes. Succeeds if they match exactly;
/// otherwise returns one [`Error::Invalid`] listing every missing tensor, every extra tensor and
/// every tensor of the wrong shape, by name, with shapes.
pub fn check_shapes<S: AsRef<str>, Sh: AsRef<[usize]>>(
    tensors: &Tensors,
    expected: impl IntoIterator<Item = (S, Sh)>,
) -> Result<()> {
    let shape = |s: &[usize]| format!("{s:?}");
    let mut wanted = BTreeSet::new();
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (name, dims) in expected {
        let (name, dims) = (name.as_ref(), dims.as_ref());
        wanted.insert(name.to_string());
        match tensors.get(name) {
            None => missing.push(format!("`{name}` {}", shape(dims))),
            Some(t) if t.shape() != dims => misshaped.push(format!(
                "`{name}` is {}, expected {}",
                shape(t.shape()),
                shape(dims)
            )),
            Some(_) => {}
        }
    }
    let extra: Vec<String> = tensors
        .iter()
        .filter(|(name, _)| !wanted.contains(name.as_str()))
        .map(|(name, t)| format!("`{name}` {}", shape(t.shape())))
        .collect();
    if missing.is_empty() && extra.is_empty() && misshaped.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "checkpoint does not match: {} missing, {} extra, {} with the wrong shape",
        missing.len(),
        extra.len(),
        misshaped.len()
    );
    for (what, list) in [
        ("missing", &missing),
        ("extra", &extra),
        ("wrong shape", &misshaped),
    ] {
        for item in list.iter() {
            msg.push_str(&format!("\n  {what}: {item}"));
        }
    }
    Err(Error::Invalid(msg))
}

/// [`load`] followed by [`check_shapes`]: the checkpoint at `path`, only if it is valid and holds
/// exactly the expected tensors with the expected shapes. A mismatch is an [`Error::Invalid`]
/// whose message starts with the path.
pub fn load_expecting<S: AsRef<str>, Sh: AsRef<[usize]>>(
    path: impl AsRef<Path>,
    expected: impl IntoIterator<Item = (S, Sh)>,
) -> Result<Checkpoint> {
    let path = path.as_ref();
    let ckpt = load(path)?;
    match check_shapes(&ckpt.tensors, expected) {
        Ok(()) => Ok(ckpt),
        Err(Error::Invalid(msg)) => Err(Error::Invalid(format!("{}: {msg}", path.display()))),
        Err(e) => Err(e),
    }
}
