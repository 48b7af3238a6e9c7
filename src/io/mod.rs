//! Writing and reading what training produces: checkpoints (safetensors) and pictures (PNG).
//!
//! Everything here works on plain `ndarray` arrays, so it serves any model: a model hands its
//! parameters over as named views, and takes them back from a validated [`Checkpoint`].
//!
//! Both writers go through [`write_atomic`], so an interrupted run never leaves a torn file, and
//! every error names the file involved. [`training`] builds model-level checkpoints on top: a
//! [`ParamStore`](crate::nn::ParamStore)'s parameters, or a whole training state with Adam's
//! moments and the step count.

pub mod checkpoint;
pub mod image;
pub mod training;

pub use self::checkpoint::{
    CHECKSUM_KEY, Checkpoint, FORMAT_KEY, FORMAT_VERSION, Metadata, Tensors, check_shapes, load,
    load_expecting, save, write_atomic,
};
pub use self::image::{GridOptions, make_grid, save_grid, save_grid_with, save_png, save_strip};
pub use self::training::{load_training, save_training};

/// Writes `text` to standard output, for the examples' reports. A reader that has gone away
/// (`| head`) is not an error, since what was asked for is already on disk; Rust's `println!`
/// would panic there instead. Any other failure is an error naming standard output.
pub fn print_stdout(text: &str) -> crate::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(crate::Error::io("standard output", e))
        }
        _ => Ok(()),
    }
}

/// `println!` through [`print_stdout`], for examples that print as they go: a reader that has gone
/// away (`| head`) ends the output quietly instead of a panic, and any other write error stops
/// the program with a message. An example takes it with `use ncsn::outln as println;`.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {{
        if let Err(e) = $crate::io::print_stdout(&format!("{}\n", format_args!($($t)*))) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }};
}
