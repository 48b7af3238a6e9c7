//! The convolution, pooling, resizing and per-plane ops: forward values against direct loops
//! written from PyTorch's definitions, and first and second derivatives against central finite
//! differences (the harness and its tolerances are in common/mod.rs).
//!
//! Sizes are small (a few dozen elements per input) and values are O(1), which keeps |L| within
//! the range the harness's tolerance (4e-3 + 2e-2·|fd|) was derived for. All ops here are smooth
//! (linear, bilinear, or a rational function of x for the instance norm) so no input needs to keep
//! away from a kink; the composed network below uses softplus for the same reason.

mod common;

use common::{check, tensor};
use ncsn::Tensor;
use ncsn::tensor::{Conv2dConfig, Pool2dConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Forward values of pooling, resizing and the per-plane ops are computed in f32 in another order
/// than the direct loop's; with ≤ 50 terms of magnitude ≤ 1 the rounding difference is
/// ≲ 50·6e-8·|terms| ≈ 3e-6. 1e-4 leaves room and still catches any misplaced tap (an error of
/// O(0.1)). Convolutions, whose sums run to 631 terms here, are held to their own bound
/// ([`assert_conv_close`]).
const FWD_TOL: f32 = 1e-4;

fn assert_close(name: &str, got: &Tensor, want: &[f32]) {
    let g = got.to_vec();
    assert_eq!(g.len(), want.len(), "{name}: length");
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= FWD_TOL * (1.0 + b.abs()),
            "{name}: element {i}: {a} vs {b}"
        );
    }
}

/// A convolution's outputs against [`naive_conv`]'s f64 values. The kernel sums each output's
/// C·KH·KW products and the bias in f32, in its own order, so it is within n·2⁻²⁴·Σ|terms| of the
/// exact sum for n = C·KH·KW + 1 terms (the bound of recursive summation, Higham §4.2: with
/// n·u ≤ 4e-5 the γₙ = n·u/(1 − n·u) of the book is n·u to 4e-5). Terms here are products of
/// numbers in ±[0.1, 1]: a misplaced or dropped tap moves an output by one of them, 0.3 on
/// average, against a tolerance of n·u·Σ|terms| ≤ 631·6e-8·631·0.3 ≈ 7e-3 at the most.
fn assert_conv_close(name: &str, got: &Tensor, want: &[(f64, f64)], terms: usize) {
    let g = got.to_vec();
    assert_eq!(g.len(), want.len(), "{name}: length");
    let u = f64::from(f32::EPSILON) / 2.0;
    for (i, (&a, &(v, s))) in g.iter().zip(want).enumerate() {
        let tol = terms as f64 * u * s + 1e-7;
        assert!(
            (f64::from(a) - v).abs() <= tol,
            "{name}: element {i}: {a} vs {v} (tolerance {tol:.2e})"
        );
    }
}

/// `F.conv2d` by its definition, in f64: y[n,o,i,j] = b[o] + Σ w[o,c,u,v]·x[n,c,i·s−p+u·d,
/// j·s−p+v·d], each output with the sum of the absolute values of its terms (for a tolerance).
fn naive_conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dConfig) -> Vec<(f64, f64)> {
    let (xs, ws) = (x.to_array(), w.to_array());
    let [n, c, h, wd] = <[usize; 4]>::try_from(x.shape()).unwrap();
    let [o, _, kh, kw] = <[usize; 4]>::try_from(w.shape()).unwrap();
    let (s, p, d) = (
        cfg.stride as isize,
        cfg.padding as isize,
        cfg.dilation as isize,
    );
    let (ho, wo) = (cfg.out_size(h, kh), cfg.out_size(wd, kw));
    let bias = b.map(|b| b.to_vec());
    let mut out = Vec::new();
    for ni in 0..n {
        for oi in 0..o {
            for i in 0..ho as isize {
                for j in 0..wo as isize {
                    let b0 = bias.as_ref().map_or(0.0, |b| f64::from(b[oi]));
                    let mut acc = (b0, b0.abs());
                    for ci in 0..c {
                        for u in 0..kh as isize {
                            for v in 0..kw as isize {
                                let (ii, jj) = (i * s - p + u * d, j * s - p + v * d);
                                if ii >= 0 && jj >= 0 && ii < h as isize && jj < wd as isize {
                                    let t = f64::from(ws[[oi, ci, u as usize, v as usize]])
                                        * f64::from(xs[[ni, ci, ii as usize, jj as usize]]);
                                    acc = (acc.0 + t, acc.1 + t.abs());
                                }
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

/// The convolution configurations exercised: (kernel, stride, padding, dilation, input side).
const CONVS: [(usize, usize, usize, usize, usize); 7] = [
    (3, 1, 1, 1, 5), // conv3x3
    (3, 2, 1, 1, 5), // strided
    (3, 1, 2, 2, 5), // dilated_conv3x3(d = 2)
    (1, 1, 0, 1, 4), // 1×1: the pointwise path without im2col
    (2, 2, 0, 1, 5), // even kernel, stride 2, input size not a multiple of the stride
    (3, 1, 0, 2, 6), // dilation without padding
    (3, 1, 4, 4, 5), // dilation as large as the image: whole taps fall on the padding
];

#[test]
fn conv2d_forward_matches_definition() {
    for (seed, &(k, s, p, d, side)) in CONVS.iter().enumerate() {
        let mut r = rng(seed as u64);
        let x = tensor(&mut r, &[2, 3, side, side + 1], 0.1, 1.0, true);
        let w = tensor(&mut r, &[4, 3, k, k], 0.1, 1.0, true);
        let b = tensor(&mut r, &[4], 0.1, 1.0, true);
        let cfg = Conv2dConfig::new(s, p, d);
        let y = x.conv2d(&w, Some(&b), cfg);
        assert_eq!(
            y.shape(),
            &[2, 4, cfg.out_size(side, k), cfg.out_size(side + 1, k)]
        );
        let terms = 3 * k * k + 1;
        assert_conv_close("conv2d", &y, &naive_conv(&x, &w, Some(&b), cfg), terms);
        assert_conv_close(
            "conv2d no bias",
            &x.conv2d(&w, None, cfg),
            &naive_conv(&x, &w, None, cfg),
            terms,
        );
    }
}

/// Batches of 37 images: the kernels split a batch into at most 16 tasks, so each task runs
/// several images through one column buffer, whose padding entries `im2col` relies on staying
/// zero. Each image differs, so an entry left over from the previous image would show.
#[test]
fn conv_kernels_reuse_column_buffers_across_images() {
    for (seed, &(k, s, p, d, side)) in CONVS.iter().enumerate() {
        let mut r = rng(500 + seed as u64);
        let cfg = Conv2dConfig::new(s, p, d);
        let x = tensor(&mut r, &[37, 2, side, side + 1], 0.1, 1.0, true);
        let w = tensor(&mut r, &[3, 2, k, k], 0.1, 1.0, true);
        let y = x.conv2d(&w, None, cfg);
        let want = naive_conv(&x, &w, None, cfg);
        assert_conv_close("conv2d, batch 37", &y, &want, 2 * k * k + 1);
        // The weight gradient (which also runs im2col) and the input gradient, over the whole
        // batch.
        let g = tensor(&mut r, y.shape(), 0.1, 1.0, true);
        assert_trilinear(&x, &w, &g, cfg);
    }
}

/// Enough input channels that the forward kernel builds the column matrix a block of channels
/// at a time (at most 128 Ki floats: 56 channels of a 3 × 3 conv with a 16 × 16 output, so 70
/// channels make two blocks, the second partial; the strided case fits in one), with and
/// without bias, against the definition.
#[test]
fn conv2d_forward_in_channel_blocks() {
    for (seed, &(k, s, p, d, side)) in [(3, 1, 1, 1, 16), (3, 2, 1, 1, 16), (3, 1, 2, 2, 16)]
        .iter()
        .enumerate()
    {
        let mut r = rng(300 + seed as u64);
        let cfg = Conv2dConfig::new(s, p, d);
        let x = tensor(&mut r, &[3, 70, side, side], 0.1, 1.0, true);
        let w = tensor(&mut r, &[2, 70, k, k], 0.1, 1.0, true);
        let b = tensor(&mut r, &[2], 0.1, 1.0, true);
        let terms = 70 * k * k + 1;
        let y = x.conv2d(&w, Some(&b), cfg);
        let want = naive_conv(&x, &w, Some(&b), cfg);
        assert_conv_close("conv2d, 70 channels", &y, &want, terms);
        let y = x.conv2d(&w, None, cfg);
        let want = naive_conv(&x, &w, None, cfg);
        assert_conv_close("conv2d, 70 channels, no bias", &y, &want, terms);
    }
}

/// The kernels split a batch into a fixed number of tasks, whatever the number of threads, and
/// add the weight gradient's per-task partial sums in task order: the same bits on one thread as
/// on three.
#[test]
fn conv_gradients_do_not_depend_on_the_thread_count() {
    let mut r = rng(400);
    let cfg = Conv2dConfig::new(1, 1, 1);
    let x = tensor(&mut r, &[37, 4, 9, 9], 0.1, 1.0, true);
    let w = tensor(&mut r, &[5, 4, 3, 3], 0.1, 1.0, true);
    let g = tensor(&mut r, &[37, 5, 9, 9], 0.1, 1.0, true);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        pool.install(|| {
            [
                x.conv2d(&w, None, cfg).to_vec(),
                g.conv2d_input_grad(&w, cfg, (9, 9)).to_vec(),
                x.conv2d_weight_grad(&g, cfg, (3, 3)).to_vec(),
            ]
        })
    };
    let bits = |v: &[Vec<f32>; 3]| v.iter().flatten().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&run(1)), bits(&run(3)));
}

/// ∂L/∂x and ∂L/∂w of `F.conv2d` for ∂L/∂y = g, by the adjoint loops of [`naive_conv`] in f64:
/// each entry with the sum of the absolute values of its terms (for a tolerance).
fn naive_conv_grads(x: &Tensor, w: &Tensor, g: &Tensor, cfg: Conv2dConfig) -> [Vec<(f64, f64)>; 2] {
    let (xs, ws, gs) = (x.to_array(), w.to_array(), g.to_array());
    let (xsh, wsh, gsh) = (xs.shape(), ws.shape(), gs.shape());
    let (n, c, h, wd) = (xsh[0], xsh[1], xsh[2], xsh[3]);
    let (o, kh, kw) = (wsh[0], wsh[2], wsh[3]);
    let (ho, wo) = (gsh[2], gsh[3]);
    let mut dx = vec![(0.0, 0.0); n * c * h * wd];
    let mut dw = vec![(0.0, 0.0); o * c * kh * kw];
    for ni in 0..n {
        for oi in 0..o {
            for i in 0..ho {
                for j in 0..wo {
                    let gv = gs[[ni, oi, i, j]] as f64;
                    for ci in 0..c {
                        for u in 0..kh {
                            for v in 0..kw {
                                let ii = (i * cfg.stride + u * cfg.dilation) as isize
                                    - cfg.padding as isize;
                                let jj = (j * cfg.stride + v * cfg.dilation) as isize
                                    - cfg.padding as isize;
                                if ii < 0 || jj < 0 || ii >= h as isize || jj >= wd as isize {
                                    continue;
                                }
                                let (ii, jj) = (ii as usize, jj as usize);
                                let tx = gv * ws[[oi, ci, u, v]] as f64;
                                let e = &mut dx[((ni * c + ci) * h + ii) * wd + jj];
                                *e = (e.0 + tx, e.1 + tx.abs());
                                let tw = gv * xs[[ni, ci, ii, jj]] as f64;
                                let e = &mut dw[((oi * c + ci) * kh + u) * kw + v];
                                *e = (e.0 + tw, e.1 + tw.abs());
                            }
                        }
                    }
                }
            }
        }
    }
    [dx, dw]
}

/// Stride-1 "same" convolutions at sizes that leave partial tiles in every kernel that handles
/// them (on CPUs with AVX-512 these run the implicit-im2col kernels of `conv_same`; elsewhere the
/// im2col ones): 143 = 4·32 + 15 pixels, 19 output channels (2·8 + 3, and 6·3 + 1), batches of
/// 7 (the weight gradient takes 6 images of 143 pixels at a time, then 1), dilations up to 3 and a
/// 1 × 1 kernel. Forward values against the definition (`assert_conv_close`); gradients against
/// the f64 loops, within 2e-5·Σ|terms|: the kernels sum each output in chains of at most ~170
/// terms (≤ 170·2⁻²⁴ ≈ 1e-5 relative to Σ|terms|), while a pixel dropped at an edge moves an entry
/// by a whole term, ≳ 1e-3·Σ|terms| here.
#[test]
fn same_convolutions_at_tile_edges() {
    for (seed, &(n, c, o, h, w, k, p, d)) in [
        (7, 5, 19, 13, 11, 3, 1, 1),
        (7, 5, 19, 13, 11, 3, 2, 2),
        (3, 2, 9, 9, 17, 3, 3, 3),
        (5, 6, 17, 13, 11, 1, 0, 1),
    ]
    .iter()
    .enumerate()
    {
        let mut r = rng(600 + seed as u64);
        let cfg = Conv2dConfig::new(1, p, d);
        let x = tensor(&mut r, &[n, c, h, w], 0.1, 1.0, true);
        let wt = tensor(&mut r, &[o, c, k, k], 0.1, 1.0, true);
        let b = tensor(&mut r, &[o], 0.1, 1.0, true);
        let y = x.conv2d(&wt, Some(&b), cfg);
        assert_eq!(y.shape(), &[n, o, h, w], "a same convolution");
        let want = naive_conv(&x, &wt, Some(&b), cfg);
        assert_conv_close("same conv2d", &y, &want, c * k * k + 1);
        let g = tensor(&mut r, &[n, o, h, w], 0.1, 1.0, true);
        let [dx, dw] = naive_conv_grads(&x, &wt, &g, cfg);
        for (name, got, want) in [
            ("input grad", g.conv2d_input_grad(&wt, cfg, (h, w)), dx),
            ("weight grad", x.conv2d_weight_grad(&g, cfg, (k, k)), dw),
        ] {
            assert_eq!(got.numel(), want.len(), "{name}: element count");
            for (i, (a, (v, s))) in got.to_vec().into_iter().zip(want).enumerate() {
                assert!(
                    (a as f64 - v).abs() <= 2e-5 * s + 1e-6,
                    "{name} ({n}×{c}×{h}×{w}, {o} out, k {k}, d {d}): element {i}: {a} vs {v}"
                );
            }
        }
    }
}

/// ⟨conv(x, w), g⟩ = ⟨x, input_grad(g, w)⟩ = ⟨w, weight_grad(x, g)⟩: the three bilinear maps are
/// one trilinear form. Each side is a sum of a few thousand products of O(1) numbers, rounded in
/// f32 in different orders (relative error ~1e-6); 1e-4 still catches a misplaced tap.
fn assert_trilinear(x: &Tensor, w: &Tensor, g: &Tensor, cfg: Conv2dConfig) {
    let (xs, ws) = (x.shape(), w.shape());
    let t1 = x.conv2d(w, None, cfg).mul(g).sum_all().item();
    let t2 = x
        .mul(&g.conv2d_input_grad(w, cfg, (xs[2], xs[3])))
        .sum_all()
        .item();
    let t3 = w
        .mul(&x.conv2d_weight_grad(g, cfg, (ws[2], ws[3])))
        .sum_all()
        .item();
    assert!(
        (t1 - t2).abs() < 1e-4 * (1.0 + t1.abs()),
        "input_grad: {t1} vs {t2}"
    );
    assert!(
        (t1 - t3).abs() < 1e-4 * (1.0 + t1.abs()),
        "weight_grad: {t1} vs {t3}"
    );
}

#[test]
fn conv_transpose_and_weight_grad_are_adjoints() {
    for (seed, &(k, s, p, d, side)) in CONVS.iter().enumerate() {
        let mut r = rng(100 + seed as u64);
        let cfg = Conv2dConfig::new(s, p, d);
        let x = tensor(&mut r, &[2, 3, side, side + 1], 0.1, 1.0, true);
        let w = tensor(&mut r, &[4, 3, k, k], 0.1, 1.0, true);
        let g = tensor(&mut r, x.conv2d(&w, None, cfg).shape(), 0.1, 1.0, true);
        assert_trilinear(&x, &w, &g, cfg);
    }
}

#[test]
fn conv2d_gradients_first_and_second_order() {
    for (seed, &(k, s, p, d, side)) in CONVS.iter().enumerate() {
        let mut r = rng(200 + seed as u64);
        let cfg = Conv2dConfig::new(s, p, d);
        let x = tensor(&mut r, &[2, 2, side, side], 0.1, 1.0, true);
        let w = tensor(&mut r, &[3, 2, k, k], 0.1, 0.5, true);
        let b = tensor(&mut r, &[3], 0.1, 0.5, true);
        let f = move |t: &[Tensor]| t[0].conv2d(&t[1], Some(&t[2]), cfg);
        check("conv2d", &f, &[x.clone(), w.clone(), b], seed as u64).unwrap();
        // The two gradient ops as functions of their own arguments: their VJPs (written with the
        // other members of the family) are what second-order gradients of a network go through.
        let y = x.conv2d(&w, None, cfg);
        let g = tensor(&mut r, y.shape(), 0.1, 1.0, true);
        let fi = move |t: &[Tensor]| t[0].conv2d_input_grad(&t[1], cfg, (side, side));
        check(
            "conv2d_input_grad",
            &fi,
            &[g.clone(), w.clone()],
            seed as u64,
        )
        .unwrap();
        let fw = move |t: &[Tensor]| t[0].conv2d_weight_grad(&t[1], cfg, (k, k));
        check("conv2d_weight_grad", &fw, &[x.clone(), g], seed as u64).unwrap();
    }
}

/// `nn.AvgPool2d(k, s, p)` (count_include_pad) by its definition.
fn naive_avg_pool(x: &Tensor, cfg: Pool2dConfig) -> Vec<f32> {
    let xs = x.to_array();
    let [n, c, h, w] = <[usize; 4]>::try_from(x.shape()).unwrap();
    let (k, s, p) = (
        cfg.kernel as isize,
        cfg.stride as isize,
        cfg.padding as isize,
    );
    let (ho, wo) = (cfg.out_size(h), cfg.out_size(w));
    let mut out = Vec::new();
    for ni in 0..n {
        for ci in 0..c {
            for i in 0..ho as isize {
                for j in 0..wo as isize {
                    let (h0, w0) = (i * s - p, j * s - p);
                    let (h1, w1) = ((h0 + k).min(h as isize + p), (w0 + k).min(w as isize + p));
                    let size = ((h1 - h0) * (w1 - w0)) as f32;
                    let mut acc = 0.0;
                    for ii in h0.max(0)..h1.min(h as isize) {
                        for jj in w0.max(0)..w1.min(w as isize) {
                            acc += xs[[ni, ci, ii as usize, jj as usize]];
                        }
                    }
                    out.push(acc / size);
                }
            }
        }
    }
    out
}

const POOLS: [(usize, usize, usize, usize); 4] = [
    (5, 1, 2, 6), // CondCRPBlock's pooling
    (2, 2, 0, 6), // ConvMeanPool's 2×2 mean
    (3, 2, 1, 6), // windows cut by the padding: divisors vary along the edges
    (3, 3, 1, 7), // stride larger than 2, windows beyond the padding
];

#[test]
fn avg_pool2d_forward_and_gradients() {
    for (seed, &(k, s, p, side)) in POOLS.iter().enumerate() {
        let mut r = rng(300 + seed as u64);
        let cfg = Pool2dConfig::new(k, s, p);
        let x = tensor(&mut r, &[2, 2, side, side - 1], 0.1, 1.0, true);
        assert_close("avg_pool2d", &x.avg_pool2d(cfg), &naive_avg_pool(&x, cfg));
        let f = move |t: &[Tensor]| t[0].avg_pool2d(cfg);
        check("avg_pool2d", &f, std::slice::from_ref(&x), seed as u64).unwrap();
        let y = x.avg_pool2d(cfg);
        let g = tensor(&mut r, y.shape(), 0.1, 1.0, true);
        let fa = move |t: &[Tensor]| t[0].avg_pool2d_adjoint(cfg, (side, side - 1));
        check("avg_pool2d_adjoint", &fa, &[g], seed as u64).unwrap();
    }
}

/// ⟨op(x), g⟩ = ⟨x, adjointᵀ(g)⟩ for average pooling and bilinear resizing over many planes.
/// Their adjoints work plane by plane, each worker reusing one scratch buffer across the planes
/// it takes; the finite-difference checks above use four planes, which the thread pool may hand
/// out one per worker, so a buffer not cleared between planes could pass them (a planted fault
/// did, caught only by the RefineNet comparisons). 192 planes cannot all go one per worker on a
/// machine of a few cores. Every value is positive, so both sides are sums of positive terms:
/// each output is a sum of at most 25 products in f32, within 25·2⁻²⁴ ≈ 1.5e-6 relative of its
/// exact value, and the dot products add up in f64, so the two sides agree within about 3e-6
/// relative; 1e-5 is allowed. A plane that starts from the last plane's leftovers adds a
/// positive amount of the order of the plane itself.
#[test]
fn pool_and_resize_adjoints_hold_over_many_planes() {
    let dot = |a: &Tensor, b: &Tensor| -> f64 {
        a.to_vec()
            .iter()
            .zip(b.to_vec())
            .map(|(&u, v)| u as f64 * v as f64)
            .sum()
    };
    let agree = |name: &str, lhs: f64, rhs: f64| {
        assert!(
            (lhs - rhs).abs() <= 1e-5 * lhs.abs(),
            "{name}: ⟨op(x), g⟩ = {lhs} vs ⟨x, adjoint(g)⟩ = {rhs}"
        );
    };
    for (seed, &(k, s, p, side)) in POOLS.iter().enumerate() {
        let mut r = rng(700 + seed as u64);
        let cfg = Pool2dConfig::new(k, s, p);
        let x = tensor(&mut r, &[4, 48, side, side - 1], 0.1, 1.0, false);
        let y = x.avg_pool2d(cfg);
        let g = tensor(&mut r, y.shape(), 0.1, 1.0, false);
        let back = g.avg_pool2d_adjoint(cfg, (side, side - 1));
        agree(&format!("avg_pool2d {cfg:?}"), dot(&y, &g), dot(&x, &back));
    }
    for (seed, &(inp, out)) in [((3, 4), (5, 7)), ((6, 5), (3, 2))].iter().enumerate() {
        let mut r = rng(710 + seed as u64);
        let x = tensor(&mut r, &[4, 48, inp.0, inp.1], 0.1, 1.0, false);
        let y = x.resize_bilinear(out);
        let g = tensor(&mut r, y.shape(), 0.1, 1.0, false);
        let back = g.resize_bilinear_adjoint(inp);
        agree(
            &format!("resize_bilinear {inp:?} -> {out:?}"),
            dot(&y, &g),
            dot(&x, &back),
        );
    }
}

#[test]
fn mean_pool_is_the_reference_four_slice_mean() {
    // ConvMeanPool: (o[::2, ::2] + o[1::2, ::2] + o[::2, 1::2] + o[1::2, 1::2]) / 4
    let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]);
    let y = x.avg_pool2d(Pool2dConfig::new(2, 2, 0));
    assert_eq!(y.to_vec(), vec![2.5, 4.5, 10.5, 12.5]);
}

/// `F.interpolate(mode='bilinear', align_corners=True)` by its definition.
fn naive_bilinear(x: &Tensor, (ho, wo): (usize, usize)) -> Vec<f32> {
    let xs = x.to_array();
    let [n, c, h, w] = <[usize; 4]>::try_from(x.shape()).unwrap();
    let src = |o: usize, out: usize, inp: usize| -> (usize, usize, f32) {
        let pos = if out > 1 {
            o as f32 * (inp as f32 - 1.0) / (out as f32 - 1.0)
        } else {
            0.0
        };
        let i0 = pos.floor() as usize;
        let i1 = (i0 + 1).min(inp - 1);
        (i0, i1, pos - i0 as f32)
    };
    let mut out = Vec::new();
    for ni in 0..n {
        for ci in 0..c {
            for i in 0..ho {
                let (h0, h1, lh) = src(i, ho, h);
                for j in 0..wo {
                    let (w0, w1, lw) = src(j, wo, w);
                    let v = |a: usize, b: usize| xs[[ni, ci, a, b]];
                    out.push(
                        (1.0 - lh) * ((1.0 - lw) * v(h0, w0) + lw * v(h0, w1))
                            + lh * ((1.0 - lw) * v(h1, w0) + lw * v(h1, w1)),
                    );
                }
            }
        }
    }
    out
}

#[test]
fn resize_bilinear_forward_and_gradients() {
    let sizes = [
        ((3, 4), (5, 7)),
        ((4, 4), (8, 8)),
        ((6, 5), (3, 2)),
        ((3, 3), (1, 4)),
    ];
    for (seed, &(inp, out)) in sizes.iter().enumerate() {
        let mut r = rng(400 + seed as u64);
        let x = tensor(&mut r, &[2, 2, inp.0, inp.1], 0.1, 1.0, true);
        let y = x.resize_bilinear(out);
        assert_eq!(y.shape(), &[2, 2, out.0, out.1]);
        assert_close("resize_bilinear", &y, &naive_bilinear(&x, out));
        let f = move |t: &[Tensor]| t[0].resize_bilinear(out);
        check("resize_bilinear", &f, std::slice::from_ref(&x), seed as u64).unwrap();
        let g = tensor(&mut r, y.shape(), 0.1, 1.0, true);
        let fa = move |t: &[Tensor]| t[0].resize_bilinear_adjoint(inp);
        check("resize_bilinear_adjoint", &fa, &[g], seed as u64).unwrap();
    }
    // The same size is the identity.
    let x = tensor(&mut rng(9), &[1, 2, 3, 3], 0.1, 1.0, true);
    assert_eq!(x.resize_bilinear((3, 3)).to_vec(), x.to_vec());
}

#[test]
fn instance_norm_forward_and_gradients() {
    let mut r = rng(500);
    let x = tensor(&mut r, &[2, 3, 3, 3], 0.1, 1.0, true);
    let y = x.instance_norm(1e-5);
    // Each plane: mean 0, biased variance σ²/(σ² + ε) ≈ 1.
    let mean = y.mean(&[2, 3], false).to_vec();
    let var = y.var(&[2, 3], false, false).to_vec();
    assert!(mean.iter().all(|m| m.abs() < 1e-5), "{mean:?}");
    assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-3), "{var:?}");
    // Element by element, (x − μ)/√(σ² + ε) in f64 with the biased σ² (a permutation or a sign
    // flip within a plane keeps the two moments above): f32 statistics of 9 values and one
    // rounding per step, far inside 1e-5.
    let (xs, ys) = (x.to_vec(), y.to_vec());
    for (plane, (xp, yp)) in xs.chunks(9).zip(ys.chunks(9)).enumerate() {
        let mu = xp.iter().map(|&v| v as f64).sum::<f64>() / 9.0;
        let var = xp.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / 9.0;
        for (i, (&xv, &yv)) in xp.iter().zip(yp).enumerate() {
            let want = (xv as f64 - mu) / (var + 1e-5).sqrt();
            assert!(
                (yv as f64 - want).abs() < 1e-5,
                "plane {plane}, element {i}: {yv} vs {want}"
            );
        }
    }
    // The first-order check runs the fused kernel (no graph recorded), the second-order check
    // the tensor-op formula (create_graph): both are compared with finite differences.
    let f = |t: &[Tensor]| t[0].instance_norm(1e-5);
    check("instance_norm", &f, std::slice::from_ref(&x), 500).unwrap();
}

#[test]
fn channel_affine_and_dot_gradients() {
    let mut r = rng(600);
    let x = tensor(&mut r, &[2, 3, 2, 3], 0.1, 1.0, true);
    let a = tensor(&mut r, &[2, 3], 0.1, 1.0, true);
    let b = tensor(&mut r, &[2, 3], 0.1, 1.0, true);
    let y = x.channel_affine(&a, Some(&b));
    let want = x
        .mul(&a.reshape(&[2, 3, 1, 1]))
        .add(&b.reshape(&[2, 3, 1, 1]));
    assert_close("channel_affine", &y, &want.to_vec());
    let f = |t: &[Tensor]| t[0].channel_affine(&t[1], Some(&t[2]));
    check("channel_affine", &f, &[x.clone(), a.clone(), b], 600).unwrap();
    let f = |t: &[Tensor]| t[0].channel_affine(&t[1], None);
    check("channel_affine_nobias", &f, &[x.clone(), a], 601).unwrap();
    let z = tensor(&mut r, &[2, 3, 2, 3], 0.1, 1.0, true);
    assert_close(
        "channel_dot",
        &x.channel_dot(&z),
        &x.mul(&z).sum(&[2, 3], false).to_vec(),
    );
    let f = |t: &[Tensor]| t[0].channel_dot(&t[1]);
    check("channel_dot", &f, &[x, z], 602).unwrap();
}

#[test]
fn cond_instance_norm_plus_gradients() {
    // x and the per-sample parameters e = [γ | α | β] (N, 3C). Planes with different means, so
    // that the cross-channel term α·z moves. The first-order check runs the fused backward, the
    // second-order check the tensor-op VJP (create_graph).
    let mut r = rng(650);
    let x = tensor(&mut r, &[2, 3, 2, 3], 0.1, 1.0, true);
    let x = x.add(&Tensor::from_vec(vec![-1.0, 0.0, 1.5], &[1, 3, 1, 1]));
    let e = tensor(&mut r, &[2, 9], 0.5, 1.5, true);
    let f = |t: &[Tensor]| t[0].cond_instance_norm_plus(&t[1], 1e-5);
    check("cond_instance_norm_plus", &f, &[x, e], 650).unwrap();
}

#[test]
fn embedding_lookup_gradients() {
    // The noise-level embedding: rows of a (L, 3C) table picked by label, repeats allowed.
    let mut r = rng(700);
    let table = tensor(&mut r, &[4, 6], 0.1, 1.0, true);
    let f = |t: &[Tensor]| t[0].index_select(0, &[2, 0, 2, 3]);
    check("embedding", &f, &[table], 700).unwrap();
}

#[test]
fn composed_conv_net_second_order() {
    // A small conv → instance norm → softplus → avg-pool → upsample → conv chain, differentiated
    // twice with respect to input and weights together: the mixed second derivatives of a network
    // (what sliced score matching needs) pass through every VJP above. Softplus, not the
    // network's ELU: ELU's second derivative jumps by α at 0, and the normalised values are
    // about N(0, 1), so a finite-difference step of 1e-2 in x straddles that kink for some of
    // them at most seeds (a PyTorch copy of this check failed at 49 of 200 seeds with ELU, at
    // none with softplus). ELU's own second derivative is checked against its exact formula, on
    // both sides of 0, in tests/autograd_higher_order.rs.
    let mut r = rng(800);
    let x = tensor(&mut r, &[1, 2, 4, 4], 0.1, 1.0, true);
    let w1 = tensor(&mut r, &[2, 2, 3, 3], 0.1, 0.5, true);
    let w2 = tensor(&mut r, &[1, 2, 3, 3], 0.1, 0.5, true);
    let f = |t: &[Tensor]| {
        let h = t[0].conv2d(&t[1], None, Conv2dConfig::new(1, 1, 1));
        let h = h.instance_norm(1e-5).softplus();
        let h = h
            .avg_pool2d(Pool2dConfig::new(2, 2, 0))
            .resize_bilinear((4, 4));
        h.conv2d(&t[2], None, Conv2dConfig::new(1, 2, 2))
    };
    check("conv_net", &f, &[x, w1, w2], 800).unwrap();
}

#[test]
fn elu_matches_expm1() {
    // ELU's forward uses a vectorisable eˣ − 1 (polynomial after range reduction); against the
    // exact value on a fine grid its absolute error stays below 3e-7 (the kernel's docs claim 2e-7
    // from the polynomial's ~1e-7 relative error plus the final rounding; 3e-7 leaves one ulp of
    // 1.0 for the subtraction). Large inputs (≥ 2¹⁶ elements) take the parallel path too.
    let xs: Vec<f32> = (0..100_000).map(|i| -90.0 + i as f32 * 0.000_95).collect();
    let y = Tensor::from_vec(xs.clone(), &[xs.len()]).elu(1.0).to_vec();
    for (&x, &v) in xs.iter().zip(&y) {
        let want = if x > 0.0 {
            x as f64
        } else {
            (x as f64).exp_m1()
        };
        assert!(
            (v as f64 - want).abs() < 3e-7,
            "elu({x}) = {v}, want {want}"
        );
    }
    let small: Vec<f32> = (0..2000).map(|i| -0.02 + i as f32 * 1e-5).collect();
    let y = Tensor::from_vec(small.clone(), &[small.len()])
        .elu(2.0)
        .to_vec();
    for (&x, &v) in small.iter().zip(&y) {
        let want = if x > 0.0 {
            x as f64
        } else {
            2.0 * (x as f64).exp_m1()
        };
        assert!(
            (v as f64 - want).abs() < 6e-7 * (1.0 + want.abs()),
            "elu({x}) = {v}, want {want}"
        );
        // Relative too, where eˣ − 1 computed as exp(x) − 1 would cancel: near 0 its error is an
        // ulp of 1.0 (6e-8) against values down to 1e-5, a relative error up to 1e-2. expm1's is
        // a few ulps of the value itself (see fastmath's test); 1e-6 leaves a margin of 8 or more.
        if x != 0.0 {
            assert!(
                (v as f64 - want).abs() <= 1e-6 * want.abs(),
                "elu({x}) = {v}, want {want}: relative error {}",
                (v as f64 - want).abs() / want.abs()
            );
        }
    }
}

/// Shapes with nothing to compute on are refused with a message naming the op and the shape,
/// not an arithmetic or slicing panic from deep inside a kernel.
#[test]
fn empty_planes_and_kernels_are_named() {
    let message = |f: &(dyn Fn() + std::panic::RefUnwindSafe)| {
        let err = std::panic::catch_unwind(f).expect_err("should panic");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let x = Tensor::zeros(&[1, 2, 5, 5]);
    let cfg = Conv2dConfig::default();
    let no_out = message(&|| {
        x.conv2d(&Tensor::zeros(&[0, 2, 3, 3]), None, cfg);
    });
    assert!(
        no_out.contains("conv2d: the weight [0, 2, 3, 3]"),
        "{no_out}"
    );
    let no_kernel = message(&|| {
        x.conv2d(&Tensor::zeros(&[4, 2, 0, 3]), None, cfg);
    });
    assert!(no_kernel.contains("kernel of at least 1×1"), "{no_kernel}");
    let no_in = message(&|| {
        Tensor::zeros(&[1, 0, 5, 5]).conv2d(&Tensor::zeros(&[4, 0, 3, 3]), None, cfg);
    });
    assert!(no_in.contains("one input channel"), "{no_in}");
    let pool = Pool2dConfig::new(3, 1, 1);
    let empty = Tensor::zeros(&[1, 2, 4, 0]);
    let m = message(&|| {
        empty.avg_pool2d(pool);
    });
    assert!(
        m.contains("avg_pool2d: input planes of 4×0 are empty"),
        "{m}"
    );
    let m = message(&|| {
        empty.resize_bilinear((3, 3));
    });
    assert!(
        m.contains("resize_bilinear: input planes of 4×0 are empty"),
        "{m}"
    );
}
