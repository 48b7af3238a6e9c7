//! Training runs on images, end to end: the machinery behind `cargo run --release --example mnist`
//! and `--example cifar10`, the paper's §5 as programs.
//!
//! | file | what |
//! | --- | --- |
//! | [`config`] | [`RunConfig`] and its presets (`paper`, and `cpu` for a 2-core laptop) |
//! | [`train`](mod@train) | the training loop with run directory, loss log and plot, progress bar, checkpoints, resume and the NaN guard |
//! | [`generate`](mod@generate) | samples and the annealing strip (Algorithm 1), inpainting (the paper's Fig. 6) |
//! | [`nearest`] | the memorisation check: nearest training pictures by pixel L2 distance |
//! | [`pipeline`] | the command line ([`Args`]) and [`run`], which chains the stages and writes `results.json` |
//!
//! The network enters through the [`ScoreNet`] trait (parameters and s_θ(x, y)), so every piece
//! here works with the RefineNet of the paper and with the tiny networks of the tests alike.

pub mod config;
pub mod generate;
pub mod nearest;
pub mod pipeline;
pub mod train;

pub use config::{DatasetKind, Occlusion, Preset, RunConfig};
pub use generate::{
    Generated, annealing_strip, generate, inpaint, inpainting_grid, occlusion_mask,
};
pub use nearest::{Neighbour, nearest_grid, nearest_neighbours};
pub use pipeline::{
    Args, Paths, Results, Timings, at_least_one, count_in, load_data, refinenet, run,
};
pub use train::{
    LossRow, Position, RunDir, ScoreNet, Stream, TrainOptions, TrainReport, evaluate_dsm,
    load_training_checkpoint, load_weights, save_training_checkpoint, split_holdout, stream_rng,
    train,
};
