//! A tour of the autograd core: first, second and third derivatives, and the two-level gradient
//! that score matching needs. `cargo run --release --example autograd_tour`
//!
//! The book's chapter "Tensors and automatic differentiation" walks through this file.

use clap::Parser;
use ncsn::nn::{Activation, Mlp, Module, ParamStore};
use ncsn::{Tensor, grad};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
// Printing through `ncsn::io::print_stdout`: `| head` ends the output instead of a panic.
use ncsn::outln as println;

/// No options: the tour prints its derivatives and exits (`--help` says so).
#[derive(Parser)]
#[command(
    about = "A tour of the autograd core: first, second and third derivatives, and the \
             two-level gradient of score matching. Takes no options."
)]
struct Args {}

fn main() {
    Args::parse();
    // ANCHOR: derivatives
    // f(x) = Σ x³ at x = (0.5, 1.5, −2): f' = 3x², f'' = 6x, f''' = 6.
    let x = Tensor::from_vec(vec![0.5, 1.5, -2.0], &[3]).requires_grad_();
    let f = x.powf(3.0).sum_all();
    let d1 = grad(&[&f], &[&x], true).remove(0); // create_graph: d1 has a graph of its own
    let d2 = grad(&[&d1], &[&x], true).remove(0); // so it can be differentiated again
    let d3 = grad(&[&d2], &[&x], false).remove(0); // the last one needs no graph
    println!("f'   = {:?}", d1.to_vec()); // [0.75, 6.75, 12.0]
    println!("f''  = {:?}", d2.to_vec()); // [3.0, 9.0, -12.0]
    println!("f''' = {:?}", d3.to_vec()); // [6.0, 6.0, 6.0]
    // ANCHOR_END: derivatives

    // ANCHOR: score_matching_shape
    // The shape of a score-matching objective: a network s_θ(x), the gradient ∇ₓ(vᵀs_θ(x)) taken
    // with create_graph, and a loss built from it that is then differentiated in θ.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let store = ParamStore::new();
    let s_theta = Mlp::new(&store.root(), &[2, 16, 2], Activation::Softplus, &mut rng);
    let x = Tensor::randn(&[4, 2], &mut rng).requires_grad_();
    let v = Tensor::randn(&[4, 2], &mut rng);
    let s = s_theta.forward(&x);
    let grad_x = grad(&[&s.mul(&v).sum_all()], &[&x], true).remove(0); // ∇ₓ(vᵀs), per sample
    let loss = grad_x
        .mul(&v)
        .sum(&[1], false)
        .add(&s.mul(&v).sum(&[1], false).square().mul_scalar(0.5))
        .mean_all();
    let grads = loss.backward(); // ∂loss/∂θ flows through ∇ₓ s_θ: a second-order derivative
    for (name, p) in store.named_params() {
        let g = grads.get(&p).expect("every parameter gets a gradient");
        println!(
            "∂loss/∂{name:<9} shape {:?}, norm {:.4}",
            g.shape(),
            g.square().sum_all().sqrt().item()
        );
    }
    // ANCHOR_END: score_matching_shape
}
