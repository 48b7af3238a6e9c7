//! The Vulkan kernels against plain CPU computations.
//!
//! Run with `cargo test --release --features vulkan --test vulkan`; lavapipe (Mesa's CPU Vulkan
//! driver, Debian `mesa-vulkan-drivers`) is enough.
//!
//! Tolerances. References are computed in f64 unless a test says otherwise. Where a kernel sums
//! `n` products in f32, in an order that differs from the reference's, the classical a-priori
//! bound for recursive summation applies to any order: `|fl(Σ) − Σ| ≤ γ_n Σ|terms|` with
//! `γ_n = n·u / (1 − n·u)` and `u = 2⁻²⁴`; we test against `2·n·u·Σ|terms|` (the factor 2 covers
//! `1/(1 − n·u)` and the final rounding to f32). For transcendental functions the bounds are the
//! precision the Vulkan specification requires of SPIR-V's GLSL.std.450 instructions
//! (Vulkan spec, "Precision and Operation of SPIR-V Instructions"), so they hold on any conformant
//! driver, not just lavapipe. Sizes are odd on purpose: they do not divide the 256-thread
//! workgroups or the 128 × 128 GEMM tiles.

#![cfg(feature = "vulkan")]

use std::f32::consts::PI;
use std::sync::OnceLock;

use ncsn::backend::vulkan::{
    AdamConfig, BinaryOp, Conv2dParams, DeviceBuffer, KernelVariant, RECORD_FLUSH_BYTES, Recorder,
    ReduceOp, Strided, Transfers, UnaryOp, VulkanContext, broadcast_shape,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Unit roundoff of f32.
const U: f64 = 1.0 / (1u64 << 24) as f64;

fn ctx() -> &'static VulkanContext {
    static CTX: OnceLock<VulkanContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = VulkanContext::new().expect("a Vulkan device (lavapipe will do)");
        eprintln!(
            "vulkan device: {} ({:?}), NaN-preserving kernels: {}",
            ctx.device_name(),
            ctx.device_type(),
            ctx.preserves_nan()
        );
        ctx
    })
}

fn random(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn up(data: &[f32], shape: &[usize]) -> DeviceBuffer {
    ctx().upload(data, shape).unwrap()
}

fn down(b: &DeviceBuffer) -> Vec<f32> {
    ctx().download(b).unwrap()
}

/// Asserts `|got − want| ≤ tol` elementwise, naming the first failure. NaN is met only by NaN and
/// an infinity only by the same infinity (a tolerance relative to an infinite `want` would be
/// infinite, and pass any number).
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let t = tol(i);
        let ok = if w.is_nan() || w.is_infinite() {
            g as f64 == w || (g.is_nan() && w.is_nan())
        } else {
            (g as f64 - w).abs() <= t
        };
        assert!(
            ok,
            "{what}: element {i}: got {g}, want {w}, |diff| {} > tol {t}",
            (g as f64 - w).abs()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// GEMM

fn to_f64(v: &[f32], r: usize, c: usize) -> Array2<f64> {
    Array2::from_shape_vec((r, c), v.iter().map(|&x| x as f64).collect()).unwrap()
}

/// `op(a) · op(b)` and `|op(a)| · |op(b)|` (for the error bound) in f64.
fn gemm_ref(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> (Vec<f64>, Vec<f64>) {
    let a = if ta {
        to_f64(a, k, m).reversed_axes()
    } else {
        to_f64(a, m, k)
    };
    let b = if tb {
        to_f64(b, n, k).reversed_axes()
    } else {
        to_f64(b, k, n)
    };
    let c = a.dot(&b);
    let abs = a.mapv(f64::abs).dot(&b.mapv(f64::abs));
    (c.iter().copied().collect(), abs.iter().copied().collect())
}

/// GEMM: each entry is a length-K dot product, bound `2·K·u·Σ|a_ik b_kj|`.
#[test]
fn gemm_matches_cpu_all_transposes_and_ragged_sizes() {
    for (m, k, n) in [
        (1, 1, 1),
        (67, 33, 45),
        (130, 17, 71),
        (5, 200, 3),
        (19, 9, 259),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = random(m * k, -1.0, 1.0, 1);
            let b = random(k * n, -1.0, 1.0, 2);
            let sa = if ta { [k, m] } else { [m, k] };
            let sb = if tb { [n, k] } else { [k, n] };
            let (da, db) = (up(&a, &sa), up(&b, &sb));
            let c = ctx().run(|r| r.matmul(&da, &db, ta, tb)).unwrap();
            assert_eq!(c.shape(), [m, n]);
            let (want, abs) = gemm_ref(&a, &b, m, k, n, ta, tb);
            let what = format!("gemm {m}x{k}x{n} ta={ta} tb={tb}");
            assert_close(&what, &down(&c), &want, |i| {
                2.0 * k as f64 * U * abs[i] + 1e-30
            });
        }
    }
}

/// Batched GEMM, with a batch on both sides and with a shared right operand (batch stride 0).
#[test]
fn gemm_batched_and_broadcast() {
    let (bt, m, k, n) = (3, 37, 29, 41);
    let a = random(bt * m * k, -1.0, 1.0, 3);
    let b = random(bt * k * n, -1.0, 1.0, 4);
    let da = up(&a, &[bt, m, k]);
    let db = up(&b, &[bt, k, n]);
    let db0 = up(&b[..k * n], &[k, n]);
    let (c, c0) = ctx()
        .run(|r| {
            Ok((
                r.matmul(&da, &db, false, false)?,
                r.matmul(&da, &db0, false, false)?,
            ))
        })
        .unwrap();
    assert_eq!(c.shape(), [bt, m, n]);
    let (got, got0) = (down(&c), down(&c0));
    for i in 0..bt {
        let ai = &a[i * m * k..(i + 1) * m * k];
        let (want, abs) = gemm_ref(ai, &b[i * k * n..(i + 1) * k * n], m, k, n, false, false);
        assert_close(
            "batched gemm",
            &got[i * m * n..(i + 1) * m * n],
            &want,
            |j| 2.0 * k as f64 * U * abs[j],
        );
        let (want, abs) = gemm_ref(ai, &b[..k * n], m, k, n, false, false);
        assert_close(
            "broadcast gemm",
            &got0[i * m * n..(i + 1) * m * n],
            &want,
            |j| 2.0 * k as f64 * U * abs[j],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution

struct ConvCase {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: (usize, usize),
    p: Conv2dParams,
}

/// The output size, by PyTorch's formula ⌊(h + 2p − d(k − 1) − 1)/s⌋ + 1 per axis, written out
/// here rather than taken from `Conv2dParams::out_hw`, so that a fault there (an axis swapped, the
/// dilation left out) cannot pass into the expected shapes; the library's own answer is held to
/// it.
fn out_hw(c: &ConvCase) -> (usize, usize) {
    let axis = |size: usize, k: usize, s: usize, p: usize, d: usize| {
        (size + 2 * p - d * (k - 1) - 1) / s + 1
    };
    let (p, k) = (&c.p, c.k);
    let want = (
        axis(c.h, k.0, p.stride.0, p.padding.0, p.dilation.0),
        axis(c.w, k.1, p.stride.1, p.padding.1, p.dilation.1),
    );
    assert_eq!(p.out_hw((c.h, c.w), k), want, "Conv2dParams::out_hw");
    want
}

/// The input pixel tap (ki, kj) of output (oh, ow) reads, if inside the image.
fn tap(c: &ConvCase, oh: usize, ow: usize, ki: usize, kj: usize) -> Option<(usize, usize)> {
    let ih = (oh * c.p.stride.0 + ki * c.p.dilation.0) as isize - c.p.padding.0 as isize;
    let iw = (ow * c.p.stride.1 + kj * c.p.dilation.1) as isize - c.p.padding.1 as isize;
    (ih >= 0 && iw >= 0 && (ih as usize) < c.h && (iw as usize) < c.w)
        .then_some((ih as usize, iw as usize))
}

/// Direct 7-loop convolution in f64; calls `f(n, co, oh, ow, ci, ki, kj, ih, iw)` for each
/// in-bounds tap. The three references below are this loop with different accumulators.
fn for_each_tap(c: &ConvCase, mut f: impl FnMut([usize; 9])) {
    let (ho, wo) = out_hw(c);
    for n in 0..c.n {
        for co in 0..c.cout {
            for oh in 0..ho {
                for ow in 0..wo {
                    for ci in 0..c.cin {
                        for ki in 0..c.k.0 {
                            for kj in 0..c.k.1 {
                                if let Some((ih, iw)) = tap(c, oh, ow, ki, kj) {
                                    f([n, co, oh, ow, ci, ki, kj, ih, iw]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn conv_cases() -> Vec<ConvCase> {
    // (n, cin, (h, w), cout, (kh, kw), stride, padding, dilation)
    type Row = (usize, usize, (usize, usize), usize, (usize, usize));
    type Hw = (usize, usize);
    let case = |(n, cin, (h, w), cout, k): Row, stride: Hw, padding: Hw, dilation: Hw| ConvCase {
        n,
        cin,
        h,
        w,
        cout,
        k,
        p: Conv2dParams {
            stride,
            padding,
            dilation,
        },
    };
    vec![
        case((2, 3, (9, 7), 5, (3, 3)), (1, 1), (1, 1), (1, 1)),
        case((1, 2, (11, 10), 3, (3, 2)), (2, 3), (1, 0), (2, 1)),
        // More than one 128-wide tile along M and N of the forward and weight-gradient GEMMs, and
        // along N of the input gradient's.
        case((4, 15, (7, 6), 130, (3, 3)), (1, 1), (1, 2), (1, 1)),
        case((2, 4, (8, 8), 6, (1, 1)), (2, 2), (0, 0), (1, 1)),
        // The weight gradient's K = n·ho·wo = 1156 is split four ways (chunks of 296, the last
        // of 268, which is not a whole number of 8-deep k-tiles) and the partial sums added.
        case((4, 2, (17, 17), 3, (3, 3)), (1, 1), (1, 1), (1, 1)),
        // More input channels than one 128-row tile of the input gradient holds, with few output
        // channels: its second row of workgroups exists only if counted from cin, not cout.
        case((1, 131, (5, 4), 2, (1, 1)), (1, 1), (0, 0), (1, 1)),
        // Stride 2: the input gradient's 512 pixels take four tiles of 128, the 128 output
        // pixels one; its workgroups are counted from the input.
        case((2, 3, (16, 16), 4, (3, 3)), (2, 2), (1, 1), (1, 1)),
    ]
}

/// Forward: each output is a dot product over cin·kh·kw taps plus the bias, bound
/// `2·(K + 1)·u·(Σ|w x| + |b|)` with K = cin·kh·kw.
#[test]
fn conv2d_forward_matches_direct_loop() {
    for (ci, c) in conv_cases().iter().enumerate() {
        let (ho, wo) = out_hw(c);
        let x = random(c.n * c.cin * c.h * c.w, -1.0, 1.0, 10 + ci as u64);
        let wt = random(c.cout * c.cin * c.k.0 * c.k.1, -1.0, 1.0, 20 + ci as u64);
        let bias = random(c.cout, -1.0, 1.0, 30 + ci as u64);
        let dx = up(&x, &[c.n, c.cin, c.h, c.w]);
        let dw = up(&wt, &[c.cout, c.cin, c.k.0, c.k.1]);
        let db = up(&bias, &[c.cout]);
        let (y, y_nb) = ctx()
            .run(|r| {
                Ok((
                    r.conv2d(&dx, &dw, Some(&db), c.p)?,
                    r.conv2d(&dx, &dw, None, c.p)?,
                ))
            })
            .unwrap();
        assert_eq!(y.shape(), [c.n, c.cout, ho, wo]);
        let len = c.n * c.cout * ho * wo;
        let (mut want, mut abs) = (vec![0.0f64; len], vec![0.0f64; len]);
        for_each_tap(c, |[n, co, oh, ow, ci, ki, kj, ih, iw]| {
            let o = ((n * c.cout + co) * ho + oh) * wo + ow;
            let prod = wt[((co * c.cin + ci) * c.k.0 + ki) * c.k.1 + kj] as f64
                * x[((n * c.cin + ci) * c.h + ih) * c.w + iw] as f64;
            want[o] += prod;
            abs[o] += prod.abs();
        });
        let kk = (c.cin * c.k.0 * c.k.1 + 1) as f64;
        assert_close("conv2d (no bias)", &down(&y_nb), &want, |i| {
            2.0 * kk * U * abs[i]
        });
        for i in 0..len {
            let co = (i / (ho * wo)) % c.cout;
            want[i] += bias[co] as f64;
            abs[i] += (bias[co] as f64).abs();
        }
        assert_close("conv2d", &down(&y), &want, |i| 2.0 * kk * U * abs[i]);
    }
}

/// Input gradient: dx[n,ci,ih,iw] = Σ w·dy over the taps that read (ih, iw). The kernel's K is
/// cout·kh·kw (zeros included, which add exactly), bound `2·K·u·Σ|w dy|`.
#[test]
fn conv2d_input_grad_matches_direct_loop() {
    for (ci, c) in conv_cases().iter().enumerate() {
        let (ho, wo) = out_hw(c);
        let dy = random(c.n * c.cout * ho * wo, -1.0, 1.0, 40 + ci as u64);
        let wt = random(c.cout * c.cin * c.k.0 * c.k.1, -1.0, 1.0, 50 + ci as u64);
        let ddy = up(&dy, &[c.n, c.cout, ho, wo]);
        let dw = up(&wt, &[c.cout, c.cin, c.k.0, c.k.1]);
        let dx = ctx()
            .run(|r| r.conv2d_input_grad(&ddy, &dw, (c.h, c.w), c.p))
            .unwrap();
        assert_eq!(dx.shape(), [c.n, c.cin, c.h, c.w]);
        let len = c.n * c.cin * c.h * c.w;
        let (mut want, mut abs) = (vec![0.0f64; len], vec![0.0f64; len]);
        for_each_tap(c, |[n, co, oh, ow, ci, ki, kj, ih, iw]| {
            let o = ((n * c.cin + ci) * c.h + ih) * c.w + iw;
            let prod = wt[((co * c.cin + ci) * c.k.0 + ki) * c.k.1 + kj] as f64
                * dy[((n * c.cout + co) * ho + oh) * wo + ow] as f64;
            want[o] += prod;
            abs[o] += prod.abs();
        });
        let kk = (c.cout * c.k.0 * c.k.1) as f64;
        assert_close("conv2d_input_grad", &down(&dx), &want, |i| {
            2.0 * kk * U * abs[i]
        });
    }
}

/// Weight gradient: dw[co,ci,ki,kj] = Σ over n, oh, ow of dy·x, K = n·ho·wo, bound
/// `2·K·u·Σ|dy x|`. The bias gradient is the reduction of dy over (n, h, w): same bound, K terms.
#[test]
fn conv2d_weight_and_bias_grad_match_direct_loop() {
    for (ci, c) in conv_cases().iter().enumerate() {
        let (ho, wo) = out_hw(c);
        let x = random(c.n * c.cin * c.h * c.w, -1.0, 1.0, 60 + ci as u64);
        let dy = random(c.n * c.cout * ho * wo, -1.0, 1.0, 70 + ci as u64);
        let dx = up(&x, &[c.n, c.cin, c.h, c.w]);
        let ddy = up(&dy, &[c.n, c.cout, ho, wo]);
        let (dw, db) = ctx()
            .run(|r| {
                Ok((
                    r.conv2d_weight_grad(&dx, &ddy, c.k, c.p)?,
                    r.reduce(ReduceOp::Sum, &ddy, &[0, 2, 3], false)?,
                ))
            })
            .unwrap();
        assert_eq!(dw.shape(), [c.cout, c.cin, c.k.0, c.k.1]);
        let len = c.cout * c.cin * c.k.0 * c.k.1;
        let (mut want, mut abs) = (vec![0.0f64; len], vec![0.0f64; len]);
        for_each_tap(c, |[n, co, oh, ow, ci, ki, kj, ih, iw]| {
            let o = ((co * c.cin + ci) * c.k.0 + ki) * c.k.1 + kj;
            let prod = dy[((n * c.cout + co) * ho + oh) * wo + ow] as f64
                * x[((n * c.cin + ci) * c.h + ih) * c.w + iw] as f64;
            want[o] += prod;
            abs[o] += prod.abs();
        });
        let kk = (c.n * ho * wo) as f64;
        assert_close("conv2d_weight_grad", &down(&dw), &want, |i| {
            2.0 * kk * U * abs[i]
        });
        let (mut bw, mut babs) = (vec![0.0f64; c.cout], vec![0.0f64; c.cout]);
        for (i, &v) in dy.iter().enumerate() {
            bw[(i / (ho * wo)) % c.cout] += v as f64;
            babs[(i / (ho * wo)) % c.cout] += (v as f64).abs();
        }
        assert_close("conv2d bias grad", &down(&db), &bw, |i| {
            2.0 * kk * U * babs[i]
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise

/// ULP of f32 at `v` (for |v| in the normal range), as f64.
fn ulp(v: f64) -> f64 {
    let v = v.abs().max(f32::MIN_POSITIVE as f64);
    2f64.powi(v.log2().floor() as i32 - 23)
}

/// Each unary op against f64 on 1001 inputs. Bounds from the Vulkan precision table:
/// exact ops (neg, abs, relu, leaky relu, ×, +) are correctly rounded: ½ ULP;
/// 1/x: 2.5 ULP; exp: (3 + 2|x|) ULP; log: 3 ULP, or 2⁻²¹ absolute on [0.5, 2];
/// sqrt (inherited from 1/inversesqrt): inversesqrt's 2 ULP, which can be 4 ULP of the result
/// across a power of two, plus the division's 2.5, rounded up to 8 ULP;
/// sin, cos: 2⁻¹¹ absolute on [−π, π].
/// Ops the spec defines through exp/log (tanh, sigmoid, softplus, elu, pow) inherit those
/// errors through a couple of further roundings: we allow 1e−5 relative plus 2e−6 absolute, a
/// bound on the propagated exp error (≤ 11 ULP ≈ 1.3e−6 relative for |x| ≤ 4) with margin.
#[test]
fn unary_ops_match_cpu() {
    let n = 1001;
    type Case = (UnaryOp, f32, f32, fn(f64) -> f64, fn(f64, f64) -> f64);
    let derived = |want: f64, _x: f64| 1e-5 * want.abs() + 2e-6;
    let cases: Vec<Case> = vec![
        (UnaryOp::Neg, -4.0, 4.0, |x| -x, |w, _| 0.5 * ulp(w)),
        (UnaryOp::Abs, -4.0, 4.0, f64::abs, |w, _| 0.5 * ulp(w)),
        (
            UnaryOp::Relu,
            -4.0,
            4.0,
            |x| x.max(0.0),
            |w, _| 0.5 * ulp(w),
        ),
        (
            UnaryOp::LeakyRelu(0.2),
            -4.0,
            4.0,
            |x| if x > 0.0 { x } else { 0.2f32 as f64 * x },
            |w, _| 0.5 * ulp(w),
        ),
        (UnaryOp::Square, -4.0, 4.0, |x| x * x, |w, _| 0.5 * ulp(w)),
        (
            UnaryOp::AddScalar(0.75),
            -4.0,
            4.0,
            |x| x + 0.75,
            |w, _| 0.5 * ulp(w),
        ),
        (
            UnaryOp::MulScalar(-1.5),
            -4.0,
            4.0,
            |x| x * -1.5,
            |w, _| 0.5 * ulp(w),
        ),
        (UnaryOp::Recip, 0.1, 4.0, |x| 1.0 / x, |w, _| 2.5 * ulp(w)),
        (
            UnaryOp::DivScalar(3.0),
            -4.0,
            4.0,
            |x| x / 3.0,
            |w, _| 2.5 * ulp(w),
        ),
        (UnaryOp::Exp, -4.0, 4.0, f64::exp, |w, x| {
            (3.0 + 2.0 * x.abs()) * ulp(w)
        }),
        (UnaryOp::Log, 0.01, 8.0, f64::ln, |w, x| {
            if (0.5..=2.0).contains(&x) {
                2f64.powi(-21)
            } else {
                3.0 * ulp(w)
            }
        }),
        (UnaryOp::Sqrt, 0.0, 8.0, f64::sqrt, |w, _| 8.0 * ulp(w)),
        (UnaryOp::Sin, -PI, PI, f64::sin, |_, _| 2f64.powi(-11)),
        (UnaryOp::Cos, -PI, PI, f64::cos, |_, _| 2f64.powi(-11)),
        (UnaryOp::Tanh, -20.0, 20.0, f64::tanh, derived),
        (
            UnaryOp::Sigmoid,
            -20.0,
            20.0,
            |x| 1.0 / (1.0 + (-x).exp()),
            derived,
        ),
        (
            UnaryOp::Softplus,
            -25.0,
            25.0,
            |x| if x > 20.0 { x } else { x.exp().ln_1p() },
            derived,
        ),
        (
            UnaryOp::Elu(1.3),
            -4.0,
            4.0,
            |x| {
                if x > 0.0 {
                    x
                } else {
                    1.3f32 as f64 * x.exp_m1()
                }
            },
            derived,
        ),
        (
            UnaryOp::Powf(1.7),
            0.0,
            4.0,
            |x| x.powf(1.7f32 as f64),
            derived,
        ),
        // Negative bases with an integer exponent: the sign of an odd power is kept.
        (UnaryOp::Powf(3.0), -4.0, 4.0, |x| x.powi(3), derived),
        (UnaryOp::Powf(-2.0), 0.25, 4.0, |x| x.powi(-2), derived),
    ];
    for (k, (op, lo, hi, f, tol)) in cases.into_iter().enumerate() {
        let x = random(n, lo, hi, 100 + k as u64);
        let y = ctx().run(|r| r.unary(op, &up(&x, &[7, 11, 13]))).unwrap();
        assert_eq!(y.shape(), [7, 11, 13]);
        let want: Vec<f64> = x.iter().map(|&v| f(v as f64)).collect();
        assert_close(&format!("{op:?}"), &down(&y), &want, |i| {
            tol(want[i], x[i] as f64)
        });
    }
}

#[test]
fn broadcast_shapes_follow_numpy() {
    assert_eq!(broadcast_shape(&[3, 1, 5], &[4, 1]), Some(vec![3, 4, 5]));
    assert_eq!(broadcast_shape(&[], &[2, 3]), Some(vec![2, 3]));
    assert_eq!(broadcast_shape(&[2, 3], &[3, 2]), None);
    assert_eq!(broadcast_shape(&[0, 1], &[1, 4]), Some(vec![0, 4]));
}

/// Binary ops with broadcasting against f32 on the host: +, −, ×, max, min are correctly
/// rounded in Vulkan, so they must match the host's f32 result exactly; ÷ is 2.5 ULP; pow is
/// defined as exp2(y·log2 x) and gets the derived bound of the unary test.
#[test]
fn binary_ops_broadcast_like_numpy() {
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[3, 1, 5], &[4, 1]),
        (&[7], &[2, 3, 7]),
        (&[2, 3, 4], &[2, 3, 4]),
        (&[], &[5, 3]),
        (&[2, 1, 3, 1, 5, 1], &[1, 4, 1, 3, 1, 2]),
    ];
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Pow,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Eq,
    ];
    for (s, (sa, sb)) in shapes.iter().enumerate() {
        let out_shape = broadcast_shape(sa, sb).unwrap();
        let a = random(sa.iter().product(), 0.1, 2.0, 200 + s as u64);
        let b = random(sb.iter().product(), -2.0, 2.0, 300 + s as u64);
        let (da, db) = (up(&a, sa), up(&b, sb));
        for op in ops {
            let z = ctx().run(|r| r.binary(op, &da, &db)).unwrap();
            assert_eq!(z.shape(), out_shape.as_slice());
            let got = down(&z);
            assert_eq!(got.len(), out_shape.iter().product::<usize>());
            for (i, &g) in got.iter().enumerate() {
                let (ia, ib) = broadcast_sources(i, &out_shape, sa, sb);
                let (u, v) = (a[ia], b[ib]);
                let (want, tol) = match op {
                    BinaryOp::Add => ((u + v) as f64, 0.0),
                    BinaryOp::Sub => ((u - v) as f64, 0.0),
                    BinaryOp::Mul => ((u * v) as f64, 0.0),
                    BinaryOp::Max => (u.max(v) as f64, 0.0),
                    BinaryOp::Min => (u.min(v) as f64, 0.0),
                    BinaryOp::Div => {
                        let w = u as f64 / v as f64;
                        (w, 2.5 * ulp(w))
                    }
                    BinaryOp::Pow => {
                        let w = (u as f64).powf(v as f64);
                        (w, 1e-5 * w.abs() + 2e-6)
                    }
                    BinaryOp::Gt => (f64::from(u8::from(u > v)), 0.0),
                    BinaryOp::Ge => (f64::from(u8::from(u >= v)), 0.0),
                    BinaryOp::Lt => (f64::from(u8::from(u < v)), 0.0),
                    BinaryOp::Le => (f64::from(u8::from(u <= v)), 0.0),
                    BinaryOp::Eq => (f64::from(u8::from(u == v)), 0.0),
                };
                assert!(
                    (g as f64 - want).abs() <= tol,
                    "{op:?} {sa:?} with {sb:?} at element {i}: got {g}, want {want}"
                );
            }
        }
    }
}

/// The elements of `a` (shape `sa`) and `b` (shape `sb`) that element `i` of their broadcast
/// result (shape `out`, row-major) combines, by NumPy's rule: a size-1 axis repeats its element.
fn broadcast_sources(i: usize, out: &[usize], sa: &[usize], sb: &[usize]) -> (usize, usize) {
    let mut coord = vec![0; out.len()];
    let mut rest = i;
    for d in (0..out.len()).rev() {
        coord[d] = rest % out[d];
        rest /= out[d];
    }
    let index = |shape: &[usize]| {
        let off = out.len() - shape.len();
        shape.iter().enumerate().fold(0, |acc, (d, &e)| {
            acc * e + if e == 1 { 0 } else { coord[off + d] }
        })
    };
    (index(sa), index(sb))
}

/// Comparisons where the operands tie. `binary_ops_broadcast_like_numpy` draws its operands
/// from continuous ranges, so no pair is ever equal there: `Ge` and `Gt` (and `Le` and `Lt`)
/// give the same answers, and `Eq` is 0 everywhere. Here both operands take values among
/// −1, −½, 0, −0, ½ and 1 (−0 equals +0), so that about one pair in five ties, through the same
/// broadcasts; with the NaN-preserving kernels NaN joins them, and every comparison with it is
/// false, as on the CPU (so `u <= v` is not `!(u > v)`). The plain kernels promise nothing of
/// NaN, so there the values hold none. A comparison is 0 or 1: exact.
#[test]
fn comparisons_of_equal_operands() {
    let mut grid = vec![-1.0f32, -0.5, 0.0, -0.0, 0.5, 1.0];
    if ctx().preserves_nan() {
        grid.push(f32::NAN);
    }
    let on_grid = |n: usize, seed: u64| -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| grid[rng.random_range(0..grid.len())])
            .collect()
    };
    let shapes: [(&[usize], &[usize]); 2] = [(&[3, 1, 5], &[4, 1]), (&[2, 3, 4], &[2, 3, 4])];
    for (s, (sa, sb)) in shapes.iter().enumerate() {
        let out_shape = broadcast_shape(sa, sb).unwrap();
        let a = on_grid(sa.iter().product(), 230 + s as u64);
        let b = on_grid(sb.iter().product(), 240 + s as u64);
        let (da, db) = (up(&a, sa), up(&b, sb));
        type Compare = fn(f32, f32) -> bool;
        let ops: [(BinaryOp, Compare); 5] = [
            (BinaryOp::Gt, |u, v| u > v),
            (BinaryOp::Ge, |u, v| u >= v),
            (BinaryOp::Lt, |u, v| u < v),
            (BinaryOp::Le, |u, v| u <= v),
            (BinaryOp::Eq, |u, v| u == v),
        ];
        let mut ties = 0;
        for (op, f) in ops {
            let got = down(&ctx().run(|r| r.binary(op, &da, &db)).unwrap());
            assert_eq!(got.len(), out_shape.iter().product::<usize>());
            for (i, &g) in got.iter().enumerate() {
                let (ia, ib) = broadcast_sources(i, &out_shape, sa, sb);
                let (u, v) = (a[ia], b[ib]);
                ties += usize::from(op == BinaryOp::Eq && u == v);
                let want = f32::from(u8::from(f(u, v)));
                assert_eq!(g, want, "{op:?} {sa:?} with {sb:?}: {u} vs {v}");
            }
        }
        assert!(
            ties >= out_shape.iter().product::<usize>() / 10,
            "{ties} ties"
        );
    }
}

/// `BinaryOp::Pow` follows C's `powf` (Rust's `f32::powf`) for every pair of operands, as the
/// scalar power does (both call `shaders/powf.glsl`): a negative base keeps its sign under an odd
/// integer power and gives NaN under a non-integer one, and zeros, infinities and NaN go by C's
/// table (0⁻¹ = ∞, (−∞)³ = −∞, 1^NaN = 1, (−1)^±∞ = 1). GLSL's own `pow` is undefined for all of
/// these. Every base against every power, as a 16 × 12 outer product through broadcasting.
/// Tolerance: finite results as the unary test's derived bound (pow is exp2(y·log2 x) in Vulkan);
/// NaN, ±∞ and the sign of a zero exactly. The plain kernels promise nothing of NaN, ±∞ and −0,
/// so there only the pairs with finite operands and a finite result are held to it, and a zero
/// by its value.
#[test]
fn binary_pow_follows_c_for_every_sign() {
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let bases = [
        -100.0, -3.5, -2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, 100.0, nan, inf, -inf, 3.0, -7.25,
    ];
    let powers = [
        2.0, 3.0, -1.0, -2.0, 0.5, -0.5, 1.5, 0.0, 7.0, nan, inf, -inf,
    ];
    let z = ctx()
        .run(|r| r.binary(BinaryOp::Pow, &up(&bases, &[16, 1]), &up(&powers, &[1, 12])))
        .unwrap();
    assert_eq!(z.shape(), [16, 12]);
    let got = down(&z);
    let (mut held, mut got_kept, mut want) = (0, Vec::new(), Vec::new());
    for (i, &g) in got.iter().enumerate() {
        let (x, p) = (bases[i / 12], powers[i % 12]);
        let w = x.powf(p);
        let all_finite = x.is_finite() && p.is_finite() && w.is_finite();
        if !all_finite && !ctx().preserves_nan() {
            continue;
        }
        held += 1;
        got_kept.push(g);
        // f64 for the finite value; the f32 result itself for NaN, ±∞ and the sign of ±0.
        want.push(if w.is_finite() {
            (x as f64).powf(p as f64)
        } else {
            w as f64
        });
        if w == 0.0 && ctx().preserves_nan() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{x}^{p}: got {g}, want {w} (the sign of 0)"
            );
        }
    }
    assert!(held >= 90, "only {held} pairs held to the CPU");
    assert_close("pow", &got_kept, &want, |i| 1e-5 * want[i].abs() + 2e-6);
}

// ---------------------------------------------------------------------------------------------
// Reductions

/// Sum, mean, max over several axis sets. Sum: the bound `2·n·u·Σ|x|` for n reduced terms;
/// mean adds one correctly rounded division; max is exact.
#[test]
fn reductions_over_axes() {
    let shape = [3usize, 5, 7, 11];
    let x = random(shape.iter().product(), -1.0, 1.0, 400);
    let dx = up(&x, &shape);
    let axis_sets: [&[usize]; 6] = [&[3], &[0, 2], &[1, 2, 3], &[0, 1, 2, 3], &[1], &[0, 3]];
    for axes in axis_sets {
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
            for keepdim in [false, true] {
                let y = ctx().run(|r| r.reduce(op, &dx, axes, keepdim)).unwrap();
                let want_shape: Vec<usize> = (0..4)
                    .filter_map(|d| {
                        if axes.contains(&d) {
                            keepdim.then_some(1)
                        } else {
                            Some(shape[d])
                        }
                    })
                    .collect();
                assert_eq!(y.shape(), want_shape.as_slice(), "{op:?} over {axes:?}");
                // Reference: walk all elements, add into the output slot.
                let n_out: usize = want_shape.iter().product();
                let n_red: usize = axes.iter().map(|&a| shape[a]).product();
                let mut acc = vec![
                    if op == ReduceOp::Max {
                        f64::NEG_INFINITY
                    } else {
                        0.0
                    };
                    n_out
                ];
                let mut abs = vec![0.0f64; n_out];
                for (i, &v) in x.iter().enumerate() {
                    let mut rest = i;
                    let mut coord = [0usize; 4];
                    for d in (0..4).rev() {
                        coord[d] = rest % shape[d];
                        rest /= shape[d];
                    }
                    let o = (0..4)
                        .filter(|d| !axes.contains(d))
                        .fold(0, |o, d| o * shape[d] + coord[d]);
                    match op {
                        ReduceOp::Max => acc[o] = acc[o].max(v as f64),
                        _ => acc[o] += v as f64,
                    }
                    abs[o] += (v as f64).abs();
                }
                if op == ReduceOp::Mean {
                    acc.iter_mut().for_each(|a| *a /= n_red as f64);
                    abs.iter_mut().for_each(|a| *a /= n_red as f64);
                }
                let tol = |i: usize| match op {
                    ReduceOp::Max => 0.0,
                    _ => 2.0 * (n_red + 1) as f64 * U * abs[i],
                };
                assert_close(
                    &format!("{op:?} over {axes:?} keepdim={keepdim}"),
                    &down(&y),
                    &acc,
                    tol,
                );
            }
        }
    }
}

/// A long last axis (more elements than threads per workgroup) and a row count that does not
/// divide anything; same bound as above.
#[test]
fn sum_last_axis_long_rows() {
    let (rows, len) = (5, 3001);
    let x = random(rows * len, -1.0, 1.0, 401);
    let y = ctx()
        .run(|r| r.sum_last_axis(&up(&x, &[rows, len])))
        .unwrap();
    assert_eq!(y.shape(), [rows]);
    let want: Vec<f64> = x
        .chunks(len)
        .map(|c| c.iter().map(|&v| v as f64).sum())
        .collect();
    let abs: Vec<f64> = x
        .chunks(len)
        .map(|c| c.iter().map(|&v| (v as f64).abs()).sum())
        .collect();
    assert_close("sum_last_axis", &down(&y), &want, |i| {
        2.0 * len as f64 * U * abs[i]
    });
}

/// More outputs than a dispatch has workgroups: the reduction runs one workgroup per output, at
/// most 65,535 of them, and each workgroup goes on to the outputs 65,535 further along. Sums of
/// pairs over the last axis of `[65_600, 2]`: the 65 outputs past the first 65,535 are only
/// reached by that stride, and every other test has a few thousand outputs at most. Each output
/// adds two f32 values, one rounding: exact against the host's f32 sum.
#[test]
fn reductions_with_more_outputs_than_workgroups() {
    let rows = 65_600;
    let x = random(rows * 2, -1.0, 1.0, 403);
    let y = ctx().run(|r| r.sum_last_axis(&up(&x, &[rows, 2]))).unwrap();
    assert_eq!(y.shape(), [rows]);
    let want: Vec<f64> = x.chunks(2).map(|p| (p[0] + p[1]) as f64).collect();
    assert_close("sum of pairs", &down(&y), &want, |_| 0.0);
}

/// Instance-norm moments on data with a large mean (3) relative to its spread, where a one-pass
/// E[x²] − E[x]² would lose digits. Mean: `2·L·u·mean|x|`. Variance: the deviations carry the
/// mean's error e_m plus one rounding each, so the bound is `2·L·u·E[d²]` for the sum plus
/// `2·E|d|·e_m + e_m²` from the shift, doubled for the squaring.
#[test]
fn instance_norm_moments_two_pass_and_the_normalised_planes() {
    let (n, c, h, w) = (2, 3, 13, 17);
    let l = h * w;
    let x: Vec<f32> = random(n * c * l, -1.0, 1.0, 402)
        .iter()
        .map(|v| v + 3.0)
        .collect();
    let stats = ctx()
        .run(|r| r.instance_norm_moments(&up(&x, &[n, c, h, w])))
        .unwrap();
    assert_eq!(stats.shape(), [n, c, 2]);
    let stats = down(&stats);
    let mean: Vec<f32> = stats.iter().step_by(2).copied().collect();
    let var: Vec<f32> = stats.iter().skip(1).step_by(2).copied().collect();
    let (mut wm, mut wv, mut tm, mut tv) = (vec![], vec![], vec![], vec![]);
    for row in x.chunks(l) {
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / l as f64;
        let d2 = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / l as f64;
        let d1 = row.iter().map(|&v| (v as f64 - m).abs()).sum::<f64>() / l as f64;
        let em = 2.0 * l as f64 * U * row.iter().map(|&v| (v as f64).abs()).sum::<f64>() / l as f64;
        wm.push(m);
        wv.push(d2);
        tm.push(em);
        tv.push(2.0 * (2.0 * l as f64 * U * d2 + 2.0 * d1 * em + em * em));
    }
    assert_close("instance mean", &mean, &wm, |i| tm[i]);
    assert_close("instance var", &var, &wv, |i| tv[i]);

    // The normalised planes, y = (x − m)·r with r = 1/√(v + eps), from the same statistics: the
    // error of x − m is the mean's e_m plus a rounding, times r; r's relative error is half the
    // variance's, e_v/(2(v + eps)), plus three roundings (add, sqrt, divide); the product adds
    // one more. Doubled for margin.
    let eps = 1e-5;
    let y = ctx()
        .run(|r| r.instance_norm(&up(&x, &[n, c, h, w]), eps))
        .unwrap();
    assert_eq!(y.shape(), [n, c, h, w]);
    let (mut want, mut tol) = (vec![], vec![]);
    for (row, xs) in x.chunks(l).enumerate() {
        let rs = 1.0 / (wv[row] + eps as f64).sqrt();
        let rel_r = tv[row] / (2.0 * (wv[row] + eps as f64)) + 3.0 * U;
        for &v in xs {
            let d = v as f64 - wm[row];
            want.push(d * rs);
            tol.push(2.0 * ((tm[row] + U * d.abs()) * rs + (d * rs).abs() * (rel_r + U)));
        }
    }
    assert_close("instance_norm", &down(&y), &want, |i| tol[i]);
}

// ---------------------------------------------------------------------------------------------
// Pooling, resizing, gathering

/// Average pooling: at most kh·kw terms and a division, bound `2·(kh·kw + 1)·u·Σ|x| / (kh·kw)`.
#[test]
fn avg_pool2d_counts_padding() {
    let (n, c, h, w) = (2, 3, 9, 8);
    let x = random(n * c * h * w, -1.0, 1.0, 500);
    let dx = up(&x, &[n, c, h, w]);
    for (k, s, p) in [
        ((3, 3), (2, 2), (1, 1)),
        ((2, 2), (2, 2), (0, 0)),
        ((3, 2), (1, 3), (1, 1)),
        ((3, 2), (2, 1), (1, 0)), // unequal padding: the two axes must not be swapped
    ] {
        let y = ctx().run(|r| r.avg_pool2d(&dx, k, s, p)).unwrap();
        let ho = (h + 2 * p.0 - k.0) / s.0 + 1;
        let wo = (w + 2 * p.1 - k.1) / s.1 + 1;
        assert_eq!(y.shape(), [n, c, ho, wo]);
        let (mut want, mut abs) = (vec![], vec![]);
        for plane in 0..n * c {
            for oh in 0..ho {
                for ow in 0..wo {
                    let (mut sum, mut sa) = (0.0f64, 0.0f64);
                    for ki in 0..k.0 {
                        for kj in 0..k.1 {
                            let ih = (oh * s.0 + ki) as isize - p.0 as isize;
                            let iw = (ow * s.1 + kj) as isize - p.1 as isize;
                            if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w {
                                let v = x[(plane * h + ih as usize) * w + iw as usize] as f64;
                                sum += v;
                                sa += v.abs();
                            }
                        }
                    }
                    let kk = (k.0 * k.1) as f64; // count_include_pad: always the full window
                    want.push(sum / kk);
                    abs.push(sa / kk);
                }
            }
        }
        let kk = (k.0 * k.1 + 1) as f64;
        assert_close(
            &format!("avg_pool2d {k:?} {s:?} {p:?}"),
            &down(&y),
            &want,
            |i| 2.0 * kk * U * abs[i],
        );
    }
}

/// The adjoint kernels of pooling and resizing against their forward kernels, by the defining
/// identity ⟨A x, g⟩ = ⟨x, Aᵀ g⟩, both sides summed in f64 from the device's f32 results. Each
/// side carries the f32 error of its kernel (a sum of at most K terms of weight ≤ 1, relative
/// 2·K·u) on every entry, so the sides differ by at most 2·K·u·(Σ|A x||g| + Σ|x||Aᵀ g|). K is
/// the most terms any entry sums: 25 here, the 5 × 5 window at stride 1 (forward, and in the
/// adjoint the 25 windows that cover an input pixel); resizing sums 4 forward, and in the adjoint
/// of the 17 × 13 upsampling an input gathers from at most 4 × 4 outputs.
#[test]
fn pool_and_resize_adjoints_are_transposes() {
    let (n, c, h, w) = (2, 3, 9, 7);
    let x = random(n * c * h * w, -1.0, 1.0, 520);
    let dx = up(&x, &[n, c, h, w]);
    let dot = |a: &[f32], b: &[f32]| -> (f64, f64) {
        a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&u, &v)| {
            (s + u as f64 * v as f64, m + (u as f64 * v as f64).abs())
        })
    };
    let check = |what: String, ax: Vec<f32>, g: &[f32], atg: Vec<f32>| {
        let (lhs, lm) = dot(&ax, g);
        let (rhs, rm) = dot(&x, &atg);
        let tol = 2.0 * 25.0 * U * (lm + rm) + 1e-12;
        assert!(
            (lhs - rhs).abs() <= tol,
            "{what}: <Ax, g> = {lhs} vs <x, A^T g> = {rhs}"
        );
    };
    for (k, s, p) in [
        ((3, 3), (2, 2), (1, 1)),
        ((2, 2), (2, 2), (0, 0)),
        ((3, 2), (1, 3), (1, 1)),
        ((5, 5), (1, 1), (2, 2)),
        ((3, 2), (2, 1), (1, 0)),
    ] {
        let y = ctx().run(|r| r.avg_pool2d(&dx, k, s, p)).unwrap();
        let g = random(y.len(), -1.0, 1.0, 521);
        let dg = up(&g, y.shape());
        let gx = ctx()
            .run(|r| r.avg_pool2d_adjoint(&dg, (h, w), k, s, p))
            .unwrap();
        assert_eq!(gx.shape(), [n, c, h, w]);
        check(
            format!("avg_pool2d {k:?} {s:?} {p:?}"),
            down(&y),
            &g,
            down(&gx),
        );
    }
    for size in [(17, 13), (4, 3), (9, 7), (1, 5)] {
        let y = ctx().run(|r| r.resize_bilinear(&dx, size)).unwrap();
        let g = random(y.len(), -1.0, 1.0, 522);
        let dg = up(&g, y.shape());
        let gx = ctx()
            .run(|r| r.resize_bilinear_adjoint(&dg, (h, w)))
            .unwrap();
        assert_eq!(gx.shape(), [n, c, h, w]);
        check(
            format!("resize_bilinear to {size:?}"),
            down(&y),
            &g,
            down(&gx),
        );
    }
}

/// Bilinear resize with align_corners = true against PyTorch's formula evaluated in f64 from the
/// same f32 scale. The kernel evaluates it in f32. Its source coordinate is one product, below 8
/// for these inputs (sides ≤ 7), so its rounding is at most half an ulp there, 2⁻²², and moves
/// each blended value by that times the difference of its two neighbours (≤ 2):
/// ≤ 4.8e-7 along each axis, 9.6e-7 for both; the blend itself is 6 products and 3 sums of
/// values ≤ 1, ≤ 9 roundings of ≤ 2⁻²⁴ each, 5.4e-7. So 1.5e-6 absolute.
#[test]
fn resize_bilinear_align_corners() {
    let (n, c) = (2, 2);
    for (h, w, ho, wo) in [(5, 7, 9, 4), (4, 4, 7, 7), (6, 3, 1, 1), (1, 5, 3, 11)] {
        let x = random(n * c * h * w, -1.0, 1.0, 600 + h as u64);
        let y = ctx()
            .run(|r| r.resize_bilinear(&up(&x, &[n, c, h, w]), (ho, wo)))
            .unwrap();
        assert_eq!(y.shape(), [n, c, ho, wo]);
        let want = resize_reference(&x, n * c, (h, w), (ho, wo));
        assert_close(
            &format!("resize {h}x{w} -> {ho}x{wo}"),
            &down(&y),
            &want,
            |_| 1.5e-6,
        );
    }
}

/// PyTorch's bilinear resize with align_corners = true, evaluated in f64 from the kernel's f32
/// scale, for `planes` planes of `h × w`.
fn resize_reference(
    x: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
) -> Vec<f64> {
    let scale = |i: usize, o: usize| {
        if o > 1 {
            (i - 1) as f32 / (o - 1) as f32
        } else {
            0.0
        }
    };
    let (sh, sw) = (scale(h, ho) as f64, scale(w, wo) as f64);
    let mut want = vec![];
    for plane in 0..planes {
        let at = |i: usize, j: usize| x[(plane * h + i) * w + j] as f64;
        for oh in 0..ho {
            for ow in 0..wo {
                let (fy, fx) = (sh * oh as f64, sw * ow as f64);
                let (y0, x0) = ((fy as usize).min(h - 1), (fx as usize).min(w - 1));
                let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                let (ly, lx) = (fy - y0 as f64, fx - x0 as f64);
                let top = (1.0 - lx) * at(y0, x0) + lx * at(y0, x1);
                let bot = (1.0 - lx) * at(y1, x0) + lx * at(y1, x1);
                want.push((1.0 - ly) * top + ly * bot);
            }
        }
    }
    want
}

/// Each plane of a bilinear resize reads only itself. At the bottom row and the right column the
/// stencil's second tap is clamped onto the first (weight 0 there, or a rounding's worth when the
/// f32 source coordinate lands just past the edge), so a kernel that left the clamp out would
/// read the next row or the next plane with a weight of 0 and, on finite inputs, give the same
/// numbers (the other resize tests could not tell). An infinity in the next plane tells: 0·∞ is
/// NaN. Planes 1 and 3 of four hold ±∞ and NaN in their first row; planes 0 and 2 must come out
/// finite and equal to the formula of `resize_bilinear_align_corners`, within its 1.5e−6. (With
/// the plain kernels a driver may fold 0·∞ to 0, so only the NaN-preserving ones are sure to
/// show such a leak; the property itself holds for both.)
#[test]
fn resize_bilinear_planes_do_not_read_their_neighbours() {
    let (planes, h, w) = (4, 5, 7);
    let mut x = random(planes * h * w, -1.0, 1.0, 620);
    for p in [1, 3] {
        x[p * h * w] = f32::INFINITY;
        x[p * h * w + 1] = f32::NEG_INFINITY;
        x[p * h * w + 2] = f32::NAN;
    }
    for (ho, wo) in [(9, 11), (3, 4)] {
        let y = ctx()
            .run(|r| r.resize_bilinear(&up(&x, &[2, 2, h, w]), (ho, wo)))
            .unwrap();
        let y = down(&y);
        let want = resize_reference(&x, planes, (h, w), (ho, wo));
        for p in [0, 2] {
            let plane = p * ho * wo..(p + 1) * ho * wo;
            assert_close(
                &format!("plane {p} of {h}x{w} -> {ho}x{wo}"),
                &y[plane.clone()],
                &want[plane],
                |_| 1.5e-6,
            );
        }
    }
}

/// Gathering copies bits: exact.
#[test]
fn embedding_gathers_rows() {
    let (rows, dim) = (7, 5);
    let table = random(rows * dim, -1.0, 1.0, 700);
    let idx = [3u32, 0, 6, 6, 1, 4];
    let di = ctx().upload_indices(&idx).unwrap();
    let y = ctx()
        .run(|r| r.embedding(&up(&table, &[rows, dim]), &di))
        .unwrap();
    assert_eq!(y.shape(), [idx.len(), dim]);
    let got = down(&y);
    for (i, &row) in idx.iter().enumerate() {
        let row = row as usize;
        assert_eq!(
            &got[i * dim..(i + 1) * dim],
            &table[row * dim..(row + 1) * dim],
            "row {i} (index {row})"
        );
    }
}

/// `select` takes `a` wherever the mask is non-zero, as `Tensor::where_` does on the CPU
/// (`m != 0`): negative and small masks too, while −0 equals 0 and takes `b`; with the
/// NaN-preserving kernels a NaN mask is non-zero as well. The masks the library makes itself
/// (comparisons) hold only 0 and 1, so no other test passes another value. The three operands
/// broadcast along different axes (mask `[2, 1, 5]`, `a` `[3, 1]`, `b` `[5]`, out `[2, 3, 5]`).
/// Exact: the kernel copies bits.
#[test]
fn select_takes_a_wherever_the_mask_is_nonzero() {
    let mut mask = vec![-2.0f32, -1e-3, -0.0, 0.0, 0.5, 3.0, -1.0, 0.0, 1.0, -0.0];
    if ctx().preserves_nan() {
        mask[7] = f32::NAN;
    }
    let a = random(3, 1.0, 2.0, 710);
    let b = random(5, -2.0, -1.0, 711);
    let z = ctx()
        .run(|r| r.select(&up(&mask, &[2, 1, 5]), &up(&a, &[3, 1]), &up(&b, &[5])))
        .unwrap();
    assert_eq!(z.shape(), [2, 3, 5]);
    let got = down(&z);
    for (i, &g) in got.iter().enumerate() {
        let (n, row, col) = (i / 15, (i / 5) % 3, i % 5);
        let m = mask[n * 5 + col];
        let want = if m != 0.0 { a[row] } else { b[col] };
        assert_eq!(
            g.to_bits(),
            want.to_bits(),
            "mask {m} at {i}: got {g}, want {want}"
        );
    }
}

/// A context opens with the kernel variant it is asked for: the plain kernels anywhere (and they
/// run), the NaN-preserving ones exactly where `auto` would choose them, and otherwise an error
/// that names the missing device property. (CI runs this file and tests/vulkan_tensor.rs once
/// with `NCSN_VULKAN_KERNELS` unset, which on lavapipe loads the NaN-preserving variants, and once
/// with it set to `plain`.)
#[test]
fn contexts_load_the_kernel_variant_asked_for() {
    let plain = VulkanContext::with_kernels(KernelVariant::Plain).unwrap();
    assert!(!plain.preserves_nan());
    let a = plain.upload(&[1.0, -2.0, 3.0, -4.0], &[2, 2]).unwrap();
    let y = plain.run(|r| r.unary(UnaryOp::Relu, &a)).unwrap();
    assert_eq!(plain.download(&y).unwrap(), [1.0, 0.0, 3.0, 0.0]);
    let auto = VulkanContext::with_kernels(KernelVariant::Auto).unwrap();
    match VulkanContext::with_kernels(KernelVariant::NanPreserving) {
        Ok(c) => assert!(c.preserves_nan() && auto.preserves_nan()),
        Err(e) => {
            assert!(!auto.preserves_nan());
            let msg = e.to_string();
            assert!(
                msg.contains("shaderSignedZeroInfNanPreserveFloat32"),
                "{msg}"
            );
        }
    }
}

/// `activity` counts what work asked of the device: one dispatch per kernel, one submission per
/// `run` (an upload is a submission of its own), and the time the host waited, which is part of
/// the wall time. A context of its own: the other tests share `ctx()` and run in parallel.
/// `memory_use` counts the bytes of live buffers and their peak. Sizes: ten buffers of 2²⁰ floats
/// (4 MiB each). A buffer takes its size rounded up to its memory alignment, which no driver we
/// know sets above 64 KiB; so ten of them add between 40 MiB and 40 MiB + 640 KiB (1.6 %).
/// Intermediates of a recording whose handles were dropped are still counted until the work has
/// run (the command buffer holds them), and then given back: the peak of `exp(exp(x))` copied is
/// at least its three results, and afterwards only the one returned is left. A counter that
/// missed the frees, counted allocator blocks instead of buffers, forgot the in-flight
/// intermediates, or restarted the peak from zero instead of from what is alive fails one of these.
#[test]
fn memory_use_counts_live_buffers_and_their_peak() {
    const MIB: u64 = 1 << 20;
    let c = VulkanContext::new().unwrap();
    let empty = c.memory_use();
    assert_eq!(empty.live, empty.peak, "{empty:?}");
    let added = |from: u64, to: u64| {
        to.checked_sub(from)
            .unwrap_or_else(|| panic!("{to} < {from}"))
    };
    let within = |bytes: u64, want: u64, buffers: u64| {
        assert!(
            bytes >= want && bytes <= want + buffers * 64 * 1024,
            "{bytes} bytes for {buffers} buffers of {want} bytes in all"
        )
    };
    let mut bufs: Vec<DeviceBuffer> = (0..10).map(|_| c.alloc(&[1 << 20]).unwrap()).collect();
    let full = c.memory_use();
    within(added(empty.live, full.live), 40 * MIB, 10);
    assert_eq!(full.peak, full.live);
    bufs.truncate(6);
    within(added(c.memory_use().live, full.live), 16 * MIB, 4);
    drop(bufs);
    let after = c.memory_use();
    assert_eq!(after.live, empty.live, "every buffer is dropped");
    assert_eq!(after.peak, full.peak, "the peak stays");
    c.reset_peak_memory();
    assert_eq!(c.memory_use().peak, after.live);

    let x = c
        .upload(&random(1 << 20, -1.0, 1.0, 705), &[1 << 20])
        .unwrap();
    let with_x = c.memory_use();
    within(added(empty.live, with_x.live), 4 * MIB, 1);
    c.reset_peak_memory();
    // The new peak starts from what is alive, x, not from nothing (above, nothing was alive).
    assert_eq!(
        c.memory_use().peak,
        with_x.live,
        "the peak after a reset with x alive"
    );
    let y = c
        .run(|r| {
            let a = r.unary(UnaryOp::Exp, &x)?;
            let b = r.unary(UnaryOp::Exp, &a)?;
            r.copy(&b) // a and b are dropped here, while the work is still to run
        })
        .unwrap();
    let done = c.memory_use();
    assert!(
        added(with_x.live, done.peak) >= 3 * 4 * MIB,
        "peak {} MiB over x's: the three results were alive at once",
        added(with_x.live, done.peak) / MIB
    );
    within(added(with_x.live, done.live), 4 * MIB, 1);
    drop((x, y));
    assert_eq!(c.memory_use().live, empty.live);
}

/// A recording of `record` calls is submitted once they have allocated `RECORD_FLUSH_BYTES`, not
/// only every 256 calls, so that large intermediates whose handles are gone do not pile up in
/// it. 250 calls of exp on a 4 MiB tensor, each result dropped at once: with a budget of 256 MiB a
/// submission follows every 64th call (3 in all, none by the call count), and at no moment are
/// more than two recordings' worth alive, the one in flight and the one being recorded, each at
/// most the budget plus the call that crossed it: 2 · (256 + 4) MiB over x. Without the budget
/// all 250 results (1000 MiB) stay alive until the flush, and nothing is submitted before it.
#[test]
fn a_recording_is_submitted_once_it_has_allocated_its_budget() {
    const MIB: u64 = 1 << 20;
    assert_eq!(RECORD_FLUSH_BYTES, 256 * MIB, "the numbers below assume it");
    let c = VulkanContext::new().unwrap();
    let x = c.upload(&vec![0.5f32; 1 << 20], &[1 << 20]).unwrap();
    let tensor = c.memory_use().live; // x alone, as allocated
    c.reset_peak_memory();
    let base = c.memory_use().live;
    let before = c.activity();
    for _ in 0..250 {
        let y = c.record(|r| r.unary(UnaryOp::Exp, &x)).unwrap();
        drop(y);
    }
    let a = c.activity() - before;
    assert_eq!(
        (a.dispatches, a.submissions),
        (250, 250 / (256 * MIB / tensor)),
        "{a:?}"
    );
    c.flush().unwrap();
    let peak = c.memory_use().peak - base;
    assert!(
        peak <= 2 * (256 * MIB + tensor),
        "{} MiB alive at the peak",
        peak / MIB
    );
    assert_eq!(c.memory_use().live, base, "the intermediates are freed");
}

/// The call-count bound of `record` is exact: the 256th call submits the recording (without
/// waiting, so it is left in flight), the 255th does not. `flush` with nothing left to submit still
/// waits for the one in flight, so its timestamps are in the profile afterwards and its
/// intermediates are freed; and a recording that crosses the bound keeps every command's
/// timestamps, those of the part submitted at the bound (finished by the next submission) and
/// those of the rest. A recording left open by `record` before profiling is switched on is
/// submitted first, unprofiled, so that everything recorded afterwards is timed. The kernels are
/// small: what is checked is bookkeeping, counted exactly.
#[test]
fn a_recording_is_submitted_at_its_256th_call_and_flush_waits_for_it() {
    let c = VulkanContext::new().unwrap();
    let x = c.upload(&random(64, -1.0, 1.0, 707), &[64]).unwrap();
    let live = c.memory_use().live;
    c.record(|r| r.unary(UnaryOp::Exp, &x)).unwrap(); // open, unprofiled
    c.set_profiling(true).unwrap();
    let count = |p: &[ncsn::backend::vulkan::KernelTime]| {
        p.iter()
            .find(|e| e.kernel == "unary")
            .map_or(0, |e| e.count)
    };
    let before = c.activity();
    for _ in 0..255 {
        c.record(|r| r.unary(UnaryOp::Exp, &x)).unwrap();
    }
    assert_eq!((c.activity() - before).submissions, 0, "255 calls");
    c.record(|r| r.unary(UnaryOp::Exp, &x)).unwrap();
    assert_eq!((c.activity() - before).submissions, 1, "the 256th call");
    c.flush().unwrap(); // nothing to submit: waits for the one in flight
    assert_eq!(
        (c.activity() - before).submissions,
        1,
        "flush had nothing to submit"
    );
    assert_eq!(
        count(&c.take_profile()),
        256,
        "the recording in flight, finished by flush"
    );
    assert_eq!(c.memory_use().live, live, "its intermediates are freed");

    for _ in 0..300 {
        c.record(|r| r.unary(UnaryOp::Exp, &x)).unwrap();
    }
    c.flush().unwrap();
    assert_eq!((c.activity() - before).submissions, 3);
    assert_eq!(
        count(&c.take_profile()),
        300,
        "both parts of a recording cut at the bound"
    );
    c.set_profiling(false).unwrap();
}

/// The byte budget of `record` is reached, not exceeded, when a recording's allocations add up to
/// `RECORD_FLUSH_BYTES` exactly: sixteen zero-filled buffers of 16 MiB (whole multiples of any
/// alignment, so each is counted at its size) submit it at the 16th call, not the 17th.
#[test]
fn a_recording_is_submitted_when_its_allocations_reach_the_budget_exactly() {
    const MIB: u64 = 1 << 20;
    assert_eq!(RECORD_FLUSH_BYTES, 256 * MIB, "the numbers below assume it");
    let c = VulkanContext::new().unwrap();
    let before = c.activity();
    for i in 1..=16 {
        let z = c.record(|r| r.zeros(&[4 << 20])).unwrap();
        drop(z);
        let a = c.activity() - before;
        assert_eq!(
            a.submissions,
            u64::from(i == 16),
            "after {i} buffers of 16 MiB"
        );
    }
    c.flush().unwrap();
}

#[test]
fn activity_counts_dispatches_submissions_and_waiting() {
    let c = VulkanContext::new().unwrap();
    let x = c.upload(&random(1000, -1.0, 1.0, 703), &[1000]).unwrap();
    let before = c.activity();
    let t = std::time::Instant::now();
    c.run(|r| {
        let y = r.unary(UnaryOp::Exp, &x)?;
        let z = r.binary(BinaryOp::Add, &y, &x)?;
        r.unary(UnaryOp::Exp, &z)
    })
    .unwrap();
    let wall = t.elapsed();
    let a = c.activity() - before;
    assert_eq!((a.dispatches, a.submissions), (3, 1));
    assert!(
        a.waiting > std::time::Duration::ZERO && a.waiting <= wall,
        "{a:?} in {wall:?}"
    );
    let up_again = c.activity();
    c.upload(&[1.0], &[1]).unwrap();
    let a = c.activity() - up_again;
    assert_eq!((a.dispatches, a.submissions), (0, 1));
}

/// `transfers` counts each host↔device copy and its bytes: an upload of floats and one of
/// indices (4 bytes each), a download of floats and one of raw words. The difference of two
/// readings is taken field by field: the context made one upload and no download before the
/// first reading, so a difference that mixed up the fields would show.
#[test]
fn transfers_count_each_copy_and_its_bytes() {
    let c = VulkanContext::new().unwrap();
    c.upload(&[1.0; 3], &[3]).unwrap();
    let before = c.transfers();
    let one_upload = Transfers {
        uploads: 1,
        upload_bytes: 12,
        downloads: 0,
        download_bytes: 0,
    };
    assert_eq!(before, one_upload);
    let x = c.upload(&random(10, -1.0, 1.0, 708), &[2, 5]).unwrap();
    let idx = c.upload_indices(&[4, 0, 2, 7, 1]).unwrap();
    let bits = c.run(|r| r.philox_bits(6, [1, 2, 3, 4], [5, 6])).unwrap();
    c.download(&x).unwrap();
    c.download_bits(&bits).unwrap();
    let want = Transfers {
        uploads: 2,
        upload_bytes: 4 * 10 + 4 * 5,
        downloads: 2,
        download_bytes: 4 * 10 + 4 * 6,
    };
    assert_eq!(c.transfers() - before, want);
    assert_eq!(idx.len(), 5);
}

/// What `activity` counts as waiting includes the wait for the device, not only the call that
/// submits: the host is blocked from the submission until the fence signals, and the kernels ran
/// in between, so the waiting is at least the device time that profiling measures for them
/// (with 10 % to spare for the two clocks). Two products of 256 × 256 matrices take lavapipe
/// milliseconds; submitting takes microseconds.
#[test]
fn waiting_covers_the_device_time_of_the_work() {
    let c = VulkanContext::new().unwrap();
    let a = c
        .upload(&random(256 * 256, -1.0, 1.0, 709), &[256, 256])
        .unwrap();
    c.set_profiling(true).unwrap();
    let before = c.activity();
    c.run(|r| {
        let y = r.matmul(&a, &a, false, false)?;
        r.matmul(&y, &a, false, true)
    })
    .unwrap();
    let waiting = (c.activity() - before).waiting;
    let device: std::time::Duration = c.take_profile().iter().map(|e| e.time).sum();
    c.set_profiling(false).unwrap();
    assert!(
        waiting.as_secs_f64() >= 0.9 * device.as_secs_f64() && device > std::time::Duration::ZERO,
        "waited {waiting:?} for {device:?} of device time"
    );
}

/// `record` submits its recording every 256 calls without waiting, so the device runs it while
/// the host records the next; the next submission waits for it first. A chain of 700 dependent
/// kernels (x ← −1.01·x, then + i/1000, each reading the previous one's output, so every command buffer
/// reads what the one before it wrote) spans three command buffers, two of them left in flight at
/// a boundary, and must give exactly the host's result (× and − are correctly rounded on both).
/// The submissions are the two at the boundaries and the flush's, plus the download's copy.
/// (tests/vulkan_tensor.rs's training steps and Langevin runs cross such boundaries too.) On
/// lavapipe, which runs submissions in order, this checks the bookkeeping, not a race: left
/// without the wait for the previous command buffer, it passed too, and the synchronisation
/// validation layer (Debian's 1.3.239) reported nothing. On a GPU the next command buffer sees
/// the previous one's writes through the barrier vulkano's builder puts before each buffer's
/// first use in a primary command buffer (all stages, all memory accesses), whose first scope
/// covers everything submitted before it; the wait keeps at most one command buffer in flight.
#[test]
fn recordings_submitted_in_flight_chain_correctly() {
    let c = VulkanContext::new().unwrap();
    let start = random(1000, -1.0, 1.0, 704);
    let mut x = c.upload(&start, &[1000]).unwrap();
    let before = c.activity();
    for i in 0..700 {
        x = c
            .record(|r| {
                if i % 2 == 0 {
                    r.unary(UnaryOp::MulScalar(-1.01), &x)
                } else {
                    r.unary(UnaryOp::AddScalar(i as f32 / 1000.0), &x)
                }
            })
            .unwrap();
    }
    let got = c.download(&x).unwrap();
    let a = c.activity() - before;
    assert_eq!((a.dispatches, a.submissions), (700, 4), "{a:?}");
    let want: Vec<f32> = start
        .iter()
        .map(|&v| {
            (0..700).fold(v, |v, i| {
                if i % 2 == 0 {
                    v * -1.01
                } else {
                    v + i as f32 / 1000.0
                }
            })
        })
        .collect();
    // The chain neither overflows nor forgets where it started (1.01³⁵⁰ ≈ 32).
    let mut distinct: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(want.iter().all(|v| v.is_finite()) && distinct.len() > 990);
    assert_eq!(got, want);
}

/// A tensor is one storage buffer, and a kernel can address at most `maxStorageBufferRange`
/// bytes of it (bound anyway, the rest would be undefined behaviour, not an error): a larger
/// buffer is refused with the shape and the limit, the largest that fits is allocated.
#[test]
fn buffers_larger_than_a_kernel_can_address_are_refused() {
    let c = ctx();
    let max = c.max_buffer_len();
    assert!(
        max >= 1 << 25,
        "Vulkan guarantees 2^27 bytes, got {max} floats"
    );
    let err = match c.alloc(&[2, max / 2 + 1]) {
        Ok(_) => panic!("a buffer of {} floats was allocated", 2 * (max / 2 + 1)),
        Err(ncsn::Error::Device(msg)) => msg,
        Err(e) => panic!("expected a device error, got {e:?}"),
    };
    let shape = format!("[2, {}]", max / 2 + 1);
    assert!(
        err.contains(&shape) && err.contains("maxStorageBufferRange"),
        "{err}"
    );
    assert_eq!(c.alloc(&[max]).unwrap().len(), max);
}

/// A panic inside a recording closure (a shape error, say, caught by the caller) keeps what the
/// thread had recorded before it: a buffer that an earlier call of `record` returned, and a
/// kernel recorded in the panicking call before the panic, still run when the recording is
/// submitted, and recording goes on after it.
#[test]
fn a_panic_while_recording_keeps_the_kernels_recorded_before_it() {
    let c = VulkanContext::new().unwrap();
    let start = random(300, -1.0, 1.0, 705);
    let x = c.upload(&start, &[300]).unwrap();
    let tripled = c.record(|r| r.unary(UnaryOp::MulScalar(3.0), &x)).unwrap();
    let mut halved = None;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.record(|r| -> ncsn::Result<DeviceBuffer> {
            halved = Some(r.unary(UnaryOp::MulScalar(0.5), &x)?);
            panic!("a shape error in the middle of a recording")
        })
    }));
    assert!(caught.is_err());
    let shifted = c
        .record(|r| r.unary(UnaryOp::AddScalar(1.0), &tripled))
        .unwrap();
    let scaled = |k: f32, b: f32| start.iter().map(|&v| v * k + b).collect::<Vec<f32>>();
    assert_eq!(c.download(&tripled).unwrap(), scaled(3.0, 0.0));
    assert_eq!(c.download(&halved.unwrap()).unwrap(), scaled(0.5, 0.0));
    assert_eq!(c.download(&shifted).unwrap(), scaled(3.0, 1.0));
}

/// `run` submits this thread's open recording before its own work, so a kernel of `run` can read
/// a buffer that `record` returned and has not yet been submitted. (Were the open recording
/// submitted after `run`'s, by the download, the buffer would be written only after it was read.)
#[test]
fn run_reads_what_an_open_recording_wrote() {
    let c = VulkanContext::new().unwrap();
    let start = random(300, -1.0, 1.0, 711);
    let x = c.upload(&start, &[300]).unwrap();
    let doubled = c.record(|r| r.unary(UnaryOp::MulScalar(2.0), &x)).unwrap();
    let plus_one = c
        .run(|r| r.unary(UnaryOp::AddScalar(1.0), &doubled))
        .unwrap();
    let want: Vec<f32> = start.iter().map(|&v| v * 2.0 + 1.0).collect();
    assert_eq!(c.download(&plus_one).unwrap(), want);
}

/// A thread that panics while a command buffer it submitted through `record` is still in flight,
/// and drops its own context as the panic unwinds, leaves the process intact: the context waits
/// for the device before the memory that work uses is freed. (vulkano's fence future skips that
/// wait while the thread panics; without the context's own wait, lavapipe wrote into freed memory
/// here and the test binary aborted with "corrupted double-linked list".) 70 calls of `exp` on a
/// 4 MiB tensor: the 64th reaches the recording budget and is submitted, left in flight.
#[test]
fn a_context_dropped_by_a_panic_waits_for_its_work_in_flight() {
    let panicked = std::thread::spawn(|| {
        let c = VulkanContext::new().unwrap();
        let x = c.upload(&vec![0.5f32; 1 << 20], &[1 << 20]).unwrap();
        for _ in 0..70 {
            drop(c.record(|r| r.unary(UnaryOp::Exp, &x)).unwrap());
        }
        assert!(
            c.activity().submissions >= 2,
            "the upload and one recording"
        );
        panic!("a shape error, say, with work in flight");
    })
    .join();
    assert!(panicked.is_err());
}

/// With profiling on, every command of a recording is timed by timestamps and counted under its
/// kernel, with the bytes it moves: the times are positive, sorted most expensive first, and add
/// up to no more than the wall time of the work. Recordings kept open across `record` calls are profiled too; with
/// profiling off nothing is added.
#[test]
fn profiling_times_each_kernel() {
    let c = VulkanContext::new().unwrap();
    let x = c
        .upload(&random(1 << 16, -1.0, 1.0, 704), &[256, 256])
        .unwrap();
    c.set_profiling(true).unwrap();
    let t = std::time::Instant::now();
    c.run(|r| {
        let y = r.unary(UnaryOp::Exp, &x)?;
        let z = r.binary(BinaryOp::Add, &y, &x)?;
        let w = r.unary(UnaryOp::Exp, &z)?;
        r.copy(&w)
    })
    .unwrap();
    let wall = t.elapsed();
    let p = c.take_profile();
    let count = |p: &[ncsn::backend::vulkan::KernelTime], k: &str| {
        p.iter().find(|e| e.kernel == k).map_or(0, |e| e.count)
    };
    let counts = ["unary", "binary", "copy"].map(|k| count(&p, k));
    assert_eq!((counts, p.len()), ([2, 1, 1], 3), "{p:?}");
    // Each reads its inputs and writes its output once: 2, 3 and 2 tensors of 2¹⁶ floats.
    let bytes = |k: &str| p.iter().find(|e| e.kernel == k).map_or(0, |e| e.bytes);
    let tensor = 4 << 16;
    assert_eq!(
        ["unary", "binary", "copy"].map(bytes),
        [2 * 2 * tensor, 3 * tensor, 2 * tensor]
    );
    assert!(p.iter().all(|e| e.bandwidth() > 0.0), "{p:?}");
    assert!(
        p.iter().all(|e| e.time > std::time::Duration::ZERO),
        "{p:?}"
    );
    assert!(p.windows(2).all(|w| w[0].time >= w[1].time), "{p:?}");
    let total: std::time::Duration = p.iter().map(|e| e.time).sum();
    assert!(total <= wall, "{total:?} of device time in {wall:?}");
    assert!(c.take_profile().is_empty(), "taking the profile empties it");

    // The Tensor API's path: several calls into one open recording, submitted by flush.
    for _ in 0..3 {
        c.record(|r| r.unary(UnaryOp::Exp, &x)).unwrap();
    }
    c.flush().unwrap();
    assert_eq!(count(&c.take_profile(), "unary"), 3);

    c.set_profiling(false).unwrap();
    c.run(|r| r.unary(UnaryOp::Exp, &x)).unwrap();
    assert!(c.take_profile().is_empty());
}

/// The kernels that take indices count in the profile the 4 bytes of each index besides the
/// floats they move: a lookup of 4 rows of 5 from a table of 7 reads 4 indices and 4 rows and
/// writes 4 rows (16 + 80 + 80 bytes); selecting the same rows moves as much; adding 4 rows into 7
/// reads the indices and all of the source and writes the output (16 + 80 + 140).
#[test]
fn profiles_count_the_bytes_of_indices() {
    let c = VulkanContext::new().unwrap();
    let table = c.upload(&random(7 * 5, -1.0, 1.0, 712), &[7, 5]).unwrap();
    let src = c.upload(&random(4 * 5, -1.0, 1.0, 713), &[4, 5]).unwrap();
    let idx = c.upload_indices(&[6, 0, 3, 3]).unwrap();
    c.set_profiling(true).unwrap();
    c.run(|r| {
        r.embedding(&table, &idx)?;
        r.index_select(&table, 0, &idx)?;
        r.index_add(&src, 0, &idx, 7)
    })
    .unwrap();
    let p = c.take_profile();
    c.set_profiling(false).unwrap();
    let bytes = |k: &str| p.iter().find(|e| e.kernel == k).map(|e| (e.count, e.bytes));
    assert_eq!(bytes("embedding"), Some((1, 16 + 2 * 80)), "{p:?}");
    assert_eq!(
        bytes("index"),
        Some((2, (16 + 2 * 80) + (16 + 80 + 140))),
        "{p:?}"
    );
}

/// A profiled command buffer takes its timestamps from pools of 1,024 queries, so a recording of
/// 2,500 commands spans three pools: every command is counted, and the intervals, including the
/// two that cross from one pool to the next, add up to no more than the wall time (a misplaced
/// query would read as a wrapped-around, enormous interval, or never become available).
#[test]
fn profiles_span_several_query_pools() {
    let c = VulkanContext::new().unwrap();
    let x = c.upload(&random(256, -1.0, 1.0, 706), &[256]).unwrap();
    c.set_profiling(true).unwrap();
    let t = std::time::Instant::now();
    let y = c
        .run(|r| {
            let mut y = r.copy(&x)?;
            for _ in 0..2499 {
                y = r.unary(UnaryOp::MulScalar(1.0), &y)?;
            }
            Ok(y)
        })
        .unwrap();
    let wall = t.elapsed();
    let p = c.take_profile();
    let count = |k: &str| p.iter().find(|e| e.kernel == k).map_or(0, |e| e.count);
    assert_eq!(
        (count("copy"), count("unary"), p.len()),
        (1, 2499, 2),
        "{p:?}"
    );
    let total: std::time::Duration = p.iter().map(|e| e.time).sum();
    assert!(
        total > std::time::Duration::ZERO && total <= wall,
        "{total:?} in {wall:?}"
    );
    assert_eq!(c.download(&y).unwrap(), random(256, -1.0, 1.0, 706));
}

/// Planes without pixels (H·W = 0 with N·C > 0) are refused, as the tensor ops refuse them: the
/// moments, and ∂e of CondInstanceNorm++, do not share the input's shape, and would otherwise be
/// handed back unwritten — whatever memory the allocation reused, on a GPU. No planes at all is
/// an empty result, as before.
#[test]
fn norms_of_planes_without_pixels_are_refused() {
    let empty_planes = up(&[], &[2, 3, 0, 4]);
    let no_planes = up(&[], &[0, 3, 4, 4]);
    let e = up(&random(2 * 9, 0.5, 1.5, 710), &[2, 9]);
    let e0 = up(&[], &[0, 9]);
    let refused = |f: &dyn Fn(&mut Recorder<'_>) -> ncsn::Result<DeviceBuffer>| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx().run(f))).is_err()
    };
    assert!(
        refused(&|r| r.instance_norm_moments(&empty_planes)),
        "moments"
    );
    assert!(
        refused(&|r| r.instance_norm(&empty_planes, 1e-5)),
        "instance_norm"
    );
    assert!(
        refused(&|r| Ok(r.cond_instance_norm_plus(&empty_planes, &e, 1e-5)?.0)),
        "cond_instance_norm_plus"
    );
    let moments = ctx().run(|r| r.instance_norm_moments(&no_planes)).unwrap();
    assert_eq!(moments.shape(), &[0, 3, 2]);
    let (y, stats) = ctx()
        .run(|r| r.cond_instance_norm_plus(&no_planes, &e0, 1e-5))
        .unwrap();
    assert_eq!(
        (y.shape(), stats.shape()),
        (&[0, 3, 4, 4][..], &[0, 3, 2][..])
    );
}

/// Indices past the axis are refused on the host, by every kernel that takes indices: on a GPU
/// such an index would read or write whatever memory lies past the buffer (lavapipe, bounds-
/// checked, returns zeros and hides it). The largest index that fits is accepted.
#[test]
fn out_of_range_indices_are_refused_on_the_host() {
    let table = up(&random(7 * 5, -1.0, 1.0, 701), &[7, 5]);
    let src = up(&random(2 * 5, -1.0, 1.0, 702), &[2, 5]);
    let fits = ctx().upload_indices(&[3, 6]).unwrap();
    let past = ctx().upload_indices(&[3, 7]).unwrap();
    let refused = |f: &dyn Fn(&mut Recorder<'_>) -> ncsn::Result<DeviceBuffer>| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx().run(f))).is_err()
    };
    for (i, idx) in [&fits, &past].into_iter().enumerate() {
        let want = i == 1;
        assert_eq!(
            refused(&|r| r.embedding(&table, idx)),
            want,
            "embedding {i}"
        );
        assert_eq!(
            refused(&|r| r.index_select(&table, 0, idx)),
            want,
            "select {i}"
        );
        assert_eq!(refused(&|r| r.index_add(&src, 0, idx, 7)), want, "add {i}");
    }
}

/// `strided_copy` refuses a layout that reaches past its buffer, by as little as one element, on
/// either side (on a GPU the kernel would read or write whatever lies there; lavapipe returns
/// zeros and drops the writes), and copies one that ends on the last element.
#[test]
fn strided_copies_past_the_buffer_are_refused() {
    let src = up(&random(6, -1.0, 1.0, 714), &[6]);
    let dst = up(&[0.0; 6], &[6]);
    let shape = [5];
    let at = |offset: usize| Strided {
        offset,
        strides: vec![1],
    };
    let copy = |s: &Strided, d: &Strided| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ctx().run(|r| r.strided_copy(&src, s, &dst, d, &shape))
        }))
        .is_ok()
    };
    assert!(copy(&at(1), &at(1)), "elements 1 to 5 of 6");
    assert!(!copy(&at(2), &at(0)), "the source's elements 2 to 6 of 6");
    assert!(
        !copy(&at(0), &at(2)),
        "the destination's elements 2 to 6 of 6"
    );
    let got = down(&dst);
    assert_eq!(got[0], 0.0);
    assert_eq!(got[1..], down(&src)[1..]);
}

// ---------------------------------------------------------------------------------------------
// Adam

/// Three Adam steps with weight decay against the same formula on the host in f64. Each update
/// is a handful of roundings (≈ 10 ULP of the step, ~lr·1e−6) and the parameters are ≤ 1, so
/// 1e−6 absolute on the parameters is both safe and tight enough to catch a wrong formula (a
/// missing bias correction moves the step by ~lr = 1e−3). The second moment is a sum of positive
/// terms: 1e−5 relative (three steps of 3 roundings each, with margin). The first moment can
/// cancel (gradients of both signs), so its bound is a running error bound: per step the kernel
/// rounds g + wd·p, g − m, the product with (1 − β₁) and the sum, so the error obeys
/// `e ← β₁·e + 3u(1 − β₁)(|g| + |m|) + u|m_new|` (plus wd·(1 − β₁) times the parameter error),
/// doubled for margin. The hyper-parameters are `f64` on both sides, so a kernel that rounded
/// 1 − β₂ in `f32` (1.3·10⁻⁵ off) would fail the second-moment bound.
#[test]
fn adam_matches_pytorch_formula() {
    adam_against_f64(false);
}

/// The same with AMSGrad: the denominator takes the running maximum of v, kept in a fifth buffer
/// (a maximum is exact, so vmax has v's bound). With β₂ = 0.9 and gradients scaled by 1, 0.5
/// and 0.25, v falls for most elements, so the maximum at the last step is an earlier step's v
/// and the denominators differ from v's by several percent: a kernel that kept vmax but divided
/// by √v would miss the parameters' 1e−6 by far (the steps are ~1e−3).
#[test]
fn adam_amsgrad_matches_pytorch_formula() {
    adam_against_f64(true);
}

/// A NaN gradient reaches AMSGrad's running maximum as in PyTorch, whose `torch.maximum` passes
/// NaN on. GLSL's `max` leaves that unspecified, and LLVM's (lavapipe's) and NVIDIA's return the
/// other operand, which would keep the old maximum. Only the NaN-preserving kernels promise it.
#[test]
fn amsgrad_keeps_a_nan_in_its_running_maximum() {
    if !ctx().preserves_nan() {
        eprintln!("amsgrad_keeps_a_nan_in_its_running_maximum: plain kernels; skipped");
        return;
    }
    let dp = up(&[0.5, -0.5, 1.0], &[3]);
    let dg = up(&[0.1, f32::NAN, 0.2], &[3]);
    let (dm, dv, dx) = ctx()
        .run(|r| Ok((r.zeros(&[3])?, r.zeros(&[3])?, r.zeros(&[3])?)))
        .unwrap();
    ctx()
        .run(|r| r.adam_amsgrad_step(&dp, &dg, &dm, &dv, &dx, AdamConfig::default(), 1))
        .unwrap();
    let vmax = down(&dx);
    assert!(
        vmax[1].is_nan(),
        "the NaN element's running maximum: {}",
        vmax[1]
    );
    assert!(
        vmax[0] > 0.0 && vmax[2] > 0.0,
        "the finite elements' running maxima: {vmax:?}"
    );
}

fn adam_against_f64(amsgrad: bool) {
    let n = 1001;
    let cfg = AdamConfig {
        lr: 1e-3,
        weight_decay: 0.01,
        beta2: if amsgrad { 0.9 } else { 0.999 },
        ..Default::default()
    };
    // The first TINY elements start at 0 and get gradients of order ε = 1e-8, where ε is
    // added matters: after √v̂ the step is lr·g/(|g| + ε), about lr/2 = 5e-4; inside the root,
    // √(v̂ + ε) ≈ 1e-4 and the step is 1e-7. Elsewhere |g| ≫ ε and the placements agree to 1e-7.
    const TINY: usize = 8;
    let mut p0 = random(n, -1.0, 1.0, 800);
    p0[..TINY].fill(0.0);
    let dp = up(&p0, &[n]);
    let (dm, dv, dx) = ctx()
        .run(|r| Ok((r.zeros(&[n])?, r.zeros(&[n])?, r.zeros(&[n])?)))
        .unwrap();
    let (mut p, mut m, mut v, mut vmax): (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) = (
        p0.iter().map(|&x| x as f64).collect(),
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n],
    );
    let mut m_err = vec![0.0f64; n];
    let mut from_earlier = 0;
    for t in 1..=3u64 {
        let scale = if amsgrad {
            [1.0, 0.5, 0.25][t as usize - 1]
        } else {
            1.0
        };
        let g: Vec<f32> = random(n, -0.5, 0.5, 810 + t)
            .iter()
            .enumerate()
            .map(|(i, x)| match i < TINY {
                true => (i as f32 + 1.0) * 2e-9 * x.signum(),
                false => x * scale,
            })
            .collect();
        let dg = up(&g, &[n]);
        ctx()
            .run(|r| match amsgrad {
                false => r.adam_step(&dp, &dg, &dm, &dv, cfg, t),
                true => r.adam_amsgrad_step(&dp, &dg, &dm, &dv, &dx, cfg, t),
            })
            .unwrap();
        let (b1, b2) = (cfg.beta1, cfg.beta2);
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        for i in 0..n {
            let wd = cfg.weight_decay;
            let gi = g[i] as f64 + wd * p[i];
            let m_new = b1 * m[i] + (1.0 - b1) * gi;
            m_err[i] = b1 * m_err[i]
                + 3.0 * U * (1.0 - b1) * (gi.abs() + m[i].abs())
                + U * m_new.abs()
                + (1.0 - b1) * wd * 1e-6;
            m[i] = m_new;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let vd = if amsgrad {
                from_earlier += usize::from(t == 3 && vmax[i] > v[i]);
                vmax[i] = vmax[i].max(v[i]);
                vmax[i]
            } else {
                v[i]
            };
            p[i] -= cfg.lr / bc1 * m[i] / (vd.sqrt() / bc2.sqrt() + cfg.eps);
        }
    }
    assert_close("adam param", &down(&dp), &p, |_| 1e-6);
    assert_close("adam m", &down(&dm), &m, |i| 2.0 * m_err[i]);
    assert_close("adam v", &down(&dv), &v, |i| 1e-5 * v[i].abs() + 1e-12);
    if amsgrad {
        assert!(
            from_earlier > n / 2,
            "vmax was the last v for most elements"
        );
        assert_close("adam vmax", &down(&dx), &vmax, |i| {
            1e-5 * vmax[i].abs() + 1e-12
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Philox and Langevin

/// Philox4x32-10 on the host, from the published algorithm (Salmon et al. 2011).
fn philox_cpu(mut c: [u32; 4], mut k: [u32; 2]) -> [u32; 4] {
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

#[test]
fn philox_known_answers() {
    for (ctr, key, want) in ncsn::tensor::philox::KNOWN_ANSWERS {
        assert_eq!(philox_cpu(ctr, key), want, "host Philox");
        let b = ctx().run(|r| r.philox_bits(4, ctr, key)).unwrap();
        assert_eq!(
            ctx().download_bits(&b).unwrap(),
            want,
            "device Philox, counter {ctr:x?} key {key:x?}"
        );
    }
}

/// Many blocks (counter + j per block), a length that is not a multiple of 4: bit-exact
/// against the host.
#[test]
fn philox_blocks_match_host() {
    let (n, ctr, key) = (4 * 301 + 3, [7u32, 1, 2, 3], [0xdead_beef, 42]);
    let b = ctx().run(|r| r.philox_bits(n, ctr, key)).unwrap();
    let got = ctx().download_bits(&b).unwrap();
    let want: Vec<u32> = (0..n.div_ceil(4) as u32)
        .flat_map(|j| philox_cpu([ctr[0] + j, ctr[1], ctr[2], ctr[3]], key))
        .take(n)
        .collect();
    assert_eq!(got, want);
}

/// Box–Muller on the host from the same words, in f64.
fn normals_cpu(n: usize, seed: u64, counter: u64) -> Vec<f64> {
    let key = [seed as u32, (seed >> 32) as u32];
    (0..n.div_ceil(4) as u32)
        .flat_map(|j| {
            let w = philox_cpu([j, 0, counter as u32, (counter >> 32) as u32], key);
            let pair = |a: u32, b: u32| {
                let u1 = ((a >> 8) as f64 + 1.0) / 16777216.0;
                let th = (b >> 8) as f64 / 16777216.0 * (2.0 * std::f64::consts::PI)
                    - std::f64::consts::PI;
                let r = (-2.0 * u1.ln()).sqrt();
                [r * th.cos(), r * th.sin()]
            };
            let [z0, z1] = pair(w[0], w[1]);
            let [z2, z3] = pair(w[2], w[3]);
            [z0, z1, z2, z3]
        })
        .take(n)
        .collect()
}

/// Device normals against Box–Muller on the host. The device's sin/cos may be off by 2⁻¹¹
/// absolute (Vulkan precision table), times r ≤ 5.8, plus the log/sqrt error of r (a few ULP):
/// bound 6·2⁻¹¹ + 1e−5. Also: the same (seed, counter) gives the same bits; another counter
/// does not.
#[test]
fn randn_is_reproducible_box_muller() {
    let shape = [3, 5, 67];
    let n = 3 * 5 * 67;
    let (a, b, c) = ctx()
        .run(|r| {
            Ok((
                r.randn(&shape, 1234, 9)?,
                r.randn(&shape, 1234, 9)?,
                r.randn(&shape, 1234, 10)?,
            ))
        })
        .unwrap();
    let (ga, gb, gc) = (
        ctx().download_bits(&a).unwrap(),
        ctx().download_bits(&b).unwrap(),
        ctx().download_bits(&c).unwrap(),
    );
    assert_eq!(ga, gb, "same seed and counter, same bits");
    assert!(
        ga.iter().zip(&gc).filter(|(x, y)| x == y).count() < n / 100,
        "another counter, other numbers"
    );
    let want = normals_cpu(n, 1234, 9);
    assert_close("randn vs host Box-Muller", &down(&a), &want, |_| {
        6.0 * 2f64.powi(-11) + 1e-5
    });
}

/// The largest normal Box–Muller draws: a Philox word whose top 24 bits are all 0, the uniform
/// u₁ = 2⁻²⁴ (the words map to (0, 1], never 0), and the radius √(48 ln 2) ≈ 5.77. Such a word
/// comes once in 2²⁴ draws, so no other test meets one; a kernel that mapped the words to
/// [0, 1) would take the log of 0 there and return ±∞ or NaN. Seed 2026 at counter 798,362 has
/// one in block 0 (found by a search on the host, checked here with `philox_cpu`). Bound of
/// `randn_is_reproducible_box_muller`.
#[test]
fn randn_at_the_smallest_uniform_is_finite() {
    let (seed, counter) = (2026u64, 798_362u64);
    let words = philox_cpu([0, 0, counter as u32, 0], [seed as u32, 0]);
    assert_eq!(words[0] >> 8, 0, "the first word's top 24 bits");
    let z = ctx().run(|r| r.randn(&[4], seed, counter)).unwrap();
    let z = down(&z);
    let want = normals_cpu(4, seed, counter);
    assert!(
        ((want[0] * want[0] + want[1] * want[1]).sqrt() - (48.0 * 2f64.ln()).sqrt()).abs() < 1e-9,
        "the host's radius"
    );
    assert_close("randn at u1 = 2^-24", &z, &want, |_| {
        6.0 * 2f64.powi(-11) + 1e-5
    });
}

/// Moments of 2¹⁸ normals. With n samples the estimators' standard deviations are 1/√n (mean),
/// √(2/n) (variance), √(15/n) (third moment), √(96/n) (fourth moment, Var z⁴ = 105 − 9); we allow
/// 5 of them, a false-failure rate below 1e−6 per check for a correct generator (the seed is
/// fixed, so the test is deterministic anyway). Box–Muller's cut at |z| ≈ 5.77 changes the
/// moments by < 1e−6.
#[test]
fn randn_moments() {
    let n = 1usize << 18;
    let z = ctx().run(|r| r.randn(&[n], 2024, 0)).unwrap();
    let z: Vec<f64> = down(&z).into_iter().map(|v| v as f64).collect();
    let nf = n as f64;
    let mean = z.iter().sum::<f64>() / nf;
    let m2 = z.iter().map(|v| v * v).sum::<f64>() / nf;
    let m3 = z.iter().map(|v| v.powi(3)).sum::<f64>() / nf;
    let m4 = z.iter().map(|v| v.powi(4)).sum::<f64>() / nf;
    assert!(mean.abs() < 5.0 / nf.sqrt(), "mean {mean}");
    assert!(
        (m2 - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(),
        "second moment {m2}"
    );
    assert!(m3.abs() < 5.0 * (15.0 / nf).sqrt(), "third moment {m3}");
    assert!(
        (m4 - 3.0).abs() < 5.0 * (96.0 / nf).sqrt(),
        "fourth moment {m4}"
    );
}

/// Three Langevin steps recorded into one submission, against the host update with the noise of
/// `randn(seed, step)`. Per step: `x + (α/2)s + √α z` is 2 products and 2 sums of values of
/// order 1 (plus the f32 rounding of α/2 and √α): ≤ 4 ULP of ~4, so 3 steps stay within 1e−5
/// absolute. Rerunning gives identical bits, also when the loop is split by `flush`.
#[test]
fn langevin_loop_on_device() {
    let shape = [3, 5, 7]; // 105 elements: not a multiple of 4
    let n = 105;
    let (alpha, seed) = (0.01f32, 77u64);
    let x0 = random(n, -1.0, 1.0, 900);
    let scores: Vec<Vec<f32>> = (0..3).map(|t| random(n, -1.0, 1.0, 910 + t)).collect();
    let run = || {
        let x = up(&x0, &shape);
        let s: Vec<DeviceBuffer> = scores.iter().map(|s| up(s, &shape)).collect();
        // ANCHOR: loop
        // One command buffer for the whole loop: no host round trip between steps.
        ctx()
            .run(|r| {
                for (t, st) in s.iter().enumerate() {
                    r.langevin_step(&x, st, alpha, seed, t as u64)?;
                }
                Ok(())
            })
            .unwrap();
        // ANCHOR_END: loop
        down(&x)
    };
    let got = run();
    // The same loop submitted in two pieces with `flush` in between gives the same bits.
    let x = up(&x0, &shape);
    let s: Vec<DeviceBuffer> = scores.iter().map(|s| up(s, &shape)).collect();
    ctx()
        .run(|r| {
            for (t, st) in s.iter().enumerate() {
                r.langevin_step(&x, st, alpha, seed, t as u64)?;
                if t == 0 {
                    r.flush()?;
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(down(&x), got, "flushed loop");
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        run().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let mut want: Vec<f64> = x0.iter().map(|&v| v as f64).collect();
    for (t, s) in scores.iter().enumerate() {
        let z = ctx().run(|r| r.randn(&shape, seed, t as u64)).unwrap();
        let z = down(&z);
        for i in 0..n {
            want[i] += 0.5 * alpha as f64 * s[i] as f64 + (alpha as f64).sqrt() * z[i] as f64;
        }
    }
    assert_close("langevin", &got, &want, |_| 1e-5);
}

/// The seed and the step are 64-bit and both halves of each reach the noise: a Langevin step at
/// a step count past 2³² (and a seed past 2³²) against the host update with the noise of
/// `randn(seed, step)` (bound of `langevin_loop_on_device`, one step: 1e−5), and those normals
/// against Box–Muller on the host from the full 128-bit counter and 64-bit key (bound of
/// `randn_is_reproducible_box_muller`). The library's samplers only use step 0, so
/// nothing else sees the counter's high word: a kernel that dropped it (or the seed's) would draw
/// the noise of step `t mod 2³²`, the same numbers as another step, and be off by O(√α) here.
#[test]
fn langevin_noise_uses_every_bit_of_seed_and_step() {
    let shape = [3, 37]; // 111 elements: not a multiple of 4
    let n = 111;
    let (alpha, seed, step) = (0.25f32, (5u64 << 32) | 77, (3u64 << 32) | 2);
    let x0 = random(n, -1.0, 1.0, 920);
    let s = random(n, -1.0, 1.0, 921);
    let x = up(&x0, &shape);
    let ds = up(&s, &shape);
    ctx()
        .run(|r| r.langevin_step(&x, &ds, alpha, seed, step))
        .unwrap();
    let z = ctx().run(|r| r.randn(&shape, seed, step)).unwrap();
    let z = down(&z);
    assert_close(
        "randn past 2^32 vs host Box-Muller",
        &z,
        &normals_cpu(n, seed, step),
        |_| 6.0 * 2f64.powi(-11) + 1e-5,
    );
    let want: Vec<f64> = (0..n)
        .map(|i| {
            x0[i] as f64 + 0.5 * alpha as f64 * s[i] as f64 + (alpha as f64).sqrt() * z[i] as f64
        })
        .collect();
    assert_close("langevin step past 2^32", &down(&x), &want, |_| 1e-5);
}

/// Copy, zeros, and reshape bookkeeping (a reshape to another size panics).
#[test]
fn copy_zeros_reshape() {
    let x = random(10, -1.0, 1.0, 1000);
    let dx = up(&x, &[2, 5]);
    let (c, z) = ctx()
        .run(|r| Ok((r.copy(&dx)?, r.zeros(&[3, 3])?)))
        .unwrap();
    assert_eq!(down(&c), x);
    assert_eq!(down(&z), vec![0.0; 9]);
    let c = c.reshape(&[5, 2]);
    assert_eq!(c.shape(), [5, 2]);
    assert_eq!(down(&c), x);
    // A shape of another size is refused, smaller or larger: the buffer does not change size.
    for shape in [&[3, 3][..], &[11]] {
        let reshaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            up(&x, &[2, 5]).reshape(shape)
        }));
        assert!(reshaped.is_err(), "reshape of 10 elements to {shape:?}");
    }
    let e = up(&[], &[0, 3]);
    assert!(e.is_empty());
    assert_eq!(down(&e), Vec::<f32>::new());
}

/// Products and weight gradients over an empty sum (an inner extent of 0, a batch of 0) are
/// zeros, written, not whatever the output's memory held. A fresh context's memory may well be
/// zeros already, so the memory is first filled with NaN by buffers of the outputs' sizes that
/// are then dropped: the allocator hands the same memory out again, as the control checks.
#[test]
fn empty_sums_are_written_zeros_over_reused_memory() {
    let c = VulkanContext::new().unwrap();
    let a = c.upload(&[], &[3, 0]).unwrap();
    let b = c.upload(&[], &[0, 2]).unwrap();
    let x = c.upload(&[], &[0, 2, 5, 5]).unwrap();
    let dy = c.upload(&[], &[0, 3, 3, 3]).unwrap();
    let poison = |shape: &[usize]| {
        let filled: Vec<DeviceBuffer> = (0..8)
            .map(|_| c.run(|r| r.fill(shape, f32::NAN)).unwrap())
            .collect();
        drop(filled);
        let probe = c.alloc(shape).unwrap();
        let held = c.download(&probe).unwrap();
        assert!(
            held.iter().all(|v| v.is_nan()),
            "control: reused memory {held:?}"
        );
    };
    poison(&[3, 2]);
    let ab = c.run(|r| r.matmul(&a, &b, false, false)).unwrap();
    assert_eq!(c.download(&ab).unwrap(), vec![0.0; 6], "[3, 0] · [0, 2]");
    poison(&[3, 2, 3, 3]);
    let dw = c
        .run(|r| r.conv2d_weight_grad(&x, &dy, (3, 3), Conv2dParams::default()))
        .unwrap();
    assert_eq!(
        c.download(&dw).unwrap(),
        vec![0.0; 54],
        "an empty batch's dW"
    );
}

/// Empty inputs give empty (or, for sums over nothing, zero) outputs without dispatching.
#[test]
fn empty_inputs() {
    let p = Conv2dParams::default();
    let x = up(&[], &[0, 2, 5, 5]);
    let dy = up(&[], &[0, 3, 3, 3]);
    let a = up(&[], &[0, 4]);
    let b = up(&random(12, -1.0, 1.0, 1100), &[4, 3]);
    let (dw, c, e, s) = ctx()
        .run(|r| {
            Ok((
                r.conv2d_weight_grad(&x, &dy, (3, 3), p)?,
                r.matmul(&a, &b, false, false)?,
                r.unary(UnaryOp::Exp, &a)?,
                r.reduce(ReduceOp::Sum, &a, &[0], false)?,
            ))
        })
        .unwrap();
    assert_eq!(dw.shape(), [3, 2, 3, 3]);
    assert_eq!(down(&dw), vec![0.0; 54]);
    assert_eq!(c.shape(), [0, 3]);
    assert!(e.is_empty());
    assert_eq!(down(&s), vec![0.0; 4], "a sum over an empty axis is 0");
}
