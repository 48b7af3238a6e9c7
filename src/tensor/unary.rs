//! Elementwise functions of one tensor: each forward rule beside its derivative.

use super::{Op, Tensor};
use ndarray::{IxDyn, Zip};

/// Elements above which elementwise kernels split the work across threads with rayon. Below it,
/// the cost of waking threads exceeds the work (measured in `benches/ops.rs`).
pub(crate) const PAR_THRESHOLD: usize = 1 << 16;

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
            Exp => x.exp(),
            Log => x.ln(),
            Sqrt => x.sqrt(),
            Square => x * x,
            Powf(p) => x.powf(p),
            Abs => x.abs(),
            Sigmoid => sigmoid_f32(x),
            Tanh => x.tanh(),
            Relu => x.max(0.0),
            // max(x, 0) + ln(1 + e^{-|x|}): no overflow for large x, no loss for very negative x.
            Softplus => softplus_f32(x),
            Elu(alpha) => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x.exp_m1()
                }
            }
            AddScalar(c) => x + c,
            MulScalar(c) => c * x,
        }
    }
    // ANCHOR_END: unary_forward
}

/// Applies `kind` elementwise. The `match` sits outside the loop, so that each loop body is one
/// known function that the compiler inlines and vectorises (a `match` per element, as a single
/// closure over `kind` would be, keeps the loop scalar).
fn map_kernel(x: &super::Storage, kind: UnaryOp) -> ndarray::ArrayD<f32> {
    fn map(x: &super::Storage, f: impl Fn(f32) -> f32 + Sync + Send) -> ndarray::ArrayD<f32> {
        if x.len() >= PAR_THRESHOLD {
            Zip::from(x).par_map_collect(|&v| f(v))
        } else if let Some(s) = x.as_slice_memory_order() {
            // Contiguous data (the common case): one pass over a slice, kept in memory order.
            let out: Vec<f32> = s.iter().map(|&v| f(v)).collect();
            let a = ndarray::ArrayD::from_shape_vec(IxDyn(&[s.len()]), out).expect("len");
            if x.is_standard_layout() {
                a.into_shape_with_order(IxDyn(x.shape())).expect("shape")
            } else {
                x.mapv(&f)
            }
        } else {
            x.mapv(f)
        }
    }
    use UnaryOp::*;
    match kind {
        Neg => map(x, |v| -v),
        Exp => map(x, |v| v.exp()),
        Log => map(x, |v| v.ln()),
        Sqrt => map(x, |v| v.sqrt()),
        Square => map(x, |v| v * v),
        Sigmoid => map(x, sigmoid_f32),
        Tanh => map(x, |v| v.tanh()),
        Relu => map(x, |v| v.max(0.0)),
        Softplus => map(x, softplus_f32),
        AddScalar(c) => map(x, move |v| v + c),
        MulScalar(c) => map(x, move |v| c * v),
        other => map(x, move |v| other.apply(v)),
    }
}

// ANCHOR: fast_exp
/// e^x for x ≤ 0, by the Cephes `expf` method with plain arithmetic, so that loops over it
/// vectorise (libm's `expf` is an opaque call per element). Write x = n ln 2 + r with n an integer
/// and |r| ≤ ½ ln 2; then e^x = 2ⁿ e^r, with e^r from a degree-7 polynomial (relative error below
/// 2e-7 on that interval, about one f32 ulp) and 2ⁿ built in the exponent bits. Arguments below
/// −87.3 are clamped there, so the result is at least ~1e-38 (the true value is a subnormal or 0).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; //  ln 2 split in two so that n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; //  1.5·2²³: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.3, 0.0);
    let shifted = x * LOG2E + ROUND; //  = 1.5·2²³ + n exactly, so its low mantissa bits hold n
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0; //                                    e^r
    // 2ⁿ for n ∈ [−126, 0]: the biased exponent n + 127 in the exponent field. The bits of
    // `shifted` are 0x4B40_0000 + n; integer arithmetic on them avoids a float-to-int conversion,
    // which Rust makes saturating (scalar code) and which would stop the loop from vectorising.
    let two_n = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    er * two_n
}
// ANCHOR_END: fast_exp

/// ln(1 + u) for u ∈ [0, 1] as 2 atanh(s) with s = u/(2 + u) ∈ [0, ⅓] (an identity, exact for
/// every u, so no precision is lost for tiny u as ln(1 + u) would): the odd series
/// 2(s + s³/3 + … + s¹³/13) has truncation error below 2·(⅓)¹⁵/15 ≈ 9e-9.
#[inline(always)]
fn ln_1p_unit(u: f32) -> f32 {
    let s = u / (2.0 + u);
    let s2 = s * s;
    let p = 1.0 / 13.0;
    let p = p * s2 + 1.0 / 11.0;
    let p = p * s2 + 1.0 / 9.0;
    let p = p * s2 + 1.0 / 7.0;
    let p = p * s2 + 1.0 / 5.0;
    let p = p * s2 + 1.0 / 3.0;
    let p = p * s2 + 1.0;
    2.0 * s * p
}

/// softplus(x) = ln(1 + eˣ) = max(x, 0) + ln(1 + e^{−|x|}), branch-free and vectorisable.
#[inline(always)]
fn softplus_f32(x: f32) -> f32 {
    x.max(0.0) + ln_1p_unit(exp_nonpositive(-x.abs()))
}

/// σ(x) = 1/(1 + e^{−x}), as 1/(1 + u) for x ≥ 0 and u/(1 + u) for x < 0 with u = e^{−|x|} ≤ 1, so
/// nothing overflows.
#[inline(always)]
fn sigmoid_f32(x: f32) -> f32 {
    let u = exp_nonpositive(-x.abs());
    let num = if x >= 0.0 { 1.0 } else { u };
    num / (1.0 + u)
}

/// The gradient with respect to `x` of a scalar whose gradient with respect to `out = f(x)` is `g`.
/// Written in tensor ops, so that it can be differentiated again. Where the derivative is most
/// simply expressed through the output (exp, sqrt, sigmoid, tanh, elu) it reuses `out`.
// ANCHOR: unary_vjp
pub(crate) fn vjp(kind: UnaryOp, x: &Tensor, out: &Tensor, g: &Tensor) -> Tensor {
    use UnaryOp::*;
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

impl Tensor {
    /// Applies an elementwise function, recording it for autograd.
    pub fn unary(&self, kind: UnaryOp) -> Tensor {
        let x = self.storage();
        let out = map_kernel(&x, kind);
        Tensor::from_op(out, Op::Unary(kind, self.clone()))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorisable exp, softplus and sigmoid agree with libm-based formulas to a few f32 ulps
    /// (relative error ≤ 1e-6; one ulp is 6e-8 to 1.2e-7) over the range where the results are
    /// normal numbers.
    #[test]
    fn fast_transcendentals_match_libm() {
        let mut worst = [0.0f64; 3];
        for i in 0..=200_000 {
            let x = -80.0 + 160.0 * i as f32 / 200_000.0;
            let e = exp_nonpositive(-x.abs()) as f64;
            let e_ref = (-(x.abs() as f64)).exp();
            let sp = softplus_f32(x) as f64;
            let sp_ref = (x as f64).max(0.0) + (-(x.abs() as f64)).exp().ln_1p();
            let sg = sigmoid_f32(x) as f64;
            let sg_ref = 1.0 / (1.0 + (-(x as f64)).exp());
            for (w, (a, b)) in worst.iter_mut().zip([(e, e_ref), (sp, sp_ref), (sg, sg_ref)]) {
                *w = w.max(((a - b) / b).abs());
            }
        }
        assert!(worst.iter().all(|&w| w < 1e-6), "relative errors {worst:?}");
    }
}
