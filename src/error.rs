//! The crate's error type, for everything that reads or writes bytes or talks to a device.
//!
//! Shape errors are programmer errors and panic (see the crate docs); anything that touches files
//! (datasets, checkpoints, pictures) returns [`Result`] with the path and the fault, and anything
//! that asks a compute device for something returns it with what was being done.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong while reading or writing a file, or on a compute device.
#[derive(Debug)]
pub enum Error {
    /// The operating system refused a read or write.
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes were read but do not form what was expected.
    Format {
        /// The file involved.
        path: PathBuf,
        /// What was wrong, in words.
        msg: String,
    },
    /// A well-formed input that does not fit what it is being used for (a checkpoint for another
    /// model, a bad argument).
    Invalid(String),
    /// The compute device is missing or refused or failed a request: a build without the
    /// `vulkan` feature, no Vulkan loader or driver, a buffer larger than the device can address,
    /// an error from the driver. The message starts with `vulkan:` and says what was being done.
    /// (Tensor ops on a device return no `Result`: a fault in the middle of one panics.)
    Device(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    /// An [`Error::Format`] for `path`.
    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            Error::Format { path, msg } => write!(f, "{}: {}", path.display(), msg),
            Error::Invalid(msg) | Error::Device(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
