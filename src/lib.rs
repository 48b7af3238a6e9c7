//! `ncsn`: score-based generative modelling from scratch.
//!
//! A from-scratch, educational implementation of Song & Ermon, *Generative Modeling by Estimating
//! Gradients of the Data Distribution* (NeurIPS 2019): tensors with reverse-mode automatic
//! differentiation to any order, score matching, Langevin dynamics, and noise-conditional score
//! networks. The companion book (`book/`) explains each module with its code.
//!
//! # The map
//!
//! Each module uses only modules listed above it, and `error` (listed last) where it can fail, with
//! two exceptions. `plot` writes its files through `io::write_atomic`. With the `vulkan` feature,
//! `tensor` runs the ops of device tensors through `backend::vulkan`, and `optim` and
//! `backend::vulkan` use each other: `optim` calls the device's Adam kernel, which takes its `f32`
//! step numbers from `optim`, rounded as on the CPU.
//!
//! - [`tensor`] — [`Tensor`], an n-dimensional f32 array that records the op that made it. Op
//!   families (unary, binary with broadcasting, reductions, movement, matmul, convolution,
//!   pooling and resizing, per-plane normalisation) each keep their forward kernel beside their
//!   vector-Jacobian product.
//! - [`autograd`] — [`grad`] and [`backward`]: one reverse topological walk applying each op's VJP.
//!   The VJPs are tensor ops, so with `create_graph` a gradient can be differentiated again.
//! - [`nn`] — parameters under hierarchical names in a [`nn::ParamStore`]; [`nn::Linear`],
//!   [`nn::Mlp`] and [`nn::Conv2d`] with PyTorch's initialisation; CondInstanceNorm++ and the NCSN
//!   score network [`nn::CondRefineNetDilated`] with the reference's parameter names.
//! - [`optim`] — [`optim::Sgd`], [`optim::Adam`] (PyTorch's update rule) and [`optim::Ema`].
//! - [`toy`] — distributions with closed-form density and score: Gaussian mixtures and their
//!   noise-perturbed (and scaled) versions, a ring, a square, data on a low-dimensional subspace.
//! - [`plot`] — SVG figures: densities, score fields, samples, curves, clouds of points and paths.
//! - [`score`] — score-matching objectives, each generic over the score model: exact (Hyvärinen),
//!   sliced and SSM-VR, denoising at one σ, and the paper's annealed DSM over a
//!   [`score::GeometricSigmas`] schedule (Eq. 5–6), and DSM at log-uniform σ over a
//!   [`score::NoiseRange`]; the toy score MLP and noise-conditional MLPs for ten levels or for
//!   every σ.
//! - [`sample`] — Langevin dynamics (Eq. 4), annealed Langevin dynamics (Algorithm 1) and
//!   inpainting (Algorithm 2); and the later samplers that reverse a diffusion (reverse diffusion,
//!   predictor–corrector sampling and the probability-flow ODE of the VE SDE, DDPM's ancestral
//!   sampler), and log-likelihoods from the probability-flow ODE. All are generic over the score
//!   function and the batch shape, and run without recording a graph (but for the divergence of a
//!   network's score, by autograd inside each call).
//! - [`ebm`] — energy-based models p_θ ∝ e^{−E_θ}: their score −∇ₓE_θ, maximum likelihood with
//!   persistent Langevin chains, and noise-contrastive estimation.
//! - [`data`] — MNIST (IDX), CIFAR-10 (binary) and folders of pictures, loaded whole and checked;
//!   seeded, shuffled mini-batches with the reference's dequantisation, flips and logit transform.
//! - [`io`] — safetensors checkpoints written atomically and validated on load, of named arrays, of
//!   a model's parameters and of a whole training state ([`io::save_training`]); PNG grids.
//! - [`backend`] — with the `vulkan` feature, a Vulkan compute layer (vulkano, GLSL shaders in
//!   `shaders/` compiled with `glslc`): device buffers and kernels for GEMM, convolutions,
//!   elementwise ops, reductions, Adam and a Langevin step with an on-device Philox RNG. Tensors
//!   live on a [`Device`] chosen at run time (`--device cpu|vulkan`, [`Device::from_args`]); every
//!   tensor op, autograd, Adam and [`Tensor::langevin_step`] run where the data is.
//! - [`run`] — training runs on images: presets, checkpoints and resume, sampling, inpainting, the
//!   nearest-neighbour check, `results.json`, and the command line of the image examples.
//! - [`error`] — the [`Error`] type of everything that reads or writes files or asks a device.
//!
//! # Errors
//!
//! Shape mismatches are programmer errors: ops panic with their name and the shapes involved, as
//! `ndarray` does. Code that reads bytes (datasets, checkpoints) returns [`Result`] naming the file
//! and the fault, and never panics on bad input. Opening a Vulkan device ([`Device::vulkan`],
//! [`Device::parse`]) and the calls of `backend::vulkan` return an [`Error::Device`] saying what
//! was being done and what is missing. Tensor ops return no `Result`: a device fault in the middle
//! of one (out of memory, a lost device) panics with the Vulkan error, as an allocation failure
//! on the host aborts.
//!
//! # Randomness
//!
//! Every function that draws takes an explicit RNG; the crate's examples and tests use
//! `rand_chacha::ChaCha8Rng::seed_from_u64`, so the same seed gives the same bits.
#![warn(missing_docs)]

pub mod autograd;
pub mod backend;
pub mod data;
pub mod ebm;
pub mod error;
pub mod io;
pub mod nn;
pub mod optim;
pub mod plot;
pub mod run;
pub mod sample;
pub mod score;
pub mod tensor;
pub mod toy;

pub use autograd::{Gradients, backward, grad, grad_with, sharded_backward};
pub use error::{Error, Result};
pub use tensor::{Device, Tensor, no_grad};
