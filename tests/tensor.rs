//! Forward values of ops against hand-computed or NumPy-rule results.

use ncsn::Tensor;

#[test]
fn broadcasting_follows_numpy() {
    let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3, 1]);
    let b = Tensor::from_vec(vec![10.0, 20.0], &[2]);
    let c = a.add(&b);
    assert_eq!(c.shape(), &[3, 2]);
    assert_eq!(c.to_vec(), vec![11.0, 21.0, 12.0, 22.0, 13.0, 23.0]);
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [2] do not broadcast")]
fn shape_errors_name_the_op_and_shapes() {
    Tensor::zeros(&[2, 3]).add(&Tensor::zeros(&[2]));
}

#[test]
fn reductions_and_var() {
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(x.sum(&[1], false).to_vec(), vec![6.0, 15.0]);
    assert_eq!(x.sum(&[0], true).shape(), &[1, 3]);
    assert_eq!(x.max(&[-1], false).to_vec(), vec![3.0, 6.0]);
    assert_eq!(x.var(&[1], true, false).to_vec(), vec![1.0, 1.0]); // unbiased: 2/2
    let biased = x.var(&[1], false, false).to_vec();
    assert!((biased[0] - 2.0 / 3.0).abs() < 1e-6);
    // logsumexp is stable for large inputs: log(e¹⁰⁰⁰ + e¹⁰⁰⁰) = 1000 + ln 2.
    let big = Tensor::from_vec(vec![1000.0, 1000.0], &[2]);
    assert!((big.logsumexp(&[0], false).item() - (1000.0 + 2f32.ln())).abs() < 1e-3);
}

/// Sums and maxima of a permuted tensor follow its logical order, not the order its data lies in
/// memory: a (4, 2, 3) view of a row-major (2, 3, 4) array, reduced over every set of axes —
/// runs of consecutive axes (the one-pass path, with and without axes after the run) and axes
/// with a gap — against direct loops over the logical indices. The values are small integers,
/// so every sum is exact in f32 and the comparisons are exact.
#[test]
fn reductions_read_permuted_tensors_in_logical_order() {
    let base: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let x = Tensor::from_vec(base, &[2, 3, 4]).permute(&[2, 0, 1]);
    let shape = [4, 2, 3];
    let v = x.to_vec(); // logical (row-major) order of the view
    let axes_sets: [&[usize]; 7] = [&[0], &[1], &[2], &[0, 1], &[1, 2], &[0, 2], &[0, 1, 2]];
    for axes in axes_sets {
        let kept: Vec<usize> = (0..3).filter(|a| !axes.contains(a)).collect();
        let len = kept.iter().map(|&a| shape[a]).product();
        let (mut sum, mut max) = (vec![0.0f32; len], vec![f32::NEG_INFINITY; len]);
        for (flat, &val) in v.iter().enumerate() {
            let ix = [flat / 6, flat / 3 % 2, flat % 3];
            let o = kept.iter().fold(0, |o, &a| o * shape[a] + ix[a]);
            sum[o] += val;
            max[o] = max[o].max(val);
        }
        let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        assert_eq!(x.sum(&ax, false).to_vec(), sum, "sum over {axes:?}");
        assert_eq!(x.max(&ax, false).to_vec(), max, "max over {axes:?}");
    }
}

#[test]
fn movement_ops() {
    let x = Tensor::arange(0.0, 6.0, 1.0).reshape(&[2, 3]);
    assert_eq!(x.t().to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_eq!(
        x.t().reshape(&[6]).to_vec(),
        vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    );
    assert_eq!(x.narrow(1, 1, 2).to_vec(), vec![1.0, 2.0, 4.0, 5.0]);
    assert_eq!(
        x.index_select(1, &[2, 0, 2]).to_vec(),
        vec![2.0, 0.0, 2.0, 5.0, 3.0, 5.0]
    );
    assert_eq!(
        Tensor::stack(&[x.clone(), x.clone()], 0).shape(),
        &[2, 2, 3]
    );
    assert_eq!(Tensor::concat(&[x.clone(), x.clone()], 1).shape(), &[2, 6]);
    assert_eq!(x.pad_axis(0, 1, 0).to_vec()[..3], [0.0, 0.0, 0.0]);
    assert_eq!(
        Tensor::linspace(0.0, 1.0, 5).to_vec(),
        vec![0.0, 0.25, 0.5, 0.75, 1.0]
    );
}

#[test]
fn matmul_matches_naive_product() {
    let (m, k, n) = (5, 7, 3);
    let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
    let c = Tensor::from_vec(a.clone(), &[m, k])
        .matmul(&Tensor::from_vec(b.clone(), &[k, n]))
        .to_vec();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            // Summation order differs from the naive loop; 7 products of magnitude ≤ 1 differ by
            // a few ulps at most.
            assert!((c[i * n + j] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn softplus_and_elu_match_pytorch_values() {
    // torch.nn.functional.softplus(torch.tensor([-30., 0., 30.])) = [9.3576e-14, 0.6931, 30.0]
    let s = Tensor::from_vec(vec![-30.0, 0.0, 30.0], &[3])
        .softplus()
        .to_vec();
    assert!((s[0] - 9.3576e-14).abs() < 1e-18 && s[2] == 30.0);
    // softplus(0) is f32's ln 2 to the bit, as PyTorch gives (0.6931472). It is log1p_unit(1),
    // the end of that series' range (s = 1/3): summed to s¹³, its truncation (s¹⁴/15 ≈ 1.4e-8
    // relative) is well under half an ulp of ln 2 (4.3e-8 relative); one term fewer (s¹²/13 ≈
    // 1.5e-7) puts the result an ulp low.
    assert_eq!(s[1], 2f32.ln(), "softplus(0)");
    // F.elu(torch.tensor([-1., 2.])) = [-0.6321, 2.0]
    let e = Tensor::from_vec(vec![-1.0, 2.0], &[2]).elu(1.0).to_vec();
    assert!((e[0] - (-0.632_120_6)).abs() < 1e-6 && e[1] == 2.0);
}

#[test]
fn parameters_update_in_place_and_graphs_keep_old_values() {
    let p = Tensor::from_vec(vec![1.0, 2.0], &[2]).requires_grad_();
    let y = p.reshape(&[2, 1]); // shares p's storage
    p.update_data(|d| d.mapv_inplace(|v| v * 10.0));
    assert_eq!(p.to_vec(), vec![10.0, 20.0]);
    assert_eq!(
        y.to_vec(),
        vec![1.0, 2.0],
        "copy-on-write: the earlier result keeps its values"
    );
}

/// Elementwise ops give the same values whatever the operands' layouts: row-major, transposed
/// views (column-major), rows repeated by broadcasting, scalars, and large enough to run on
/// several threads. The reference is an index-by-index loop.
#[test]
fn binary_ops_agree_across_layouts() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for &(m, n) in &[(3usize, 5usize), (37, 70), (300, 260)] {
        let a = Tensor::randn(&[m, n], &mut rng);
        let b = Tensor::randn(&[m, n], &mut rng);
        let bt = Tensor::randn(&[n, m], &mut rng).t(); // column-major (m, n)
        let at = Tensor::randn(&[n, m], &mut rng).t();
        let row = Tensor::randn(&[n], &mut rng);
        let col = Tensor::randn(&[m, 1], &mut rng);
        let s = Tensor::scalar(1.5);
        let cases = [
            (&a, &b),
            (&a, &bt),
            (&bt, &a),
            (&at, &bt),
            (&a, &row),
            (&row, &a),
            (&bt, &row),
            (&a, &col),
            (&a, &s),
            (&s, &bt),
        ];
        for (x, y) in cases {
            let shape = [m, n];
            let (xa, ya) = (x.to_array(), y.to_array());
            let xb = xa.broadcast(ndarray::IxDyn(&shape)).unwrap();
            let yb = ya.broadcast(ndarray::IxDyn(&shape)).unwrap();
            type F = fn(f32, f32) -> f32;
            let ops: [(&str, Tensor, F); 4] = [
                ("add", x.add(y), |p, q| p + q),
                ("sub", x.sub(y), |p, q| p - q),
                ("mul", x.mul(y), |p, q| p * q),
                ("div", x.div(y), |p, q| p / q),
            ];
            for (name, got, f) in ops {
                assert_eq!(got.shape(), &shape, "{name}");
                let got = got.to_array();
                for i in 0..m {
                    for j in 0..n {
                        let want = f(xb[[i, j]], yb[[i, j]]);
                        // Same single operation on the same two numbers: bit-identical.
                        assert_eq!(
                            got[[i, j]].to_bits(),
                            want.to_bits(),
                            "{name} at ({i}, {j}) for {:?} and {:?}",
                            x.shape(),
                            y.shape()
                        );
                    }
                }
            }
        }
    }
}

/// glibc accepts the allocator settings `keep_freed_memory` asks for (mallopt returns 0 for an
/// out-of-range value, such as an mmap threshold above 32 MiB), and tensors work as before.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory_is_accepted_by_glibc() {
    assert!(ncsn::tensor::keep_freed_memory());
    let big = Tensor::full(&[8 << 20], 1.5); // 32 MiB: above the threshold, still mmap'd
    assert_eq!(big.mul_scalar(2.0).to_vec()[(8 << 20) - 1], 3.0);
}

/// Sums are pairwise: 2²³ copies of 1.5 add up exactly (a running f32 total, adding 2 for each
/// 1.5 once past 2²³, would return 13,981,012), and long random rows agree with an f64 reference within the
/// bound of a summation tree, d·u·Σ|x| (Higham, *Accuracy and Stability of Numerical Algorithms*,
/// §4.2), with u = 2⁻²⁴ and d the longest chain of additions a term goes through. In
/// `tree_fold` that is 32 in one of the 16 lanes of a 512-element block, 4 combining the lanes, 1
/// adding the block's tail and ⌈log₂(n/512)⌉ halvings above the blocks: d = 48 for n = 10⁶.
#[test]
fn sums_are_pairwise() {
    use rand::SeedableRng;
    let n = 8usize << 20;
    assert_eq!(Tensor::full(&[n], 1.5).sum_all().item(), 1.5 * n as f32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let x = Tensor::randn(&[3, 1_000_003], &mut rng).add_scalar(0.25);
    let got = x.sum(&[1], false).to_vec();
    let xs = x.to_array();
    for (r, g) in got.iter().enumerate() {
        let row = xs.index_axis(ndarray::Axis(0), r);
        let want: f64 = row.iter().map(|&v| v as f64).sum();
        let abs: f64 = row.iter().map(|&v| (v as f64).abs()).sum();
        let depth = 32.0 + 4.0 + 1.0 + (1_000_003f64 / 512.0).log2().ceil();
        let bound = depth * abs * 2f64.powi(-24);
        assert!(
            (*g as f64 - want).abs() <= bound,
            "row {r}: {g} vs {want} (bound {bound})"
        );
    }
}

/// An `rows` × `cols` operand in each layout a product may meet: row-major, a transposed view
/// (column-major), a column stride of 2, a row stride of 2·cols, and one row broadcast to all
/// rows (row stride 0).
fn layouts(rows: usize, cols: usize, rng: &mut rand_chacha::ChaCha8Rng) -> [Tensor; 5] {
    use ndarray::s;
    let plain = Tensor::randn(&[rows, cols], rng);
    let transposed = Tensor::randn(&[cols, rows], rng).t();
    let wide = Tensor::randn(&[rows, 2 * cols], rng).storage();
    let strided = Tensor::from_array(wide.slice_move(s![.., ..;2]).into_dyn()); // column stride 2
    let every_other = Tensor::randn(&[rows, 2 * cols], rng).narrow(1, 0, cols);
    let broadcast = Tensor::randn(&[1, cols], rng).broadcast_to(&[rows, cols]);
    [plain, transposed, strided, every_other, broadcast]
}

/// `matmul` against an f64 reference for every operand layout and for shapes that take each
/// path: thin products (≤ 4 rows or columns, the dot-product kernel), small ones (with AVX-512,
/// the kernel of `small_gemm`: the toy network's 64 × 128 × 128 and its gradients' 128 × 64 ×
/// 128, more than one 64-column panel, widths and depths that are not multiples of 16 or of the
/// 4-row tile, the deepest it takes, k = 256, and one deeper) and large ones (sgemm on two
/// threads). Tolerance k·2⁻²³·Σₚ|a||b| per entry: each of the k products and sums rounds once.
#[test]
fn matmul_matches_reference_for_every_layout_and_path() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let shapes = [
        (64, 128, 2),
        (2, 128, 64),
        (64, 2, 128),
        (1, 33, 1),
        (4, 17, 9),
        (37, 70, 41),
        (64, 128, 128),
        (128, 64, 128),
        (5, 19, 130),
        (9, 256, 20),
        (6, 257, 18),
        (70, 300, 120),
    ];
    for &(m, k, n) in &shapes {
        for a in layouts(m, k, &mut rng) {
            for b in layouts(k, n, &mut rng) {
                let c = a.matmul(&b).to_array();
                assert_eq!(c.shape(), &[m, n]);
                let (aa, ba) = (a.to_array(), b.to_array());
                for i in 0..m {
                    for j in 0..n {
                        let (mut want, mut mag) = (0.0f64, 0.0f64);
                        for p in 0..k {
                            let t = aa[[i, p]] as f64 * ba[[p, j]] as f64;
                            want += t;
                            mag += t.abs();
                        }
                        let tol = k as f64 * 2f64.powi(-23) * mag + 1e-30;
                        assert!(
                            (c[[i, j]] as f64 - want).abs() <= tol,
                            "({m}×{k})·({k}×{n}) at ({i}, {j}): {} vs {want}",
                            c[[i, j]]
                        );
                    }
                }
            }
        }
    }
}

/// With AVX-512, a 2-D product too small to split across threads takes the kernel of
/// `small_gemm`, and a batched one (here a batch of one) takes sgemm. For depths up to sgemm's
/// depth block (256) both compute each entry as one chain of fused multiply-adds over k in
/// order, so they must agree to the bit, in every layout — which is what keeps a model's
/// numbers the same whichever path its products take. (Without AVX-512 both are sgemm.)
#[test]
fn small_products_match_sgemm_bit_for_bit() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for &(m, k, n) in &[
        (64, 128, 128),
        (128, 64, 128),
        (5, 19, 130),
        (9, 256, 20),
        (37, 70, 41),
    ] {
        for a in layouts(m, k, &mut rng) {
            for b in layouts(k, n, &mut rng) {
                let small = a.matmul(&b).to_vec();
                let batched = a.unsqueeze(0).matmul(&b.unsqueeze(0)).to_vec();
                let differ = small
                    .iter()
                    .zip(&batched)
                    .filter(|(x, y)| x.to_bits() != y.to_bits());
                assert_eq!(differ.count(), 0, "({m}×{k})·({k}×{n}): paths disagree");
            }
        }
    }
}

/// Products with at most four columns are sums in a fixed order, whatever the CPU's vector
/// width: with A row-major each entry is exactly `fastmath::dot` of A's row and B's column (16
/// lanes, combined pairwise), and with A column-major each entry is Σₚ B[p, j]·A[i, p] added in
/// order of p from 0. That order is what keeps the toy example's numbers the same on AVX-512,
/// AVX2 and baseline machines; a faster kernel for these products must keep every bit. Row
/// counts odd and even, depths with and without a tail past the last 16, 1 to 4 columns.
#[test]
fn thin_products_sum_in_a_fixed_order() {
    use ncsn::tensor::fastmath;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    for &(m, k) in &[(64, 128), (7, 21), (1, 33), (77, 64), (130, 5)] {
        for n in 1..=4 {
            let a = Tensor::randn(&[m, k], &mut rng);
            let at = Tensor::randn(&[k, m], &mut rng).t(); // column-major
            let b = Tensor::randn(&[k, n], &mut rng);
            let (aa, ata, ba) = (a.to_array(), at.to_array(), b.to_array());
            let col = |j: usize| (0..k).map(|p| ba[[p, j]]).collect::<Vec<f32>>();
            let c = a.matmul(&b).to_array();
            let ct = at.matmul(&b).to_array();
            for i in 0..m {
                let row: Vec<f32> = (0..k).map(|p| aa[[i, p]]).collect();
                for j in 0..n {
                    let want = fastmath::dot(&row, &col(j));
                    assert_eq!(
                        c[[i, j]].to_bits(),
                        want.to_bits(),
                        "row-major ({m}×{k})·({k}×{n}) at ({i}, {j})"
                    );
                    // (A single row is row-major as well, and takes the dot products.)
                    let mut sum = 0.0f32;
                    for p in 0..k {
                        sum += ba[[p, j]] * ata[[i, p]];
                    }
                    if m == 1 {
                        let row: Vec<f32> = (0..k).map(|p| ata[[0, p]]).collect();
                        sum = fastmath::dot(&row, &col(j));
                    }
                    assert_eq!(
                        ct[[i, j]].to_bits(),
                        sum.to_bits(),
                        "column-major ({m}×{k})·({k}×{n}) at ({i}, {j})"
                    );
                }
            }
        }
    }
}

/// `set_data_from` takes the source's values and keeps the target's identity; the two share the
/// storage only until one is written in place, so writing either leaves the other alone.
#[test]
fn set_data_from_copies_on_write() {
    let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).requires_grad_();
    let b = Tensor::from_vec(vec![4.0, 5.0, 6.0], &[3]);
    a.set_data_from(&b);
    assert_eq!(a.to_vec(), [4.0, 5.0, 6.0]);
    assert!(a.requires_grad(), "still the same leaf");
    b.update_data(|v| v.fill(0.0));
    assert_eq!(a.to_vec(), [4.0, 5.0, 6.0]);
    a.update_data(|v| v.fill(1.0));
    assert_eq!(b.to_vec(), [0.0, 0.0, 0.0]);
}

#[test]
#[should_panic(expected = "set_data_from: shape [2] into tensor of shape [3]")]
fn set_data_from_names_the_shapes() {
    Tensor::zeros(&[3]).set_data_from(&Tensor::zeros(&[2]));
}

/// `div_scalar` divides, as PyTorch's `x / c` does: its bits are those of the quotient, which a
/// multiplication by the rounded reciprocal misses for many inputs (322 of these 1,000).
#[test]
fn div_scalar_divides() {
    let xs: Vec<f32> = (1..=1000).map(|i| i as f32 * 0.37).collect();
    let got = Tensor::from_vec(xs.clone(), &[1000])
        .div_scalar(3.0)
        .to_vec();
    for (x, q) in xs.iter().zip(&got) {
        assert_eq!(q.to_bits(), (x / 3.0).to_bits(), "{x} / 3");
    }
    let by_reciprocal = xs.iter().filter(|&&x| x * (1.0 / 3.0) != x / 3.0).count();
    assert_eq!(by_reciprocal, 322, "the inputs tell the two apart");
}

/// NaN and the infinities go through every elementwise op, `maximum`/`minimum`, `max` and
/// `logsumexp` as they do in PyTorch. The expected rows were printed by torch 2.x (CPU, f32) for
/// the input below. Finite results agree within 2 ulp (the accuracy of the `fastmath` kernels);
/// the one exception allowed is a subnormal result, which `fastmath::exp` flushes to zero
/// (documented there).
#[test]
fn nan_and_infinities_follow_pytorch() {
    const N: f32 = f32::NAN;
    const I: f32 = f32::INFINITY;
    let x = Tensor::from_vec(vec![1.0, N, -2.0, I, -I, 0.0, 100.0, -100.0], &[8]);
    let same = |what: &str, got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let ok = (g.is_nan() && w.is_nan())
                || g == w
                || (w.is_finite() && (g - w).abs() <= 2.0 * f32::EPSILON * w.abs())
                || (w.abs() < f32::MIN_POSITIVE && g == 0.0);
            assert!(ok, "{what}: element {i} is {g}, PyTorch gives {w}");
        }
    };
    let e = |v: f64| v as f32;
    type F = fn(&Tensor) -> Tensor;
    #[rustfmt::skip]
    let rows: [(&str, F, [f32; 8]); 15] = [
        ("neg", |x| x.neg(), [-1.0, N, 2.0, -I, I, -0.0, -100.0, 100.0]),
        ("exp", |x| x.exp(), [e(2.7182817459106445), N, e(0.1353352814912796), I, 0.0, 1.0, I, e(3.783505853677006e-44)]),
        ("log", |x| x.log(), [0.0, N, N, I, N, -I, e(4.605170249938965), N]),
        ("sqrt", |x| x.sqrt(), [1.0, N, N, I, N, 0.0, 10.0, N]),
        ("square", |x| x.square(), [1.0, N, 4.0, I, I, 0.0, 10000.0, 10000.0]),
        ("powf 1.5", |x| x.powf(1.5), [1.0, N, N, I, I, 0.0, 1000.0, N]),
        ("abs", |x| x.abs(), [1.0, N, 2.0, I, I, 0.0, 100.0, 100.0]),
        ("sigmoid", |x| x.sigmoid(), [e(0.7310585975646973), N, e(0.11920291930437088), 1.0, 0.0, 0.5, 1.0, 0.0]),
        ("tanh", |x| x.tanh(), [e(0.7615941762924194), N, e(-0.9640275835990906), 1.0, -1.0, 0.0, 1.0, -1.0]),
        ("relu", |x| x.relu(), [1.0, N, 0.0, I, 0.0, 0.0, 100.0, 0.0]),
        ("softplus", |x| x.softplus(), [e(1.31326162815094), N, e(0.12692800164222717), I, 0.0, e(0.6931471824645996), 100.0, e(3.783505853677006e-44)]),
        ("elu", |x| x.elu(1.0), [1.0, N, e(-0.8646647334098816), I, -1.0, 0.0, 100.0, -1.0]),
        ("add_scalar", |x| x.add_scalar(1.0), [2.0, N, -1.0, I, -I, 1.0, 101.0, -99.0]),
        ("mul_scalar", |x| x.mul_scalar(2.0), [2.0, N, -4.0, I, -I, 0.0, 200.0, -200.0]),
        ("div_scalar", |x| x.div_scalar(2.0), [0.5, N, -1.0, I, -I, 0.0, 50.0, -50.0]),
    ];
    for (what, f, want) in rows {
        same(what, &f(&x).to_vec(), &want);
    }
    let z = Tensor::zeros(&[8]);
    same(
        "maximum",
        &x.maximum(&z).to_vec(),
        &[1.0, N, 0.0, I, 0.0, 0.0, 100.0, 0.0],
    );
    same(
        "maximum, NaN second",
        &z.maximum(&x).to_vec(),
        &[1.0, N, 0.0, I, 0.0, 0.0, 100.0, 0.0],
    );
    same(
        "minimum",
        &x.minimum(&z).to_vec(),
        &[0.0, N, -2.0, 0.0, -I, 0.0, 0.0, -100.0],
    );
    same(
        "minimum, NaN second",
        &z.minimum(&x).to_vec(),
        &[0.0, N, -2.0, 0.0, -I, 0.0, 0.0, -100.0],
    );
    same("max", &x.max(&[0], false).to_vec(), &[N]);
    same(
        "max after the NaN",
        &x.narrow(0, 2, 6).max(&[0], false).to_vec(),
        &[I],
    );

    // torch.logsumexp of [−∞, −∞], [∞, 1], [∞, −∞], [∞, ∞], [NaN, 1], [1, 2].
    let rows = Tensor::from_vec(vec![-I, -I, I, 1.0, I, -I, I, I, N, 1.0, 1.0, 2.0], &[6, 2]);
    let lse_12 = 2.0 + (-1f32).exp().ln_1p();
    same(
        "logsumexp",
        &rows.logsumexp(&[1], false).to_vec(),
        &[-I, I, I, I, N, lse_12],
    );
    // Its gradient, as torch's: [NaN, NaN] for all −∞ (0 · ∞) and [NaN, 0] for [∞, 1].
    for (row, want) in [([-I, -I], [N, N]), ([I, 1.0], [N, 0.0])] {
        let v = Tensor::from_vec(row.to_vec(), &[2]).requires_grad_();
        let g = ncsn::grad(&[&v.logsumexp(&[0], false)], &[&v], false);
        same(
            &format!("logsumexp gradient at {row:?}"),
            &g[0].to_vec(),
            &want,
        );
    }
}

/// `arange` and `linspace` give PyTorch's values bit for bit (printed by torch 2.x for the same
/// `f32` arguments, e.g. `torch.arange(-1.3, 1.1, 0.3)` with each argument first rounded to f32): `arange` counts in `f64`, so ⌈0.3f32 / 0.1f32⌉ = 4 elements, not the 3 an
/// `f32` quotient gives; `linspace` fills its second half down from `end`, so both ends are exact.
#[test]
fn arange_and_linspace_match_pytorch() {
    let e = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    assert_eq!(Tensor::arange(0.0, 0.3, 0.1).shape(), &[4]);
    assert_eq!(
        Tensor::arange(0.1, 2.3, 0.7).to_vec(),
        e(&[
            0.10000000149011612,
            0.800000011920929,
            1.5,
            2.200000047683716
        ])
    );
    #[rustfmt::skip]
    let want = e(&[-1.2999999523162842, -0.9999999403953552, -0.6999999284744263, -0.3999999165534973, -0.09999990463256836, 0.2000001072883606, 0.5000001192092896, 0.8000001311302185]);
    assert_eq!(Tensor::arange(-1.3, 1.1, 0.3).to_vec(), want);
    assert_eq!(Tensor::arange(5.0, 1.0, -1.5).to_vec(), [5.0, 3.5, 2.0]);
    assert_eq!(Tensor::arange(2.0, 2.0, 1.0).shape(), &[0]);
    #[rustfmt::skip]
    let cases: [(f32, f32, usize, &[f64]); 4] = [
        (0.1, 1.0, 7, &[0.10000000149011612, 0.25, 0.3999999761581421, 0.550000011920929, 0.7000000476837158, 0.8500000238418579, 1.0]),
        (0.1, 0.3, 3, &[0.10000000149011612, 0.20000000298023224, 0.30000001192092896]),
        (-1.0, 1.0, 6, &[-1.0, -0.6000000238418579, -0.19999998807907104, 0.19999998807907104, 0.6000000238418579, 1.0]),
        (3.0, -2.0, 5, &[3.0, 1.75, 0.5, -0.75, -2.0]),
    ];
    for (start, end, n, want) in cases {
        assert_eq!(
            Tensor::linspace(start, end, n).to_vec(),
            e(want),
            "linspace({start}, {end}, {n})"
        );
    }
}

#[test]
#[should_panic(expected = "arange: step -1 points away from 1")]
fn arange_names_a_step_of_the_wrong_sign() {
    Tensor::arange(0.0, 1.0, -1.0);
}

#[test]
#[should_panic(expected = "arange: need a finite start and end")]
fn arange_refuses_an_infinite_end() {
    Tensor::arange(0.0, f32::INFINITY, 1.0);
}

/// Edge cases where PyTorch has a convention: the gradient of x⁰ is 0 everywhere, also at 0
/// (not 0 · 0⁻¹ = NaN); the sign of ±0 is 0, and so is the gradient of |x| there (not 1, the
/// derivative from the right); the sign of NaN is 0 too, and so is that gradient (PyTorch 2.15:
/// `torch.sign(torch.tensor(float('nan')))` is 0, where NumPy gives NaN); the unbiased variance of one element is NaN and so is that of
/// none (not −0 from dividing by n − 1 = −1); softplus's gradient on an empty tensor is empty.
#[test]
fn edge_conventions_follow_pytorch() {
    let x = Tensor::from_vec(vec![0.0, -2.0, 3.0], &[3]).requires_grad_();
    let g = ncsn::grad(&[&x.powf(0.0).sum_all()], &[&x], false);
    assert_eq!(g[0].to_vec(), [0.0, 0.0, 0.0]);
    let x = Tensor::from_vec(vec![-2.0, -0.0, 0.0, 3.0, f32::NAN], &[5]).requires_grad_();
    assert_eq!(x.sign().to_vec(), [-1.0, 0.0, 0.0, 1.0, 0.0]);
    let g = ncsn::grad(&[&x.abs().sum_all()], &[&x], false);
    assert_eq!(g[0].to_vec(), [-1.0, 0.0, 0.0, 1.0, 0.0]);
    let one = Tensor::from_vec(vec![4.0], &[1]);
    assert!(one.var(&[0], true, false).item().is_nan());
    let none = Tensor::zeros(&[2, 0]);
    let unbiased = none.var(&[1], true, false);
    assert_eq!(unbiased.shape(), &[2]);
    assert!(unbiased.to_vec().iter().all(|v| v.is_nan()));
    assert_eq!(none.var(&[1], false, false).shape(), &[2]);
    let e = Tensor::zeros(&[2, 0]).requires_grad_();
    let g = ncsn::grad(&[&e.softplus().sum_all()], &[&e], false);
    assert_eq!(g[0].shape(), &[2, 0]);
}

#[test]
#[should_panic(expected = "instance_norm: planes of 0×3 have no pixels")]
fn instance_norm_names_empty_planes() {
    Tensor::zeros(&[1, 2, 0, 3]).instance_norm(1e-5);
}
