//! Reverse-mode automatic differentiation, to any order.
//!
//! Every tensor computed while gradients are recorded remembers the op that made it and the
//! tensors it read. [`grad`] walks that graph once, from the outputs back to the inputs, in reverse
//! topological order, and at each node applies the op's vector-Jacobian product (VJP): given
//! ḡ = ∂L/∂out it returns ∂L/∂input = ḡ·∂out/∂input for each input.
//!
//! The VJPs are themselves written with tensor ops. With `create_graph = false` they run under
//! [`no_grad`](crate::tensor::no_grad) and record nothing. With `create_graph = true` they are
//! recorded like any other computation, so the gradient is a tensor with a graph of its own and
//! can be differentiated again — what `torch.autograd.grad(..., create_graph=True)` does, and what
//! exact and sliced score matching need, since their objectives contain ∇ₓ s_θ(x).

use crate::tensor::{IdMap, IdSet, Tensor, TensorId, with_grad_mode};

/// Gradients from [`backward`] or [`Tensor::backward`], keyed by tensor id.
#[derive(Default, Clone)]
pub struct Gradients(IdMap<Tensor>);

impl Gradients {
    /// The gradient of `t`, if it received one.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }

    /// Adds another set of gradients to this one (accumulation over several backward passes,
    /// as `.grad` accumulates in PyTorch).
    pub fn accumulate(&mut self, other: Gradients) {
        for (id, g) in other.0 {
            match self.0.remove(&id) {
                Some(prev) => self.0.insert(id, prev.add(&g)),
                None => self.0.insert(id, g),
            };
        }
    }

    /// Sets or replaces the gradient of `t`.
    pub fn insert(&mut self, t: &Tensor, g: Tensor) {
        self.0.insert(t.id(), g);
    }

    /// How many tensors have a gradient.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no tensor has a gradient.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The nodes that can reach a tensor requiring grad, in topological order (inputs before the
/// tensors made from them). Iterative, so deep graphs cannot overflow the stack.
fn topological_order(outputs: &[&Tensor]) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = IdSet::default();
    // (node, whether its inputs have been pushed already)
    let mut stack: Vec<(Tensor, bool)> = outputs
        .iter()
        .filter(|t| t.requires_grad())
        .map(|t| ((*t).clone(), false))
        .collect();
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(op) = t.op() {
            for input in op.inputs().iter() {
                if input.requires_grad() && !seen.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

// ANCHOR: backward_walk
/// The walk shared by [`grad`] and [`backward`]: propagates `seeds` (gradients of the outputs)
/// back through the graph and returns the gradients of the nodes in `targets` (of every leaf
/// the graph reaches when `None`).
fn propagate(
    seeds: Vec<(Tensor, Tensor)>,
    targets: Option<&IdSet>,
    create_graph: bool,
) -> IdMap<Tensor> {
    let outputs: Vec<&Tensor> = seeds.iter().map(|(t, _)| t).collect();
    let order = topological_order(&outputs);

    // A node matters if it is a target or one of its inputs matters: gradients flowing anywhere
    // else (for instance into parameters while we want ∇ₓ only) are never computed.
    let mut needed: IdSet = IdSet::default();
    for t in &order {
        let is_target = match targets {
            Some(ts) => ts.contains(&t.id()),
            None => t.is_leaf(),
        };
        let feeds_target = t
            .op()
            .is_some_and(|op| op.inputs().iter().any(|i| needed.contains(&i.id())));
        if is_target || feeds_target {
            needed.insert(t.id());
        }
    }

    with_grad_mode(create_graph, || {
        let mut grads: IdMap<Tensor> = IdMap::default();
        for (t, g) in seeds {
            accumulate(&mut grads, t.id(), g);
        }
        let mut result = IdMap::default();
        for node in order.iter().rev() {
            let Some(g) = grads.remove(&node.id()) else {
                continue;
            };
            if let Some(op) = node.op() {
                let inputs = op.inputs();
                let need: Vec<bool> = inputs.iter().map(|i| needed.contains(&i.id())).collect();
                if need.iter().any(|&n| n) {
                    for (input, gi) in inputs.iter().zip(op.vjp(node, &g, &need)) {
                        if let Some(gi) = gi {
                            accumulate(&mut grads, input.id(), gi);
                        }
                    }
                }
            }
            let is_target = match targets {
                Some(ts) => ts.contains(&node.id()),
                None => node.is_leaf(),
            };
            if is_target {
                result.insert(node.id(), g);
            }
        }
        result
    })
}
// ANCHOR_END: backward_walk

fn accumulate(grads: &mut IdMap<Tensor>, id: TensorId, g: Tensor) {
    match grads.remove(&id) {
        Some(prev) => grads.insert(id, prev.add(&g)),
        None => grads.insert(id, g),
    };
}

/// The gradient of the sum of `outputs` with respect to each of `inputs`, like
/// `torch.autograd.grad(outputs, inputs, grad_outputs=ones, create_graph=...)`. An input the
/// outputs do not depend on gets zeros. With `create_graph` the returned gradients carry a graph
/// and can be differentiated again.
// ANCHOR: grad_fn
pub fn grad(outputs: &[&Tensor], inputs: &[&Tensor], create_graph: bool) -> Vec<Tensor> {
    let cotangents: Vec<Tensor> = outputs.iter().map(|o| o.ones_like()).collect();
    grad_with(outputs, &cotangents, inputs, create_graph)
}
// ANCHOR_END: grad_fn

/// Vector-Jacobian products: the gradient of Σᵢ ⟨cotangentsᵢ, outputsᵢ⟩ with respect to each
/// input. Each cotangent must have its output's shape.
pub fn grad_with(
    outputs: &[&Tensor],
    cotangents: &[Tensor],
    inputs: &[&Tensor],
    create_graph: bool,
) -> Vec<Tensor> {
    assert_eq!(
        outputs.len(),
        cotangents.len(),
        "grad_with: {} outputs but {} cotangents",
        outputs.len(),
        cotangents.len()
    );
    for (o, c) in outputs.iter().zip(cotangents) {
        assert_eq!(
            o.shape(),
            c.shape(),
            "grad_with: cotangent of shape {:?} for output of shape {:?}",
            c.shape(),
            o.shape()
        );
    }
    let targets: IdSet = inputs.iter().map(|t| t.id()).collect();
    let seeds = outputs
        .iter()
        .zip(cotangents)
        .map(|(o, c)| ((*o).clone(), c.clone()))
        .collect();
    let mut grads = propagate(seeds, Some(&targets), create_graph);
    inputs
        .iter()
        .map(|t| grads.remove(&t.id()).unwrap_or_else(|| t.zeros_like()))
        .collect()
}

/// The gradients of `loss` (summed if not a scalar) with respect to every leaf that requires a
/// gradient — typically all parameters — for an optimizer step. Records no graph.
pub fn backward(loss: &Tensor) -> Gradients {
    Gradients(propagate(
        vec![(loss.clone(), loss.ones_like())],
        None,
        false,
    ))
}

// ANCHOR: sharded_backward
/// Data-parallel [`backward`] for a loss that is a mean over the rows of a batch of `n` rows.
///
/// Splits the rows into `shards` contiguous ranges of nearly equal length, evaluates
/// `shard_loss(range)` — the mean loss over the rows of `range` — for each range on its own rayon
/// task, and returns the batch loss and gradients: with nᵢ rows in range i,
///
/// L = Σᵢ (nᵢ/n)·Lᵢ,  ∇L = Σᵢ (nᵢ/n)·∇Lᵢ,
///
/// which is what [`backward`] on the whole batch gives, up to the order of floating-point sums.
/// The result depends on `shards` (through that order) but not on how many threads run them, so
/// a run is reproducible on any machine for a fixed `shards`.
///
/// Why: a small model's ops (a 128 × 128 activation is 16 K numbers) are too small to split
/// across threads one at a time — waking a thread costs about as much as the op — so a single
/// batch's graph runs on one core. Shards give each core a graph of its own, with no
/// synchronisation until the gradients are summed.
///
/// CPU tensors only: a Vulkan device records each thread's work separately, so shards on other
/// threads would not see what this thread recorded and not yet submitted (and on a GPU one batch
/// is one graph anyway).
///
/// Panics if `shards` is 0 or exceeds `n`, or if a shard's loss is not on the CPU.
pub fn sharded_backward(
    n: usize,
    shards: usize,
    shard_loss: impl Fn(std::ops::Range<usize>) -> Tensor + Sync,
) -> (f32, Gradients) {
    assert!(
        shards >= 1 && shards <= n,
        "sharded_backward: {shards} shards for a batch of {n} rows"
    );
    let ranges: Vec<_> = (0..shards)
        .map(|i| i * n / shards..(i + 1) * n / shards)
        .collect();
    let run = |r: std::ops::Range<usize>| {
        let weight = r.len() as f32 / n as f32;
        let loss = shard_loss(r).mul_scalar(weight); //   (nᵢ/n)·Lᵢ
        assert!(
            loss.device().is_cpu(),
            "sharded_backward: CPU tensors only, got a loss on {}",
            loss.device()
        );
        (loss.item(), backward(&loss))
    };
    use rayon::prelude::*;
    let parts: Vec<(f32, Gradients)> = ranges.into_par_iter().map(run).collect();
    let mut total = 0.0;
    let mut grads = Gradients::default();
    for (loss, g) in parts {
        total += loss;
        grads.accumulate(g);
    }
    (total, grads)
}
// ANCHOR_END: sharded_backward

impl Tensor {
    /// [`backward`] on this tensor.
    pub fn backward(&self) -> Gradients {
        backward(self)
    }
}
