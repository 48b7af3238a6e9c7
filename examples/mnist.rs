//! NCSN on MNIST: train, sample, inpaint and check for memorisation.
//!
//! ```text
//! cargo run --release --example mnist                      # everything, CPU preset
//! cargo run --release --example mnist -- --preset paper    # the paper's settings
//! cargo run --release --example mnist -- --sample --checkpoint runs/mnist-cpu/checkpoint.safetensors
//! ```
//!
//! `--help` lists the options; the pipeline is [`ncsn::run::run`].
use clap::Parser;
use ncsn::run::{Args, DatasetKind, refinenet, run};

fn main() {
    let args = Args::parse();
    let kind = DatasetKind::Mnist;
    if let Err(e) = run(kind, &args, |config, rng| refinenet(kind, config, rng)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
