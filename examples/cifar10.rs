//! NCSN on CIFAR-10: train, sample, inpaint and check for memorisation.
//!
//! ```text
//! cargo run --release --example cifar10 -- --data ../shared/data/cifar10   # CPU preset
//! cargo run --release --example cifar10 -- --preset paper    # the paper's settings
//! cargo run --release --example cifar10 -- --sample --checkpoint runs/cifar10-cpu/checkpoint.safetensors
//! ```
//!
//! `--help` lists the options; the pipeline is [`ncsn::run::run`].
use clap::Parser;
use ncsn::run::{Args, DatasetKind, refinenet, run};

fn main() {
    let args = Args::parse();
    let kind = DatasetKind::Cifar10;
    if let Err(e) = run(kind, &args, |config, rng| refinenet(kind, config, rng)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
