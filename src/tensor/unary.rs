//! Elementwise functions of one tensor: each forward rule beside its derivative.

use super::fastmath;
use super::{Op, Tensor};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Elements above which elementwise kernels split the work across threads with rayon. Below it,
/// waking threads (microseconds) costs about as much as the work it would share: a 128 × 128
/// softplus takes 14 µs on one core (`cargo bench --bench core -- op_overhead`), so 2¹⁶ elements
/// are some 55 µs, split in chunks of [`PAR_CHUNK`].
pub(crate) const PAR_THRESHOLD: usize = 1 << 16;

/// The elements each thread takes at a time in a parallel elementwise kernel.
pub(crate) const PAR_CHUNK: usize = 1 << 14;

/// An elementwise function of one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// −x
    Neg,
    /// eˣ
    Exp,
    /// ln x
    Log,
    /// √x
    Sqrt,
    /// x²
    Square,
    /// xᵖ
    Powf(f32),
    /// |x|
    Abs,
    /// 1 / (1 + e⁻ˣ)
    Sigmoid,
    /// tanh x
    Tanh,
    /// max(x, 0)
    Relu,
    /// ln(1 + eˣ)
    Softplus,
    /// x for x > 0, α(eˣ − 1) otherwise
    Elu(f32),
    /// x + c
    AddScalar(f32),
    /// c · x
    MulScalar(f32),
    /// x / c (a true division, as PyTorch's `x / c`; not x · (1/c), which can differ in the last
    /// bit)
    DivScalar(f32),
}

impl UnaryOp {
    pub(crate) fn name(&self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "neg",
            Exp => "exp",
            Log => "log",
            Sqrt => "sqrt",
            Square => "square",
            Powf(_) => "powf",
            Abs => "abs",
            Sigmoid => "sigmoid",
            Tanh => "tanh",
            Relu => "relu",
            Softplus => "softplus",
            Elu(_) => "elu",
            AddScalar(_) => "add_scalar",
            MulScalar(_) => "mul_scalar",
            DivScalar(_) => "div_scalar",
        }
    }

    /// The function itself, on one number.
    // ANCHOR: unary_forward
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        use UnaryOp::*;
        match self {
            Neg => -x,
            Exp => fastmath::exp(x),
            Log => x.ln(),
            Sqrt => x.sqrt(),
            Square => x * x,
            Powf(p) => x.powf(p),
            Abs => x.abs(),
            Sigmoid => fastmath::sigmoid(x),
            Tanh => x.tanh(),
            // Not x.max(0.0), which turns NaN into 0: PyTorch's relu passes NaN (and −0) through.
            Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            // max(x, 0) + ln(1 + e^{-|x|}): no overflow for large x, no loss for very negative x.
            Softplus => fastmath::softplus(x),
            Elu(alpha) => {
                if x > 0.0 {
                    x
                } else {
                    alpha * fastmath::expm1(x)
                }
            }
            AddScalar(c) => x + c,
            MulScalar(c) => c * x,
            DivScalar(c) => x / c,
        }
    }
    // ANCHOR_END: unary_forward
}

/// `out[i] = kind(x[i])`. The match is outside the loop, so each loop is a single inlined,
/// branch-free function that the compiler vectorises (see [`fastmath::map_into`]).
fn apply_slice(kind: UnaryOp, x: &[f32], out: &mut [std::mem::MaybeUninit<f32>]) {
    use UnaryOp::*;
    use fastmath::map_into as m;
    match kind {
        Neg => m(x, out, |v| -v),
        Exp => m(x, out, fastmath::exp),
        Log => m(x, out, f32::ln),
        Sqrt => m(x, out, f32::sqrt),
        Square => m(x, out, |v| v * v),
        Powf(p) => m(x, out, move |v| v.powf(p)),
        Abs => m(x, out, f32::abs),
        Sigmoid => m(x, out, fastmath::sigmoid),
        Tanh => m(x, out, f32::tanh),
        Relu => m(x, out, |v| if v < 0.0 { 0.0 } else { v }),
        Softplus => m(x, out, fastmath::softplus),
        Elu(a) => m(
            x,
            out,
            move |v| if v > 0.0 { v } else { a * fastmath::expm1(v) },
        ),
        AddScalar(c) => m(x, out, move |v| v + c),
        MulScalar(c) => m(x, out, move |v| c * v),
        DivScalar(c) => m(x, out, move |v| v / c),
    }
}

/// The gradient with respect to `x` of a scalar whose gradient with respect to `out = f(x)` is `g`.
/// Written in tensor ops, so that it can be differentiated again. Where the derivative is most
/// simply expressed through the output (exp, sqrt, sigmoid, tanh, elu) it reuses `out`. The
/// activations first try [`activation_grad`], the same product in one pass (reading f′(x) from
/// `dfdx` when the forward pass saved it).
// ANCHOR: unary_vjp
pub(crate) fn vjp(
    kind: UnaryOp,
    x: &Tensor,
    out: &Tensor,
    g: &Tensor,
    dfdx: Option<&Tensor>,
) -> Tensor {
    use UnaryOp::*;
    if let Some(dx) = activation_grad(kind, x, out, g, dfdx) {
        return dx;
    }
    match kind {
        Neg => g.neg(),                                         // d(−x) = −1
        Exp => g.mul(out),                                      // d eˣ = eˣ
        Log => g.div(x),                                        // d ln x = 1/x
        Sqrt => g.div(&out.mul_scalar(2.0)),                    // d √x = 1/(2√x)
        Square => g.mul(&x.mul_scalar(2.0)),                    // d x² = 2x
        Powf(0.0) => x.zeros_like(),                            // x⁰ = 1, also at x = 0 (torch)
        Powf(p) => g.mul(&x.powf(p - 1.0).mul_scalar(p)),       // d xᵖ = p xᵖ⁻¹
        Abs => g.mul(&x.sign()),                                // d |x| = sign x (0 at 0)
        Sigmoid => g.mul(&out.mul(&out.neg().add_scalar(1.0))), // d σ = σ(1 − σ)
        Tanh => g.mul(&out.square().neg().add_scalar(1.0)),     // d tanh = 1 − tanh²
        Relu => g.mul(&x.gt_scalar(0.0)),                       // d relu = [x > 0]
        Softplus => g.mul(&x.sigmoid()),                        // d softplus = σ(x)
        Elu(alpha) => {
            // d elu = 1 for x > 0, αeˣ = out + α otherwise
            let positive = x.gt_scalar(0.0);
            g.mul(&Tensor::where_(
                &positive,
                &Tensor::scalar(1.0),
                &out.add_scalar(alpha),
            ))
        }
        AddScalar(_) => g.clone(),       // d(x + c) = 1
        MulScalar(c) => g.mul_scalar(c), // d(cx) = c
        DivScalar(c) => g.div_scalar(c), // d(x/c) = 1/c
    }
}
// ANCHOR_END: unary_vjp

// ANCHOR: activation_derivatives
/// The derivatives of each activation f, written so that each is cheap given what is at hand:
/// `d1(x, y)` is f′(x) from x and y = f(x); `d2(x, y, d1)` is f″(x) from x, y and f′(x).
fn d1_softplus(x: f32, _y: f32) -> f32 {
    fastmath::sigmoid(x) // softplus′ = σ
}
fn d2_softplus(_x: f32, _y: f32, d1: f32) -> f32 {
    d1 * (1.0 - d1) // σ′ = σ(1 − σ)
}
fn d1_sigmoid(_x: f32, y: f32) -> f32 {
    y * (1.0 - y) // σ′ = σ(1 − σ)
}
fn d2_sigmoid(_x: f32, y: f32, d1: f32) -> f32 {
    d1 * (1.0 - 2.0 * y) // σ″ = σ′(1 − 2σ)
}
fn d1_tanh(_x: f32, y: f32) -> f32 {
    1.0 - y * y // tanh′ = 1 − tanh²
}
fn d2_tanh(_x: f32, y: f32, d1: f32) -> f32 {
    -2.0 * y * d1 // tanh″ = −2 tanh · tanh′
}
fn d1_relu(x: f32, _y: f32) -> f32 {
    if x > 0.0 { 1.0 } else { 0.0 }
}
fn d2_relu(_x: f32, _y: f32, _d1: f32) -> f32 {
    0.0
}
fn d1_elu(alpha: f32, x: f32, y: f32) -> f32 {
    if x > 0.0 { 1.0 } else { y + alpha } // for x ≤ 0, elu = α(eˣ − 1) and elu′ = αeˣ = y + α
}
fn d2_elu(x: f32, _y: f32, d1: f32) -> f32 {
    if x > 0.0 { 0.0 } else { d1 } // and elu″ = αeˣ too
}

/// Runs `$body` with `$d1` and `$d2` bound to the derivative functions of the activation `$kind`
/// (one closure type per activation, so that each loop in `$body` is compiled, and vectorised,
/// with its derivatives inlined); evaluates to `None` when `$kind` is not an activation.
macro_rules! with_derivatives {
    ($kind:expr, |$d1:ident, $d2:ident| $body:expr) => {
        match $kind {
            UnaryOp::Softplus => {
                let ($d1, $d2) = (d1_softplus, d2_softplus);
                Some($body)
            }
            UnaryOp::Sigmoid => {
                let ($d1, $d2) = (d1_sigmoid, d2_sigmoid);
                Some($body)
            }
            UnaryOp::Tanh => {
                let ($d1, $d2) = (d1_tanh, d2_tanh);
                Some($body)
            }
            UnaryOp::Relu => {
                let ($d1, $d2) = (d1_relu, d2_relu);
                Some($body)
            }
            UnaryOp::Elu(alpha) => {
                let ($d1, $d2) = (move |x, y| d1_elu(alpha, x, y), d2_elu);
                Some($body)
            }
            _ => None,
        }
    };
}
// ANCHOR_END: activation_derivatives

/// Whether `kind` is one of the activations [`with_derivatives!`] knows.
fn is_activation(kind: UnaryOp) -> bool {
    with_derivatives!(kind, |_d1, _d2| ()).is_some()
}

/// Whether x, out = f(x), the gradients `gs` and the saved derivative `dfdx` (if any) are CPU
/// tensors of one shape, which the fused passes below need (a broadcast gradient, or a tensor on
/// a device, takes the tensor-op road).
fn fusable(x: &Tensor, gs: &[&Tensor], dfdx: Option<&Tensor>) -> bool {
    x.device().is_cpu()
        && gs
            .iter()
            .chain(dfdx.as_ref())
            .all(|g| g.shape() == x.shape() && g.device().is_cpu())
}

/// Calls `f(range, out)` to fill `n` floats: once for the whole range for a small tensor, on
/// rayon chunks of [`PAR_CHUNK`] for a large one.
fn filled_chunks(
    n: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    super::filled(n, |out| {
        if n >= PAR_THRESHOLD {
            out.par_chunks_mut(PAR_CHUNK)
                .enumerate()
                .for_each(|(i, o)| f(i * PAR_CHUNK..i * PAR_CHUNK + o.len(), o));
        } else {
            f(0..n, out)
        }
    })
}

/// A CPU tensor of `shape` holding `v`, recording nothing.
fn leaf(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_array(ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape"))
}

// ANCHOR: softplus_saving_sigmoid
/// softplus(x) together with its derivative σ(x), in one pass: both come from e = e^−|x|, as
/// softplus(x) = max(x, 0) + ln(1 + e) and σ(x) = 1/(1 + e) for x ≥ 0, e/(1 + e) for x < 0.
/// The forward pass of a recorded softplus keeps σ(x) in its op: every derivative that a
/// backward pass — first or second order — takes of it is then a product with σ rather than a
/// fresh exponential and division per element (see [`activation_grad`]).
fn softplus_and_sigmoid(xs: &[f32]) -> (Vec<f32>, Vec<f32>) {
    type Out<'a> = &'a mut [std::mem::MaybeUninit<f32>];
    let n = xs.len();
    let mut sig = Vec::new();
    let y = super::filled(n, |py| {
        sig = super::filled(n, |ps| {
            let run = |xs: &[f32], py: Out, ps: Out| {
                fastmath::map_into2(xs, py, ps, |x| {
                    let e = fastmath::exp(-x.abs());
                    let r = 1.0 / (1.0 + e);
                    let s = if x >= 0.0 { r } else { e * r };
                    (x.max(0.0) + fastmath::log1p_unit(e), s)
                })
            };
            if n >= PAR_THRESHOLD {
                py.par_chunks_mut(PAR_CHUNK)
                    .zip(ps.par_chunks_mut(PAR_CHUNK))
                    .zip(xs.par_chunks(PAR_CHUNK))
                    .for_each(|((py, ps), xs)| run(xs, py, ps));
            } else {
                run(xs, py, ps)
            }
        })
    });
    (y, sig)
}
// ANCHOR_END: softplus_saving_sigmoid

// ANCHOR: activation_grad
/// ḡ ⊙ f′(x) for an activation f, with `out` = f(x) and `dfdx` = f′(x) when the forward pass
/// saved it: the VJP of `out`, in one pass over (x, out, ḡ) — or over (ḡ, f′) — instead of the
/// two to four passes of the tensor-op forms in [`vjp`]. When a graph is being recorded (a
/// backward pass with `create_graph`, as in exact and sliced score matching) the product is
/// one node, [`Op::ActivationGrad`], whose own VJP ([`activation_grad_vjp`]) knows f″. `None`
/// for other ops, for tensors on a device and for a broadcast ḡ: those take the tensor-op forms.
pub(crate) fn activation_grad(
    kind: UnaryOp,
    x: &Tensor,
    out: &Tensor,
    g: &Tensor,
    dfdx: Option<&Tensor>,
) -> Option<Tensor> {
    if !is_activation(kind) || !fusable(x, &[out, g], dfdx) {
        return None;
    }
    let c = super::contiguous;
    let (xs, ys, gs) = (x.storage(), out.storage(), g.storage());
    let (xs, ys, gs) = (c(&xs), c(&ys), c(&gs));
    let dx = match dfdx {
        Some(d) => {
            let ds = d.storage();
            let ds = c(&ds);
            filled_chunks(gs.len(), |r, o| {
                fastmath::zip_into(&gs[r.clone()], &ds[r], o, |g, d| g * d)
            })
        }
        None => with_derivatives!(kind, |d1, _d2| filled_chunks(xs.len(), |r, o| {
            let f = move |x, y, g: f32| g * d1(x, y);
            fastmath::zip3_into(&xs[r.clone()], &ys[r.clone()], &gs[r], o, f)
        }))?,
    };
    let op = Op::ActivationGrad {
        kind,
        x: x.clone(),
        out: out.clone(),
        g: g.clone(),
        dfdx: dfdx.cloned(),
    };
    let dx = ArrayD::from_shape_vec(IxDyn(x.shape()), dx).expect("shape");
    Some(Tensor::from_op(dx, op))
}

/// The VJP of `y = ḡ ⊙ f′(x)` (an [`Op::ActivationGrad`] node) for the gradient `h` = ∂L/∂y:
/// ∂L/∂x = h ⊙ ḡ ⊙ f″(x) and ∂L/∂ḡ = h ⊙ f′(x), in that order. Without a graph to record (the
/// last backward pass of a score-matching step) both come from one pass that evaluates f′ (or
/// reads it, when the forward pass saved it) and f″ together; with one, or when only one of the
/// two is wanted, they are tensor ops again ([`second_derivative`] and [`vjp`]).
pub(crate) fn activation_grad_vjp(
    kind: UnaryOp,
    (x, out, g, dfdx): (&Tensor, &Tensor, &Tensor, Option<&Tensor>),
    h: &Tensor,
    need: &[bool],
) -> Vec<Option<Tensor>> {
    if !super::is_grad_enabled() && need[0] && need[1] && fusable(x, &[out, g, h], dfdx) {
        let c = super::contiguous;
        let (xs, ys, gs, hs) = (x.storage(), out.storage(), g.storage(), h.storage());
        let (xs, ys, gs, hs) = (c(&xs), c(&ys), c(&gs), c(&hs));
        let ds = dfdx.map(|d| d.storage());
        let ds = ds.as_ref().map(|d| c(d));
        let n = xs.len();
        let pair = with_derivatives!(kind, |d1, d2| {
            // (∂L/∂x, ∂L/∂ḡ) = (h ḡ f″(x), h f′(x)) over the index range r, into (px, pg).
            type Out<'a> = &'a mut [std::mem::MaybeUninit<f32>];
            let run = |r: std::ops::Range<usize>, px: Out, pg: Out| {
                let ins = xs[r.clone()].iter().zip(&ys[r.clone()]);
                let ins = ins.zip(&gs[r.clone()]).zip(&hs[r.clone()]);
                let outs = px.iter_mut().zip(pg.iter_mut());
                let both = move |x, y, g: f32, h: f32, d: f32| (h * g * d2(x, y, d), h * d);
                fastmath::dispatch(
                    #[inline(always)]
                    || match &ds {
                        Some(ds) => {
                            let ins = ins.zip(&ds[r]);
                            for (((((&x, &y), &g), &h), &d), (px, pg)) in ins.zip(outs) {
                                let (a, b) = both(x, y, g, h, d);
                                px.write(a);
                                pg.write(b);
                            }
                        }
                        None => {
                            for ((((&x, &y), &g), &h), (px, pg)) in ins.zip(outs) {
                                let (a, b) = both(x, y, g, h, d1(x, y));
                                px.write(a);
                                pg.write(b);
                            }
                        }
                    },
                )
            };
            let mut dg = Vec::new();
            let dx = super::filled(n, |px| {
                dg = super::filled(n, |pg| {
                    if n >= PAR_THRESHOLD {
                        px.par_chunks_mut(PAR_CHUNK)
                            .zip(pg.par_chunks_mut(PAR_CHUNK))
                            .enumerate()
                            .for_each(|(i, (px, pg))| {
                                run(i * PAR_CHUNK..i * PAR_CHUNK + px.len(), px, pg)
                            });
                    } else {
                        run(0..n, px, pg)
                    }
                })
            });
            (dx, dg)
        });
        if let Some((dx, dg)) = pair {
            return vec![Some(leaf(x.shape(), dx)), Some(leaf(x.shape(), dg))];
        }
    }
    vec![
        need[0].then(|| h.mul(g).mul(&second_derivative(kind, x, out))),
        need[1].then(|| vjp(kind, x, out, h, dfdx)),
    ]
}
// ANCHOR_END: activation_grad

/// f″(x) for an activation, in tensor ops (so that it records a graph when one is being built),
/// from x and `out` = f(x).
fn second_derivative(kind: UnaryOp, x: &Tensor, out: &Tensor) -> Tensor {
    use UnaryOp::*;
    match kind {
        Softplus => {
            let s = x.sigmoid();
            s.mul(&s.neg().add_scalar(1.0))
        }
        Sigmoid => out
            .mul(&out.neg().add_scalar(1.0))
            .mul(&out.mul_scalar(-2.0).add_scalar(1.0)),
        Tanh => out
            .mul(&out.square().neg().add_scalar(1.0))
            .mul_scalar(-2.0),
        Relu => x.zeros_like(),
        Elu(alpha) => Tensor::where_(
            &x.gt_scalar(0.0),
            &Tensor::scalar(0.0),
            &out.add_scalar(alpha),
        ),
        _ => unreachable!("second_derivative: {} is not an activation", kind.name()),
    }
}

impl Tensor {
    /// Applies an elementwise function, recording it for autograd.
    // ANCHOR: unary_dispatch
    pub fn unary(&self, kind: UnaryOp) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::unary(kind, self) {
            return Tensor::from_op(d, Op::Unary(kind, self.clone(), None));
        }
        let x = self.storage();
        let x = x.as_standard_layout();
        let src = x.as_slice().expect("standard layout");
        if kind == UnaryOp::Softplus && super::is_grad_enabled() && self.requires_grad() {
            // Recorded: keep σ(x), the derivative every backward pass will ask for.
            let (y, sig) = softplus_and_sigmoid(src);
            let y = ArrayD::from_shape_vec(IxDyn(self.shape()), y).expect("shape");
            let op = Op::Unary(kind, self.clone(), Some(leaf(self.shape(), sig)));
            return Tensor::from_op(y, op);
        }
        let out = super::filled(src.len(), |out| {
            if src.len() >= PAR_THRESHOLD {
                out.par_chunks_mut(PAR_CHUNK)
                    .zip(src.par_chunks(PAR_CHUNK))
                    .for_each(|(o, i)| apply_slice(kind, i, o));
            } else {
                apply_slice(kind, src, out);
            }
        });
        let out = ArrayD::from_shape_vec(IxDyn(self.shape()), out).expect("shape");
        Tensor::from_op(out, Op::Unary(kind, self.clone(), None))
    }
    // ANCHOR_END: unary_dispatch

    /// −x
    pub fn neg(&self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
    /// eˣ
    pub fn exp(&self) -> Tensor {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        self.unary(UnaryOp::Log)
    }
    /// Square root.
    pub fn sqrt(&self) -> Tensor {
        self.unary(UnaryOp::Sqrt)
    }
    /// x²
    pub fn square(&self) -> Tensor {
        self.unary(UnaryOp::Square)
    }
    /// xᵖ for a constant p.
    pub fn powf(&self, p: f32) -> Tensor {
        self.unary(UnaryOp::Powf(p))
    }
    /// |x|
    pub fn abs(&self) -> Tensor {
        self.unary(UnaryOp::Abs)
    }
    /// The logistic function 1 / (1 + e⁻ˣ).
    pub fn sigmoid(&self) -> Tensor {
        self.unary(UnaryOp::Sigmoid)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        self.unary(UnaryOp::Tanh)
    }
    /// max(x, 0)
    pub fn relu(&self) -> Tensor {
        self.unary(UnaryOp::Relu)
    }
    /// ln(1 + eˣ), computed stably (PyTorch's `F.softplus` with β = 1).
    pub fn softplus(&self) -> Tensor {
        self.unary(UnaryOp::Softplus)
    }
    /// The exponential linear unit with parameter α (PyTorch's `nn.ELU` uses α = 1).
    pub fn elu(&self, alpha: f32) -> Tensor {
        self.unary(UnaryOp::Elu(alpha))
    }
    /// x + c
    pub fn add_scalar(&self, c: f32) -> Tensor {
        self.unary(UnaryOp::AddScalar(c))
    }
    /// x − c
    pub fn sub_scalar(&self, c: f32) -> Tensor {
        self.unary(UnaryOp::AddScalar(-c))
    }
    /// c · x
    pub fn mul_scalar(&self, c: f32) -> Tensor {
        self.unary(UnaryOp::MulScalar(c))
    }
    /// x / c, divided (as PyTorch's `x / c`), not multiplied by a rounded 1/c
    pub fn div_scalar(&self, c: f32) -> Tensor {
        self.unary(UnaryOp::DivScalar(c))
    }
    /// The sign of each element (−1, 0 or 1) as a constant: it has zero derivative almost
    /// everywhere, so it records nothing.
    pub fn sign(&self) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::sign(self) {
            return Tensor::make(d, None, false);
        }
        Tensor::from_array(self.storage().mapv(|v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            }
        }))
    }
}
