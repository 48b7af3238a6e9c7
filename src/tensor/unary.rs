//! Elementwise functions of one tensor: each forward rule beside its derivative.

use super::fastmath;
use super::{Op, Tensor};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Elements above which elementwise kernels split the work across threads with rayon. Below it,
/// the cost of waking threads exceeds the work (measured in `benches/ops.rs`).
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
            Relu => x.max(0.0),
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
        Relu => m(x, out, |v| v.max(0.0)),
        Softplus => m(x, out, fastmath::softplus),
        Elu(a) => m(
            x,
            out,
            move |v| if v > 0.0 { v } else { a * fastmath::expm1(v) },
        ),
        AddScalar(c) => m(x, out, move |v| v + c),
        MulScalar(c) => m(x, out, move |v| c * v),
    }
}

/// The gradient with respect to `x` of a scalar whose gradient with respect to `out = f(x)` is `g`.
/// Written in tensor ops, so that it can be differentiated again. Where the derivative is most
/// simply expressed through the output (exp, sqrt, sigmoid, tanh, elu) it reuses `out`.
// ANCHOR: unary_vjp
pub(crate) fn vjp(kind: UnaryOp, x: &Tensor, out: &Tensor, g: &Tensor) -> Tensor {
    use UnaryOp::*;
    if !super::is_grad_enabled()
        && let Some(dx) = fused_vjp(kind, x, out, g)
    {
        return dx;
    }
    match kind {
        Neg => g.neg(),                                         // d(−x) = −1
        Exp => g.mul(out),                                      // d eˣ = eˣ
        Log => g.div(x),                                        // d ln x = 1/x
        Sqrt => g.div(&out.mul_scalar(2.0)),                    // d √x = 1/(2√x)
        Square => g.mul(&x.mul_scalar(2.0)),                    // d x² = 2x
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
    }
}
// ANCHOR_END: unary_vjp

/// The same derivatives in one pass over (x, out, ḡ), for the activations, when no graph is being
/// recorded (a first-order backward pass): the tensor-op forms above take two to four passes
/// each. The values are those of the formulas above.
fn fused_vjp(kind: UnaryOp, x: &Tensor, out: &Tensor, g: &Tensor) -> Option<Tensor> {
    use UnaryOp::*;
    if g.shape() != x.shape() || !x.device().is_cpu() {
        return None; // on a device: the tensor-op form, which runs there
    }
    let (xs, ys, gs) = (x.storage(), out.storage(), g.storage());
    let (xs, ys, gs) = (
        super::contiguous(&xs),
        super::contiguous(&ys),
        super::contiguous(&gs),
    );
    // One monomorphised loop per activation, so that the derivative inlines into it.
    fn run(
        xs: &[f32],
        ys: &[f32],
        gs: &[f32],
        d: impl Fn(f32, f32) -> f32 + Copy + Sync,
    ) -> Vec<f32> {
        let f = move |x, y, g| g * d(x, y);
        super::filled(xs.len(), |out| {
            if xs.len() >= PAR_THRESHOLD {
                out.par_chunks_mut(PAR_CHUNK)
                    .enumerate()
                    .for_each(|(i, o)| {
                        let r = i * PAR_CHUNK..i * PAR_CHUNK + o.len();
                        fastmath::zip3_into(&xs[r.clone()], &ys[r.clone()], &gs[r], o, f)
                    });
            } else {
                fastmath::zip3_into(xs, ys, gs, out, f);
            }
        })
    }
    let (xs, ys, gs) = (&xs[..], &ys[..], &gs[..]);
    let dx = match kind {
        Elu(alpha) => run(
            xs,
            ys,
            gs,
            move |x, y| if x > 0.0 { 1.0 } else { y + alpha },
        ),
        Relu => run(xs, ys, gs, |x, _| if x > 0.0 { 1.0 } else { 0.0 }),
        Tanh => run(xs, ys, gs, |_, y| 1.0 - y * y),
        Sigmoid => run(xs, ys, gs, |_, y| y * (1.0 - y)),
        Softplus => run(xs, ys, gs, |x, _| fastmath::sigmoid(x)),
        _ => return None,
    };
    Some(Tensor::from_array(
        ArrayD::from_shape_vec(IxDyn(x.shape()), dx).expect("shape"),
    ))
}

impl Tensor {
    /// Applies an elementwise function, recording it for autograd.
    // ANCHOR: unary_dispatch
    pub fn unary(&self, kind: UnaryOp) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::unary(kind, self) {
            return Tensor::from_op(d, Op::Unary(kind, self.clone()));
        }
        let x = self.storage();
        let x = x.as_standard_layout();
        let src = x.as_slice().expect("standard layout");
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
        Tensor::from_op(out, Op::Unary(kind, self.clone()))
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
    /// x / c
    pub fn div_scalar(&self, c: f32) -> Tensor {
        self.unary(UnaryOp::MulScalar(1.0 / c))
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
