//! Properties of score matching and Langevin sampling that hold exactly (or in expectation), checked
//! on distributions with a closed-form score.
//!
//! Monte Carlo tolerances. A check of E[w] = c from M independent draws w₁…w_M asserts
//! |w̄ − c| ≤ K·ŝ/√M with ŝ the sample standard deviation and K = 5: under the central limit theorem
//! a correct identity fails with probability about 6e-7 per check, while the wrong variants these
//! checks guard against (a missing factor, a sign, a wrong term) are off by many standard errors (each
//! test states by how much where it matters). All seeds are fixed, so every run draws the same
//! numbers: the tests are deterministic, and the bound is what makes them meaningful, not a value
//! tuned to pass.

mod common;

use ncsn::nn::{Module, ParamStore};
use ncsn::sample::{
    AnnealedConfig, LangevinConfig, VpSchedule, annealed_langevin, annealed_langevin_inpaint,
    langevin_dynamics, langevin_step, vp_from_ve,
};
use ncsn::score::{
    GeometricSigmas, Projection, ScoreMlp, closed_form_score, dsm_loss_with, esm_loss,
    sliced_score_matching, ssm_loss, ssm_vr_loss, tensor_from_array2, tensor_to_array2,
};
use ncsn::toy::{ClosedFormScore, GaussianMixture, Ring, ToyDistribution};
use ncsn::{Tensor, grad, no_grad};
use ndarray::{Array1, Array2};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Standard errors allowed by every Monte Carlo check (see the module docs).
const K: f64 = 5.0;

/// Every distribution of the sliced objectives' directions.
const PROJECTIONS: [Projection; 3] = [
    Projection::Gaussian,
    Projection::Rademacher,
    Projection::Sphere,
];

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Mean and standard error of the mean of `w`.
fn mean_se(w: &[f64]) -> (f64, f64) {
    let n = w.len() as f64;
    let m = w.iter().sum::<f64>() / n;
    let var = w.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

fn assert_mc(what: &str, w: &[f64], expected: f64) {
    let (m, se) = mean_se(w);
    assert!(
        (m - expected).abs() <= K * se,
        "{what}: mean {m} vs {expected}, |diff| = {} > {K} × SE {se}",
        (m - expected).abs()
    );
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    tensor_to_array2(t)
        .outer_iter()
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect()
}

/// A 3-component mixture in ℝ³ with unequal weights and stds, so that no test relies on the
/// symmetry of the paper's mixture.
fn mixture3() -> GaussianMixture {
    let means =
        Array2::from_shape_vec((3, 3), vec![-2.0, 0.0, 1.0, 1.5, 1.0, -1.0, 0.0, -2.0, 0.5])
            .unwrap();
    GaussianMixture::new(&[0.5, 0.3, 0.2], means, &[0.7, 1.0, 1.3])
}

/// Three score networks with different parameters θ (different seeds and widths), their outputs
/// scaled so that their traces and norms are O(1).
fn networks(dim: usize) -> Vec<impl Fn(&Tensor) -> Tensor> {
    [(1u64, 16usize, 1.0f32), (2, 32, 2.0), (3, 8, -1.5)]
        .into_iter()
        .map(|(seed, hidden, scale)| {
            let store = ParamStore::new();
            let net = ScoreMlp::new(&store.root(), dim, hidden, &mut rng(seed));
            move |x: &Tensor| net.forward(x).mul_scalar(scale)
        })
        .collect()
}

/// tr ∇ₓ s(xₙ) for each row, one backward pass per dimension.
fn per_sample_trace(score: &impl Fn(&Tensor) -> Tensor, x: &Tensor) -> Vec<f64> {
    let x = x.detach().requires_grad_();
    let s = score(&x);
    let (n, d) = (s.shape()[0], s.shape()[1]);
    let mut tr = vec![0.0; n];
    for i in 0..d {
        let g = &grad(&[&s.narrow(1, i, 1).sum_all()], &[&x], false)[0];
        for (t, r) in tr.iter_mut().zip(rows(g)) {
            *t += r[i];
        }
    }
    tr
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ------------------------------------------------------------------------------------------------

/// The mixture's closed-form score equals the gradient, by our autograd, of its log-density written
/// in tensor ops (log-sum-exp over components).
///
/// Tolerance: the tensor log-density is computed in f32 from exponents up to ~50, so the softmax
/// weights carry relative errors ~50·6e-8 ≈ 3e-6, multiplied by component scores |μ − x|/σ² ≤ 30
/// on the points used: ≲ 1e-4. We allow 1e-3·(1 + |s|). A wrong term (a missing 1/σ², a sign)
/// is off by O(|s|).
#[test]
fn closed_form_scores_match_autograd_of_log_density() {
    for p in [GaussianMixture::paper(), mixture3()] {
        let d = p.dim();
        let x = Tensor::uniform(&[200, d], -7.0, 7.0, &mut rng(10)).requires_grad_();
        // log p(x) = logsumexpₖ [log πₖ − (d/2) log(2πσₖ²) − ‖x − μₖ‖²/(2σₖ²)]
        let terms: Vec<Tensor> = (0..p.n_components())
            .map(|k| {
                let mu = Tensor::from_vec(
                    p.means().row(k).iter().map(|&v| v as f32).collect(),
                    &[1, d],
                );
                let var = (p.stds()[k] * p.stds()[k]) as f32;
                let c = (p.weights()[k] as f32).ln()
                    - 0.5 * d as f32 * (2.0 * std::f32::consts::PI * var).ln();
                x.sub(&mu)
                    .square()
                    .sum(&[1], true)
                    .mul_scalar(-0.5 / var)
                    .add_scalar(c)
            })
            .collect();
        let log_p = Tensor::concat(&terms, 1).logsumexp(&[1], false);
        let auto = &grad(&[&log_p.sum_all()], &[&x], false)[0];
        let closed = p.score(tensor_to_array2(&x).view());
        for (a, c) in tensor_to_array2(auto).iter().zip(closed.iter()) {
            assert!(
                (a - c).abs() <= 1e-3 * (1.0 + c.abs()),
                "autograd {a} vs closed form {c}"
            );
        }
        // And the log-density itself agrees with the closed form.
        for (a, c) in log_p
            .to_vec()
            .iter()
            .zip(p.log_prob(tensor_to_array2(&x).view()).iter())
        {
            assert!((a - c).abs() <= 1e-3 * (1.0 + c.abs()), "log p {a} vs {c}");
        }
    }
}

/// Hyvärinen's identity: ESM(θ) − ½E‖s_θ − ∇log p‖² = −½E‖∇log p‖², the same constant for every θ.
///
/// Per sample the difference minus the constant is wₙ = tr ∇s(xₙ) + s(xₙ)ᵀ∇log p(xₙ), whose mean
/// must be 0 (integration by parts) for each of three models; `esm_loss` must equal the mean of
/// tr ∇s + ½‖s‖² over the batch (same numbers, f32 round-off only: 1e-4 relative).
///
/// The models are the three networks plus a linear pull toward the origin with unequal rates,
/// s(x) = net(x) − a ⊙ x with a = (0.3, 0.6, 0.9). A random network alone has E[tr ∇s] so close to
/// 0 that a trace with the wrong sign, or no trace at all, moved E[w] by less than 5 standard errors
/// for one of them (0.9 and 0.2 SE); the pull makes E[tr ∇s] ≈ −1.8, and its unequal rates make a
/// trace that reads the wrong diagonal entries wrong too. The test asserts those two wrong variants
/// fail the same check, so it keeps its teeth whatever the seeds.
#[test]
fn hyvarinen_identity_holds_for_every_theta() {
    let p = mixture3();
    let x = tensor_from_array2(p.sample(4000, &mut rng(20)));
    let true_score = rows(&tensor_from_array2(p.score(tensor_to_array2(&x).view())));
    let rates = Tensor::from_vec(vec![0.3, 0.6, 0.9], &[1, 3]);
    for (i, net) in networks(3).iter().enumerate() {
        let s = &|x: &Tensor| net(x).sub(&x.mul(&rates));
        let tr = per_sample_trace(s, &x);
        let sx = rows(&no_grad(|| s(&x)));
        // E[c·tr ∇s + sᵀ∇log p] for c = 1 (the identity), −1 (sign flipped) and 0 (no trace).
        let w = |c: f64| -> Vec<f64> {
            (0..tr.len())
                .map(|n| c * tr[n] + dot(&sx[n], &true_score[n]))
                .collect()
        };
        assert_mc(&format!("model {i}: E[tr ∇s + sᵀ∇log p]"), &w(1.0), 0.0);
        for (what, c) in [("a flipped trace", -1.0), ("no trace", 0.0)] {
            let (m, se) = mean_se(&w(c));
            assert!(
                m.abs() > 2.0 * K * se,
                "model {i}: with {what} the mean {m} is within {} SE of 0: the check has no teeth",
                m.abs() / se
            );
        }

        let esm = esm_loss(s, &x).item() as f64;
        let direct = (0..tr.len())
            .map(|n| tr[n] + 0.5 * dot(&sx[n], &sx[n]))
            .sum::<f64>()
            / tr.len() as f64;
        assert!(
            (esm - direct).abs() <= 1e-4 * (1.0 + direct.abs()),
            "esm {esm} vs {direct}"
        );
    }
}

/// E_v[vᵀ ∇ₓs v] = tr ∇ₓs at fixed points, for Gaussian, Rademacher and sphere directions.
///
/// Each of 6 points is repeated 4000 times with independent directions; the per-draw values
/// vᵀ∇ₓs v give the mean and its SE. The trace is exact (D backward passes). `sliced_score_matching`
/// must report as loss2 the mean of those same values.
#[test]
fn sliced_trace_is_unbiased() {
    let (points, draws, d) = (6usize, 4000usize, 3usize);
    let x0 = Tensor::uniform(&[points, d], -3.0, 3.0, &mut rng(30));
    let nets = networks(d);
    let s = &nets[1];
    let exact = per_sample_trace(s, &x0);
    // Rows: point 0 × draws, point 1 × draws, …
    let idx: Vec<usize> = (0..points)
        .flat_map(|i| std::iter::repeat_n(i, draws))
        .collect();
    let x = x0.index_select(0, &idx);
    for (k, proj) in PROJECTIONS.into_iter().enumerate() {
        let v = proj.sample(x.shape(), &mut rng(31 + k as u64));
        let xg = x.detach().requires_grad_();
        let jvp = &grad(&[&s(&xg).mul(&v).sum_all()], &[&xg], false)[0];
        let q: Vec<f64> = rows(&jvp.mul(&v).sum(&[1], true))
            .into_iter()
            .map(|r| r[0])
            .collect();
        for i in 0..points {
            assert_mc(
                &format!("{proj:?}, point {i}: E[vᵀ∇s v] = tr ∇s"),
                &q[i * draws..(i + 1) * draws],
                exact[i],
            );
        }
        let loss2 = sliced_score_matching(s, &x, &v, false).loss2.item() as f64;
        let mean_q = q.iter().sum::<f64>() / q.len() as f64;
        assert!((loss2 - mean_q).abs() <= 1e-4 * (1.0 + mean_q.abs()));
    }
}

/// Directions for samples that are arrays (an image batch `(N, C, H, W)`) are drawn per sample,
/// not per pixel: E[v vᵀ] = I over all D = C·H·W coordinates, and a sphere direction has length √D.
///
/// 4000 directions of shape (3, 4, 4): for every coordinate j, the mean of v_j² must be 1 and the
/// mean of v_j v_{j+1} must be 0 within the Monte Carlo bound. Normalising each pixel's C-vector
/// instead, as a per-axis-1 norm would, makes E[v_j²] = H·W = 16.
#[test]
fn projections_of_array_samples_are_isotropic_per_sample() {
    let (n, shape) = (4000usize, [3usize, 4, 4]);
    let d: usize = shape.iter().product();
    for (k, proj) in PROJECTIONS.into_iter().enumerate() {
        let v = proj.sample(&[n, shape[0], shape[1], shape[2]], &mut rng(90 + k as u64));
        assert_eq!(v.shape(), &[n, shape[0], shape[1], shape[2]]);
        let flat = rows(&v.reshape(&[n, d]));
        for j in 0..d {
            let sq: Vec<f64> = flat.iter().map(|r| r[j] * r[j]).collect();
            assert_mc(&format!("{proj:?}: E[v_{j}²] = 1"), &sq, 1.0);
            let cross: Vec<f64> = flat.iter().map(|r| r[j] * r[(j + 1) % d]).collect();
            assert_mc(&format!("{proj:?}: E[v_{j} v_next] = 0"), &cross, 0.0);
        }
        if proj == Projection::Sphere {
            for (i, r) in flat.iter().enumerate() {
                let len2: f64 = r.iter().map(|x| x * x).sum();
                // f32 rounding of 48 squares and a square root: far below 1e-4 relative.
                assert!(
                    (len2 - d as f64).abs() <= 1e-4 * d as f64,
                    "row {i}: ‖v‖² = {len2}"
                );
            }
        }
    }
}

/// A linear score s(x) = xA + b with fixed rows x and directions v (N = 4, D = 3), on which the
/// sliced and exact losses and their θ-gradients have closed forms.
struct LinearExample {
    n: usize,
    d: usize,
    a: [[f64; 3]; 3],
    b: [f64; 3],
    x: Vec<f32>,
    v: Vec<f32>,
}

impl LinearExample {
    fn new() -> Self {
        let (n, d) = (4, 3);
        LinearExample {
            n,
            d,
            a: [[0.5, -1.0, 0.25], [2.0, 0.75, -0.5], [-1.5, 0.2, 1.25]],
            b: [0.1, -0.3, 0.7],
            x: (0..n * d)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0)
                .collect(),
            v: (0..n * d)
                .map(|i| ((i * 5 % 13) as f32 - 6.0) / 3.0)
                .collect(),
        }
    }

    /// A and b as f32 tensors (leaves with gradients if `requires_grad`), then x and v.
    fn tensors(&self, requires_grad: bool) -> [Tensor; 4] {
        let (n, d) = (self.n, self.d);
        let a = Tensor::from_vec(
            self.a.iter().flatten().map(|&e| e as f32).collect(),
            &[d, d],
        );
        let b = Tensor::from_vec(self.b.iter().map(|&e| e as f32).collect(), &[1, d]);
        let (a, b) = if requires_grad {
            (a.requires_grad_(), b.requires_grad_())
        } else {
            (a, b)
        };
        let x = Tensor::from_vec(self.x.clone(), &[n, d]);
        let v = Tensor::from_vec(self.v.clone(), &[n, d]);
        [a, b, x, v]
    }

    /// Row by row, in f64: (xₙ, vₙ, sₙ = xₙA + b).
    fn rows(&self) -> Vec<[Vec<f64>; 3]> {
        let d = self.d;
        (0..self.n)
            .map(|r| {
                let row = |t: &[f32]| -> Vec<f64> {
                    t[r * d..(r + 1) * d].iter().map(|&e| e as f64).collect()
                };
                let (xr, vr) = (row(&self.x), row(&self.v));
                let s = (0..d)
                    .map(|j| (0..d).map(|i| xr[i] * self.a[i][j]).sum::<f64>() + self.b[j])
                    .collect();
                [xr, vr, s]
            })
            .collect()
    }
}

/// For given directions the sliced losses are formulas, with no expectation left: for a linear
/// score s(x) = xA + b, whose Jacobian is Aᵀ in every row, the sliced trace of row n is vₙᵀAvₙ,
/// SSM's first term ½(vₙᵀsₙ)² and SSM-VR's ½‖sₙ‖². Computed here in f64 from the same numbers;
/// the tolerance is f32 rounding of sums of a few terms of size ≤ 10 (10⁻⁵ relative). The two
/// first terms differ by far more than that on these numbers, so SSM and SSM-VR cannot be
/// confused (both are unbiased for the same objective, which the expectation tests cannot tell
/// apart).
#[test]
fn sliced_losses_for_given_directions_are_the_formulas() {
    let example = LinearExample::new();
    let (n, d, a) = (example.n, example.d, example.a);
    let [a_t, b_t, x_t, v_t] = example.tensors(false);
    let score = |x: &Tensor| x.matmul(&a_t).add(&b_t);

    let (mut trace, mut proj, mut norm) = (0.0, 0.0, 0.0);
    for [_, vr, s] in example.rows() {
        trace += (0..d)
            .map(|i| (0..d).map(|j| vr[i] * a[i][j] * vr[j]).sum::<f64>())
            .sum::<f64>();
        proj += 0.5 * dot(&vr, &s).powi(2);
        norm += 0.5 * dot(&s, &s);
    }
    let (trace, proj, norm) = (trace / n as f64, proj / n as f64, norm / n as f64);
    assert!(
        (proj - norm).abs() > 1.0,
        "the example must tell the two forms apart"
    );

    let close = |what: &str, got: &Tensor, want: f64| {
        let g = got.item() as f64;
        assert!(
            (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{what}: {g} vs {want}"
        );
    };
    for (vr, first) in [(false, proj), (true, norm)] {
        let l = sliced_score_matching(score, &x_t, &v_t, vr);
        close("loss2 (the sliced trace)", &l.loss2, trace);
        close("loss1", &l.loss1, first);
        close("loss", &l.loss, trace + first);
    }
}

/// The losses are trained through their θ-gradients, and the trace terms reach θ only through
/// the graph of the inner ∇ₓ (`create_graph`). For a linear score s(x) = xA + b those gradients
/// have closed forms (rows xₙ, vₙ; sₙ = xₙA + b; N rows):
/// - ESM, tr(A) + ½‖s‖²: ∂/∂A = I + (1/N)·Σ xₙᵀsₙ, ∂/∂b = (1/N)·Σ sₙ;
/// - SSM, vAvᵀ + ½(v·s)²: ∂/∂A = (1/N)·Σ (vₙᵀvₙ + (vₙ·sₙ)·xₙᵀvₙ), ∂/∂b = (1/N)·Σ (vₙ·sₙ)·vₙ;
/// - SSM-VR, vAvᵀ + ½‖s‖²: ∂/∂A = (1/N)·Σ (vₙᵀvₙ + xₙᵀsₙ), ∂/∂b as ESM's.
///
/// Autograd must give them in f32 to 1e-5·(1 + |want|) (a few dozen rounded terms of size ≲ 10).
/// An inner gradient taken without its graph drops the I (ESM) or the Σ vₙᵀvₙ (SSM) term, entries
/// of size ~1 — a loss that still falls during training, but towards the wrong score.
#[test]
fn theta_gradients_of_the_losses_include_the_trace_terms() {
    let example = LinearExample::new();
    let (n, d) = (example.n, example.d);
    let [a_t, b_t, x_t, v_t] = example.tensors(true);
    let score = |x: &Tensor| x.matmul(&a_t).add(&b_t);

    // The closed forms in f64: (∂/∂A, ∂/∂b) for ESM, SSM and SSM-VR.
    let mut want = [([[0.0f64; 3]; 3], [0.0f64; 3]); 3];
    for [xr, vr, s] in example.rows() {
        let vs = dot(&vr, &s);
        for i in 0..d {
            for j in 0..d {
                let eye = if i == j { 1.0 } else { 0.0 };
                want[0].0[i][j] += (eye + xr[i] * s[j]) / n as f64;
                want[1].0[i][j] += (vr[i] * vr[j] + vs * xr[i] * vr[j]) / n as f64;
                want[2].0[i][j] += (vr[i] * vr[j] + xr[i] * s[j]) / n as f64;
            }
        }
        for j in 0..d {
            want[0].1[j] += s[j] / n as f64;
            want[1].1[j] += vs * vr[j] / n as f64;
            want[2].1[j] += s[j] / n as f64;
        }
    }

    let losses = [
        ("ESM", esm_loss(score, &x_t)),
        ("SSM", sliced_score_matching(score, &x_t, &v_t, false).loss),
        (
            "SSM-VR",
            sliced_score_matching(score, &x_t, &v_t, true).loss,
        ),
    ];
    for ((what, loss), (da, db)) in losses.iter().zip(&want) {
        let g = grad(&[loss], &[&a_t, &b_t], false);
        let wanted: Vec<f64> = da.iter().flatten().chain(db).copied().collect();
        let got: Vec<f32> = g[0].to_vec().into_iter().chain(g[1].to_vec()).collect();
        assert_eq!(got.len(), wanted.len(), "{what}: entries of (∂/∂A, ∂/∂b)");
        for (k, (&g, &w)) in got.iter().zip(&wanted).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}: entry {k} of (∂/∂A, ∂/∂b): {g} vs {w}"
            );
        }
    }
}

/// `ssm_loss` and `ssm_vr_loss` with n particles are `sliced_score_matching` on the batch repeated
/// n times (rows 0..N, then 0..N again), with directions drawn from the projection asked for
/// (SSM-VR: Gaussian): the same seed gives the same directions, so the losses agree to the bit.
/// And each projection draws what its name says: Rademacher entries are ±1 (both occur), and a
/// sphere direction's squared length is D (to f32 rounding, 10⁻⁵·D).
#[test]
fn ssm_losses_repeat_the_batch_and_draw_from_their_projection() {
    let (n, d, particles) = (5, 4, 3);
    let x = Tensor::randn(&[n, d], &mut rng(70));
    let w = Tensor::randn(&[d, d], &mut rng(71));
    let score = |x: &Tensor| x.matmul(&w).tanh();
    let repeated = Tensor::concat(&vec![x.clone(); particles], 0);
    for (k, projection) in PROJECTIONS.into_iter().enumerate() {
        let got = ssm_loss(score, &x, projection, particles, &mut rng(80 + k as u64));
        let v = projection.sample(&[n * particles, d], &mut rng(80 + k as u64));
        let want = sliced_score_matching(score, &repeated, &v, false);
        assert_eq!(got.loss.item(), want.loss.item(), "{projection:?}: loss");
        assert_eq!(got.loss1.item(), want.loss1.item(), "{projection:?}: loss1");
    }
    let got = ssm_vr_loss(score, &x, particles, &mut rng(90));
    let v = Tensor::randn(&[n * particles, d], &mut rng(90));
    let want = sliced_score_matching(score, &repeated, &v, true);
    assert_eq!(got.loss.item(), want.loss.item(), "SSM-VR: loss");

    let signs = Projection::Rademacher
        .sample(&[50, 7], &mut rng(91))
        .to_vec();
    assert!(
        signs.iter().all(|&e| e == 1.0 || e == -1.0),
        "Rademacher entries are ±1"
    );
    assert!(signs.contains(&1.0) && signs.contains(&-1.0));
    let sphere = rows(&Projection::Sphere.sample(&[50, 7], &mut rng(92)));
    for r in &sphere {
        let len2 = dot(r, r);
        assert!(
            (len2 - 7.0).abs() <= 1e-5 * 7.0,
            "sphere row length² {len2} vs D = 7"
        );
    }
}

/// SSM and SSM-VR equal ESM in expectation over the directions, at a fixed batch.
///
/// 300 independent evaluations of each sliced loss (each on the same 64-point batch with fresh
/// directions) give a mean and SE; ESM on that batch is the exact target.
#[test]
fn sliced_losses_equal_esm_in_expectation() {
    let p = GaussianMixture::paper();
    let x = tensor_from_array2(p.sample(64, &mut rng(40)));
    for (i, s) in networks(2).iter().enumerate() {
        let esm = esm_loss(s, &x).item() as f64;
        let mut r = rng(41 + i as u64);
        let vr: Vec<f64> = (0..300)
            .map(|_| ssm_vr_loss(s, &x, 1, &mut r).loss.item() as f64)
            .collect();
        assert_mc(&format!("network {i}: E[SSM-VR] = ESM"), &vr, esm);
        for proj in PROJECTIONS {
            let ssm: Vec<f64> = (0..300)
                .map(|_| {
                    let v = proj.sample(x.shape(), &mut r);
                    sliced_score_matching(s, &x, &v, false).loss.item() as f64
                })
                .collect();
            assert_mc(&format!("network {i}, {proj:?}: E[SSM] = ESM"), &ssm, esm);
        }
    }
}

/// Vincent (2011): DSM(θ) = ESM on q_σ(θ) + D/(2σ²), a θ-independent constant.
///
/// With x ~ p, z ~ N(0, I), x̃ = x + σz, per sample the difference is
/// ½‖s(x̃) + z/σ‖² − tr ∇s(x̃) − ½‖s(x̃)‖² = s(x̃)ᵀz/σ + ½‖z‖²/σ² − tr ∇s(x̃), whose mean must be
/// D/(2σ²) = 6 for each model (by Stein's lemma E[s(x̃)ᵀz/σ] = E[tr ∇s(x̃)]); `dsm_loss_with` must
/// equal the mean of its per-sample term (f32 round-off only).
///
/// The models are the Hyvärinen test's: the three networks pulled toward the origin,
/// s(x) = net(x) − a ⊙ x with a = (0.3, 0.6, 0.9). For the networks alone E[tr ∇s] is within 0.06
/// of 0, and with a trace of the wrong sign, or none, the mean stayed within 1.7 standard errors
/// of 6 (about 0.09, most of it ½‖z‖²/σ²'s): the check could not see them. The pull makes
/// E[tr ∇s] ≈ −1.8, so those variants move the mean by 2·E[tr ∇s] ≈ −3.6 and E[tr ∇s] ≈ −1.8
/// (measured: 41 to 44 and 20 to 22 standard errors). The test asserts that both fail the check
/// with room to spare, by more than 2K standard errors, so it keeps its teeth whatever the seeds.
#[test]
fn dsm_equals_esm_on_perturbed_data_up_to_a_constant() {
    let p = mixture3();
    let d = p.dim();
    let sigma = 0.5f32;
    let mut r = rng(50);
    let x = tensor_from_array2(p.sample(4000, &mut r));
    let z = Tensor::randn(x.shape(), &mut r);
    let x_tilde = x.add(&z.mul_scalar(sigma));
    let zr = rows(&z);
    let rates = Tensor::from_vec(vec![0.3, 0.6, 0.9], &[1, 3]);
    let constant = d as f64 / (2.0 * (sigma as f64).powi(2));
    for (i, net) in networks(d).iter().enumerate() {
        let s = &|x: &Tensor| net(x).sub(&x.mul(&rates));
        let tr = per_sample_trace(s, &x_tilde);
        let sx = rows(&no_grad(|| s(&x_tilde)));
        let per_dsm: Vec<f64> = (0..tr.len())
            .map(|n| {
                let e: Vec<f64> = sx[n]
                    .iter()
                    .zip(&zr[n])
                    .map(|(a, b)| a + b / sigma as f64)
                    .collect();
                0.5 * dot(&e, &e)
            })
            .collect();
        // DSM − ESM(q_σ) per sample with the trace counted c times: c = 1 is the identity,
        // −1 a flipped sign and 0 a missing trace.
        let diff = |c: f64| -> Vec<f64> {
            (0..tr.len())
                .map(|n| per_dsm[n] - c * tr[n] - 0.5 * dot(&sx[n], &sx[n]))
                .collect()
        };
        assert_mc(&format!("model {i}: DSM − ESM(q_σ)"), &diff(1.0), constant);
        for (what, c) in [("a flipped trace", -1.0), ("no trace", 0.0)] {
            let (m, se) = mean_se(&diff(c));
            assert!(
                (m - constant).abs() > 2.0 * K * se,
                "model {i}: with {what} the mean {m} is within {} SE of {constant}: the check \
                 has no teeth",
                (m - constant).abs() / se
            );
        }

        let dsm = dsm_loss_with(s, &x, &z, sigma).item() as f64;
        let direct = per_dsm.iter().sum::<f64>() / per_dsm.len() as f64;
        assert!(
            (dsm - direct).abs() <= 1e-4 * (1.0 + direct),
            "dsm {dsm} vs {direct}"
        );
    }
}

/// Tweedie's formula: T(x̃) = x̃ + σ²∇log q_σ(x̃) is E[x | x̃].
///
/// Checked as the defining orthogonality of a conditional expectation, E[(x − T(x̃)) g(x̃)] = 0, for
/// test functions g ∈ {1, x̃₁, x̃₂, tanh x̃₁, x̃₁x̃₂} on 20,000 joint draws (x, x̃), with the closed-form
/// score of q_σ; and pointwise against the mixture's closed-form posterior mean (f32 round-off:
/// 1e-3 absolute on values of size ≤ 10). Using the score of p instead of q_σ (a plausible bug)
/// fails the check with g = x̃₁ by about 53 and 79 SEs at σ = 2 and 5 (measured in a NumPy replica);
/// at σ = 0.5 the two scores are too close to separate with this sample (3.4 SEs).
#[test]
fn tweedie_formula_gives_the_posterior_mean() {
    let p = GaussianMixture::paper();
    for sigma in [0.5f64, 2.0, 5.0] {
        let mut r = rng(60);
        let x = p.sample(20_000, &mut r);
        let x_tilde = ncsn::toy::perturb(x.view(), sigma, &mut r);
        let q = p.perturbed(sigma);
        let t = &x_tilde + &(q.score(x_tilde.view()) * (sigma * sigma) as f32);
        let post = p.posterior_mean(x_tilde.view(), sigma);
        assert_eq!(
            t.shape(),
            post.shape(),
            "Tweedie's shape vs the posterior mean's"
        );
        for (a, b) in t.iter().zip(post.iter()) {
            assert!((a - b).abs() <= 1e-3, "Tweedie {a} vs posterior mean {b}");
        }
        let tests: [&dyn Fn(f64, f64) -> f64; 5] = [
            &|_, _| 1.0,
            &|a, _| a,
            &|_, b| b,
            &|a, _| a.tanh(),
            &|a, b| a * b / 10.0,
        ];
        for (gi, g) in tests.iter().enumerate() {
            for c in 0..2 {
                let w: Vec<f64> = (0..x.nrows())
                    .map(|n| {
                        let (a, b) = (x_tilde[[n, 0]] as f64, x_tilde[[n, 1]] as f64);
                        (x[[n, c]] - t[[n, c]]) as f64 * g(a, b)
                    })
                    .collect();
                assert_mc(&format!("σ = {sigma}, g{gi}, coordinate {c}"), &w, 0.0);
            }
        }
    }
}

/// The exact stationary covariance of Langevin dynamics with step ε on N(μ, Σ): per eigenvalue λ of
/// Σ the chain is AR(1) with coefficient a = 1 − ε/(2λ) and noise variance ε, so its variance is
/// ε/(1 − a²) = λ/(1 − ε/(4λ)). (The discretisation bias; it tends to Σ as ε → 0.)
fn ula_covariance(sigma: [[f64; 2]; 2], eps: f64) -> [[f64; 2]; 2] {
    let (a, b, d) = (sigma[0][0], sigma[0][1], sigma[1][1]);
    let tr = a + d;
    let disc = ((a - d) * (a - d) / 4.0 + b * b).sqrt();
    let mut out = [[0.0; 2]; 2];
    for lam in [tr / 2.0 + disc, tr / 2.0 - disc] {
        // unit eigenvector of [[a, b], [b, d]] for λ
        let (u0, u1) = if b.abs() > 1e-12 {
            (b, lam - a)
        } else if (lam - a).abs() < 1e-12 {
            (1.0, 0.0)
        } else {
            (0.0, 1.0)
        };
        let n = (u0 * u0 + u1 * u1).sqrt();
        let (u0, u1) = (u0 / n, u1 / n);
        let s = lam / (1.0 - eps / (4.0 * lam));
        out[0][0] += s * u0 * u0;
        out[0][1] += s * u0 * u1;
        out[1][0] += s * u1 * u0;
        out[1][1] += s * u1 * u1;
    }
    out
}

/// Langevin dynamics with the exact score of a correlated Gaussian reaches its mean and (the
/// discretised chain's) covariance.
///
/// 4000 independent chains from 0, ε = 0.05, T = 3000: the slowest mode contracts by
/// (1 − ε/(2λ_max))^T < 1e-14, so the chains are stationary. Mean: SE √(Sᵢᵢ/N). Covariance entry
/// (i, j): the sample covariance of N Gaussian draws has variance (SᵢᵢSⱼⱼ + Sᵢⱼ²)/N. The exact S
/// differs from Σ by about ε/4 = 0.0125 on the diagonal (about one SE of the Σ₂₂ estimate), so the
/// comparison is made with S, not Σ, to keep the check exact rather than lucky.
#[test]
fn langevin_reaches_gaussian_mean_and_covariance() {
    let mu = [1.0f64, -2.0];
    let cov = [[2.0f64, 0.6], [0.6, 0.5]];
    let det = cov[0][0] * cov[1][1] - cov[0][1] * cov[1][0];
    let prec = [
        [cov[1][1] / det, -cov[0][1] / det],
        [-cov[1][0] / det, cov[0][0] / det],
    ];
    let prec_t = Tensor::from_vec(prec.iter().flatten().map(|&v| v as f32).collect(), &[2, 2]);
    let mu_t = Tensor::from_vec(mu.iter().map(|&v| v as f32).collect(), &[1, 2]);
    let score = |x: &Tensor| x.sub(&mu_t).matmul(&prec_t).neg(); // −Σ⁻¹(x − μ), Σ⁻¹ symmetric
    let eps = 0.05;
    let n = 4000;
    let config = LangevinConfig {
        step_size: eps as f32,
        n_steps: 3000,
        record_every: 0,
    };
    let out = langevin_dynamics(score, &Tensor::zeros(&[n, 2]), &config, &mut rng(70));
    assert!(
        out.x.is_leaf() && !out.x.requires_grad(),
        "samplers must not build graphs"
    );
    let x = rows(&out.x);
    let s = ula_covariance(cov, eps);
    for i in 0..2 {
        let xi: Vec<f64> = x.iter().map(|r| r[i]).collect();
        assert_mc(&format!("mean {i}"), &xi, mu[i]);
    }
    let m: Vec<f64> = (0..2)
        .map(|i| x.iter().map(|r| r[i]).sum::<f64>() / n as f64)
        .collect();
    for i in 0..2 {
        for j in 0..2 {
            let c = x.iter().map(|r| (r[i] - m[i]) * (r[j] - m[j])).sum::<f64>() / (n - 1) as f64;
            let se = ((s[i][i] * s[j][j] + s[i][j] * s[i][j]) / n as f64).sqrt();
            assert!(
                (c - s[i][j]).abs() <= K * se,
                "cov[{i}][{j}] = {c} vs {} (SE {se})",
                s[i][j]
            );
        }
    }
}

/// With a single noise level, annealed Langevin dynamics is plain Langevin dynamics with ε
/// (α₁ = ε·σ₁²/σ₁²): the same seed gives the same samples. And with L levels the step at level i
/// is ε·(σᵢ/σ_L)².
#[test]
fn annealed_langevin_with_one_level_is_langevin() {
    let p = GaussianMixture::paper();
    let score = closed_form_score(&p);
    let x0 = Tensor::uniform(&[50, 2], -8.0, 8.0, &mut rng(80));
    let one = GeometricSigmas::new(1.0, 1.0, 1);
    let a = annealed_langevin(
        |x, _| score(x),
        &x0,
        &one,
        &AnnealedConfig {
            step_size: 0.1,
            n_steps_each: 200,
            record_every: 50,
        },
        &mut rng(81),
    );
    let b = langevin_dynamics(
        &score,
        &x0,
        &LangevinConfig {
            step_size: 0.1,
            n_steps: 200,
            record_every: 50,
        },
        &mut rng(81),
    );
    assert_eq!(a.x.to_vec(), b.x.to_vec());
    assert_eq!(a.trajectory.len(), 5); // steps 0, 50, 100, 150 and the end
    assert_eq!(b.trajectory.len(), 5);

    let sigmas = GeometricSigmas::new(20.0, 1.0, 10);
    let cfg = AnnealedConfig::paper_toy();
    assert!((cfg.step_at(&sigmas, 0) - 40.0).abs() < 1e-3);
    assert!((cfg.step_at(&sigmas, 9) - 0.1).abs() < 1e-7);
    let r = sigmas.ratio();
    for w in sigmas.sigmas().windows(2) {
        assert!((w[1] / w[0] - r).abs() < 1e-5, "geometric: constant ratio");
    }
    assert_eq!((sigmas.first(), sigmas.last()), (20.0, 1.0));
}

/// The samplers' presets are the paper's settings, number for number: Langevin dynamics on the
/// toy mixture with ε = 0.1 and T = 1000 (§3.2, Fig. 3; the reference toy runner's
/// `langevin_dynamics(..., lr=0.1, step=1000)`), annealed Langevin dynamics on it with ε = 0.1 and
/// T = 100 (Fig. 3), and on images with ε = 2·10⁻⁵ and T = 100 (§5). None records a trajectory.
/// The samplers' tests take ε and T as arguments, so only this sees a preset drift.
#[test]
fn the_sampler_presets_are_the_papers() {
    let l = LangevinConfig::paper_toy();
    assert_eq!((l.step_size, l.n_steps, l.record_every), (0.1, 1000, 0));
    let a = AnnealedConfig::paper_toy();
    assert_eq!((a.step_size, a.n_steps_each, a.record_every), (0.1, 100, 0));
    let a = AnnealedConfig::paper_images();
    assert_eq!(
        (a.step_size, a.n_steps_each, a.record_every),
        (2e-5, 100, 0)
    );
}

/// With several levels, `annealed_langevin` is Algorithm 1 step for step: level i asks for the
/// score at σᵢ and steps αᵢ = ε·(σᵢ/σ_L)², starting where level i − 1 stopped, and the trajectory
/// holds the batch every `record_every` steps counted across levels. A loop written from the
/// algorithm with `langevin_step` and the same seed gives the same bits. The scores are those of
/// the mixture perturbed at each σᵢ, different at every level, so a sampler that used one level's
/// score throughout, took the levels in another order or kept ε at every level would differ.
#[test]
fn annealed_langevin_is_algorithm_1_level_by_level() {
    let p = GaussianMixture::paper();
    let sigmas = GeometricSigmas::new(20.0, 1.0, 4);
    let perturbed: Vec<_> = sigmas
        .sigmas()
        .iter()
        .map(|&s| p.perturbed(s as f64))
        .collect();
    let scores: Vec<_> = perturbed.iter().map(closed_form_score).collect();
    let x0 = Tensor::uniform(&[50, 2], -8.0, 8.0, &mut rng(82));
    let (eps, t, every) = (0.1f32, 7, 4);
    let cfg = AnnealedConfig {
        step_size: eps,
        n_steps_each: t,
        record_every: every,
    };
    let mut asked = Vec::new();
    let out = annealed_langevin(
        |x, i| {
            asked.push(i);
            scores[i](x)
        },
        &x0,
        &sigmas,
        &cfg,
        &mut rng(83),
    );

    let mut r = rng(83);
    let mut x = x0.clone();
    let mut snapshots = Vec::new();
    let mut step = 0;
    for (i, &sigma) in sigmas.sigmas().iter().enumerate() {
        let ratio = sigma / sigmas.last();
        let alpha = eps * ratio * ratio; // αᵢ = ε·σᵢ²/σ_L²
        for _ in 0..t {
            if step % every == 0 {
                snapshots.push(x.to_vec());
            }
            x = langevin_step(&x, &scores[i](&x), alpha, &mut r);
            step += 1;
        }
    }
    if step % every == 0 {
        snapshots.push(x.to_vec()); // the end, as it is a multiple of 4
    }

    let levels: Vec<usize> = (0..sigmas.len()).flat_map(|i| [i; 7]).collect();
    assert_eq!(asked, levels, "the levels asked for, step by step");
    assert_eq!(out.x.to_vec(), x.to_vec());
    let recorded: Vec<Vec<f32>> = out.trajectory.iter().map(|x| x.to_vec()).collect();
    assert_eq!(recorded.len(), 8); // steps 0, 4, …, 24 and the end, 28
    assert_eq!(recorded, snapshots);
}

/// The noise levels are the reference's to the bit: NumPy's
/// `np.exp(np.linspace(np.log(b), np.log(e), n)).astype(np.float32)` gave these words for the
/// paper's schedule (1 → 0.01, 10 levels) and the toy's (20 → 1). For NCSN v2's CIFAR-10 schedule
/// (50 → 0.01, 232 levels) the sum of the 232 words stands for the list. Computed from f32 ends
/// (0.01 as 0.0099999998) one of the paper's ten levels and 27 of the 232 were one ulp off.
#[test]
fn noise_levels_are_the_references_bits() {
    let words = |s: &GeometricSigmas| s.sigmas().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    #[rustfmt::skip]
    let paper = [
        0x3f800000, 0x3f1977cd, 0x3eb800d6, 0x3e5c9d36, 0x3e044133,
        0x3d9e91b7, 0x3d3e1e96, 0x3ce3f280, 0x3c88a69b, 0x3c23d70a,
    ];
    #[rustfmt::skip]
    let toy = [
        0x41a00000, 0x41656616, 0x4124730a, 0x40ebc72c, 0x40a905c0,
        0x407255ac, 0x402db905, 0x3ff912d9, 0x3fb28dbf, 0x3f800000,
    ];
    assert_eq!(words(&GeometricSigmas::paper()), paper);
    assert_eq!(words(&GeometricSigmas::new(20.0, 1.0, 10)), toy);
    let v2 = words(&GeometricSigmas::new(50.0, 0.01, 232));
    assert_eq!(v2.iter().map(|&w| w as u64).sum::<u64>(), 246_076_003_109);
    assert_eq!(
        words(&GeometricSigmas::new(3.0, 0.5, 1)),
        [3.0f32.to_bits()]
    );
}

/// The reference image sampler's update, x + α′s + √(2α′)z with α′ = step_lr·σᵢ²/σ_L², is
/// Algorithm 1's with ε = 2·step_lr: [`AnnealedConfig::from_reference_step_lr`] and
/// [`langevin_step`] reproduce it with the same z, at every level. The tolerance is f32 rounding
/// (10⁻⁵ relative); taking ε = step_lr instead would change the drift by half and the noise by
/// 1/√2, off by about 0.3 here.
#[test]
fn the_reference_step_lr_is_half_of_epsilon() {
    let sigmas = GeometricSigmas::new(1.0, 0.01, 10);
    let step_lr = 2e-5f32;
    let cfg = AnnealedConfig::from_reference_step_lr(step_lr, 100);
    assert_eq!(cfg.n_steps_each, 100);
    let x = Tensor::randn(&[64, 3], &mut rng(100));
    let s = Tensor::randn(&[64, 3], &mut rng(101)).mul_scalar(50.0);
    for i in [0, 4, 9] {
        let ours = langevin_step(&x, &s, cfg.step_at(&sigmas, i), &mut rng(102 + i as u64));
        let z = rows(&Tensor::randn(&[64, 3], &mut rng(102 + i as u64)));
        let r = sigmas.get(i) as f64 / sigmas.last() as f64;
        let a = step_lr as f64 * r * r;
        let (x, s, ours) = (rows(&x), rows(&s), rows(&ours));
        for k in 0..64 {
            for j in 0..3 {
                let want = x[k][j] + a * s[k][j] + (2.0 * a).sqrt() * z[k][j];
                let got = ours[k][j];
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "level {i}, [{k}][{j}]: {got} vs the reference's {want}"
                );
            }
        }
    }
}

/// Algorithm 2's handling of the known entries, seen from the score network: at level i every
/// evaluation sees them at ỹᵢ = y + σᵢz, with one z per level and chain (re-noised when the level
/// starts, reset after every step). With a score of zero the free entries do not matter, so the
/// recording checks only the known one: (x₁ − y₁)/σᵢ has E[z²] = 1 at each level (Monte Carlo,
/// 2,000 chains), and stays the same number within a level. Seeing last level's ỹ, or x₀'s
/// entry, or a step's noise, would put E[z²] at (σᵢ₋₁/σᵢ)² = 16, at y₁²/σ₀² = 2.25, or let z move
/// between evaluations.
#[test]
fn inpainting_shows_the_network_the_known_entries_at_each_level() {
    let sigmas = GeometricSigmas::new(1.0, 1.0 / 16.0, 3);
    let (n, y1) = (2000, 1.5f32);
    let known = Tensor::from_vec(vec![y1, 0.0], &[1, 2]);
    let mask = Tensor::from_vec(vec![1.0, 0.0], &[1, 2]);
    let cfg = AnnealedConfig {
        step_size: 1e-2,
        n_steps_each: 3,
        record_every: 0,
    };
    let mut seen: Vec<Vec<Vec<f64>>> = vec![Vec::new(); sigmas.len()];
    annealed_langevin_inpaint(
        |x, i| {
            let z = rows(x)
                .iter()
                .map(|r| (r[0] - y1 as f64) / sigmas.get(i) as f64)
                .collect();
            seen[i].push(z);
            x.zeros_like()
        },
        &Tensor::zeros(&[n, 2]),
        &known,
        &mask,
        &sigmas,
        &cfg,
        &mut rng(110),
    );
    for (i, calls) in seen.iter().enumerate() {
        assert_eq!(calls.len(), cfg.n_steps_each, "level {i}: evaluations");
        let z2: Vec<f64> = calls[0].iter().map(|v| v * v).collect();
        assert_mc(&format!("level {i}: ((x₁ − y₁)/σᵢ)²"), &z2, 1.0);
        for later in &calls[1..] {
            assert_eq!(
                later, &calls[0],
                "level {i}: the known entry moved within the level"
            );
        }
    }
}

/// Inpainting a correlated Gaussian: with x₁ known, the sampled x₂ follows the conditional law
/// given x₁: the residual r = x₂ − μ₂ − (Σ₂₁/Σ₁₁)(x₁ − μ₁) has mean 0 and variance
/// Σ₂₂ − Σ₂₁²/Σ₁₁ = 0.36; and the known entry ends at y₁ + σ_L z (its own noise in every chain).
///
/// Scores are those of q_σ = N(μ, Σ + σ²I); only x₂ moves, as a 1-D chain whose conditional
/// variance v is 0.36 at small σ and ≈ σ² at large σ. With ε = 2e-4 and σ from 1 to 0.01, the step
/// relative to v, αᵢ/(2v), is at most 0.6 (stable) and at the level σ ≈ 0.07 still 0.014, so 400
/// steps per level contract a transient in the mean by (1 − 0.014)⁴⁰⁰ ≈ e^{-5.6} and in the variance
/// by e^{-11}; the later levels move the target by O(σ²) only.
/// The conditional of q_{σ_L} differs from that of p by O(σ_L²) ≈ 1e-4 and the step bias is
/// α_L/(4v) ≈ 1.4e-4 relative. 3000 chains. Mean: 5 SE; variance: 5 SE of a sample variance
/// (v√(2/N)) plus 0.1% for those biases.
#[test]
fn inpainting_samples_the_conditional() {
    let mu = [0.5f64, -1.0];
    let cov = [[1.0f64, 0.8], [0.8, 1.0]];
    let sigmas = GeometricSigmas::new(1.0, 0.01, 8);
    let scores: Vec<_> = sigmas
        .sigmas()
        .iter()
        .map(|&s| {
            let s2 = (s as f64) * (s as f64);
            let (a, b, d) = (cov[0][0] + s2, cov[0][1], cov[1][1] + s2);
            let det = a * d - b * b;
            let prec = Tensor::from_vec(
                vec![
                    (d / det) as f32,
                    (-b / det) as f32,
                    (-b / det) as f32,
                    (a / det) as f32,
                ],
                &[2, 2],
            );
            let m = Tensor::from_vec(vec![mu[0] as f32, mu[1] as f32], &[1, 2]);
            move |x: &Tensor| x.sub(&m).matmul(&prec).neg()
        })
        .collect();
    let n = 3000;
    let y1 = 1.5f32;
    let known = Tensor::from_vec(vec![y1, 0.0], &[1, 2]);
    let mask = Tensor::from_vec(vec![1.0, 0.0], &[1, 2]);
    let x0 = Tensor::zeros(&[n, 2]);
    let cfg = AnnealedConfig {
        step_size: 2e-4,
        n_steps_each: 400,
        record_every: 0,
    };
    let out = annealed_langevin_inpaint(
        |x, i| scores[i](x),
        &x0,
        &known,
        &mask,
        &sigmas,
        &cfg,
        &mut rng(90),
    );
    let x = rows(&out.x);
    // The known entry is y₁ + σ_L z with its own z in each chain: within 6σ_L of y₁ (all 3000 are
    // with probability 1 − 6e-6), and not constant.
    assert!(x.iter().all(|r| (r[0] - y1 as f64).abs() < 6.0 * 0.01));
    assert!(x.iter().any(|r| (r[0] - x[0][0]).abs() > 1e-4));
    // And that noise is σ_L z, not some other multiple: z = (x₁ − y₁)/σ_L has mean 0 and E[z²] = 1
    // (f32 rounding of y₁ + σ_L z moves z by about 10⁻⁵). Noise of σ_L² instead would make
    // E[z²] = 10⁻⁴, thousands of standard errors away.
    let sigma_l = sigmas.last() as f64;
    let z: Vec<f64> = x.iter().map(|r| (r[0] - y1 as f64) / sigma_l).collect();
    assert_mc("known entry: (x₁ − y₁)/σ_L", &z, 0.0);
    let z2: Vec<f64> = z.iter().map(|v| v * v).collect();
    assert_mc("known entry: ((x₁ − y₁)/σ_L)²", &z2, 1.0);
    let resid: Vec<f64> = x
        .iter()
        .map(|r| r[1] - mu[1] - cov[1][0] / cov[0][0] * (r[0] - mu[0]))
        .collect();
    let cond_var = cov[1][1] - cov[1][0] * cov[1][0] / cov[0][0];
    assert_mc("conditional mean (residual)", &resid, 0.0);
    let (m, _) = mean_se(&resid);
    let v = resid.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / (n - 1) as f64;
    let tol = K * cond_var * (2.0 / n as f64).sqrt() + 0.001 * cond_var;
    assert!(
        (v - cond_var).abs() <= tol,
        "conditional variance {v} vs {cond_var} (tol {tol})"
    );
}

// ------------------------------------------------------------------------------------------------
// Property tests: identities that hold exactly, up to rounding, for every distribution, network
// and point. proptest draws the cases from the fixed seed of `common::proptest_config`, so every
// run checks the same ones, and a counterexample would be shrunk to a small one.
//
// Rounding. The toys compute their scores and log-densities in f64 and round each output once to
// f32 (relative error at most u = 2⁻²⁴). Two such outputs that must agree therefore differ by at
// most u·(|a| + |b|) plus the f64 error of the computations that led to them: sums of a few dozen
// terms of size ≤ 10³ (the largest exponent ‖x − μ‖²/2σ² these cases reach), so ≲ 10⁻¹⁰ absolute.
// The checks allow 2u·(|a| + |b|) + 10⁻⁹ (see [`agree`]). A wrong formula (a σ where σ² belongs, a dropped
// responsibility, variances not added) is off by a fraction of the values themselves.

/// u = 2⁻²⁴, the relative error of rounding to f32.
const U: f64 = f32::EPSILON as f64 / 2.0;

/// Whether two f32 outputs of f64 computations agree within 2u·(|a| + |b| + extra) + 10⁻⁹, where
/// `extra` is the size of any other f32 value rounded on the way (0 for none).
fn agree(a: f64, b: f64, extra: f64) -> bool {
    (a - b).abs() <= 2.0 * U * (a.abs() + b.abs() + extra) + 1e-9
}

/// Points on the grid of multiples of 2⁻⁸ in [−5, 5]: scaled by a power of two and shifted by a
/// multiple of 1/8 they stay exact in f32 (below 2⁵, multiples of 2⁻¹⁰ need 15 significant bits).
fn grid_points(n: usize, d: usize) -> impl Strategy<Value = Array2<f32>> {
    prop::collection::vec((-1280i32..=1280).prop_map(|i| i as f32 / 256.0), n * d)
        .prop_map(move |v| Array2::from_shape_vec((n, d), v).expect("n × d values"))
}

/// A mixture of 1 to 4 isotropic components in ℝ¹ to ℝ³ (weights in [0.05, 1], normalised; means
/// in [−3, 3]; standard deviations in [0.3, 2]), 1 to 6 points in [−5, 5]ᴰ, and a shift c in
/// [−3, 3]ᴰ (multiples of 1/8).
fn mixture_case() -> impl Strategy<Value = (GaussianMixture, Array2<f32>, Vec<f64>)> {
    (1usize..=3, 1usize..=4, 1usize..=6).prop_flat_map(|(d, k, n)| {
        (
            prop::collection::vec(0.05f64..1.0, k),
            prop::collection::vec(-3.0f64..3.0, k * d),
            prop::collection::vec(0.3f64..2.0, k),
            grid_points(n, d),
            prop::collection::vec((-24i32..=24).prop_map(|i| i as f64 / 8.0), d),
        )
            .prop_map(move |(w, m, s, x, c)| {
                let means = Array2::from_shape_vec((k, d), m).expect("k × d means");
                (GaussianMixture::new(&w, means, &s), x, c)
            })
    })
}

/// A ring of radius in [0.5, 4] and noise in [0.2, 1.5], and 1 to 6 points in [−5, 5]².
fn ring_case() -> impl Strategy<Value = (Ring, Array2<f32>)> {
    (0.5f64..4.0, 0.2f64..1.5, 1usize..=6)
        .prop_flat_map(|(r, s, n)| grid_points(n, 2).prop_map(move |x| (Ring::new(r, s), x)))
}

/// Asserts that two arrays of f32 outputs agree elementwise (see [`agree`]).
fn assert_agree(what: &str, got: &[f32], want: &[f64], extra: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            agree(g as f64, w, extra),
            "{}: element {}: {} vs {}",
            what,
            i,
            g,
            w
        );
    }
    Ok(())
}

/// x with each row repeated D times, and the directions √D·e₁ … √D·e_D, one for each copy.
fn scaled_axes(x: &Tensor) -> (Tensor, Tensor) {
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let xs = x.to_vec();
    let mut rep = Vec::with_capacity(n * d * d);
    let mut v = vec![0.0f32; n * d * d];
    for r in 0..n {
        for i in 0..d {
            rep.extend_from_slice(&xs[r * d..(r + 1) * d]);
            v[(r * d + i) * d + i] = (d as f32).sqrt();
        }
    }
    (
        Tensor::from_vec(rep, &[n * d, d]),
        Tensor::from_vec(v, &[n * d, d]),
    )
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    /// Change of variables: if y = a·x + c then p_Y(y) = p_X(x)/aᴰ, so
    /// log p_Y(y) = log p_X(x) − D ln a and s_Y(y) = s_X(x)/a. For a mixture, p_Y is the mixture
    /// with means a·μₖ + c and standard deviations a·σₖ. The score's 1/a pins the power of σ in
    /// its formula: with (μ − x)/σ in place of (μ − x)/σ² the two sides would be equal, not a
    /// factor a apart. With a a power of two (¼ to 4) and the grid points, y is exact in f32.
    #[test]
    fn affine_maps_carry_the_mixture_score((p, x, c) in mixture_case(), log2_a in -2i32..=2) {
        let a = 2f64.powi(log2_a);
        let d = p.dim();
        let mut means = p.means().to_owned() * a;
        for mut row in means.outer_iter_mut() {
            row.iter_mut().zip(&c).for_each(|(m, c)| *m += c);
        }
        let stds: Vec<f64> = p.stds().iter().map(|s| a * s).collect();
        let q = GaussianMixture::new(p.weights(), means, &stds);
        let y = x.mapv(|v| v * a as f32) + &Array1::from_iter(c.iter().map(|&c| c as f32));
        let want: Vec<f64> = p.score(x.view()).iter().map(|&s| s as f64 / a).collect();
        assert_agree("score", q.score(y.view()).as_slice().unwrap(), &want, 0.0)?;
        // log p_X(x) is rounded to f32 before D ln a is taken off: its size joins the allowance.
        let shift = d as f64 * a.ln();
        let want: Vec<f64> = p.log_prob(x.view()).iter().map(|&l| l as f64 - shift).collect();
        assert_agree("log-density", q.log_prob(y.view()).as_slice().unwrap(), &want, shift.abs())?;
    }

    /// The same for the ring, scaled about its centre: the ring of radius a·r and noise a·s has
    /// score s(x)/a at a·x, and log-density log p(x) − 2 ln a.
    #[test]
    fn scaling_carries_the_ring_score((p, x) in ring_case(), log2_a in -2i32..=2) {
        let a = 2f64.powi(log2_a);
        let q = Ring::new(a * p.radius(), a * p.std());
        let y = x.mapv(|v| v * a as f32);
        let want: Vec<f64> = p.score(x.view()).iter().map(|&s| s as f64 / a).collect();
        assert_agree("score", q.score(y.view()).as_slice().unwrap(), &want, 0.0)?;
        let shift = 2.0 * a.ln();
        let want: Vec<f64> = p.log_prob(x.view()).iter().map(|&l| l as f64 - shift).collect();
        assert_agree("log-density", q.log_prob(y.view()).as_slice().unwrap(), &want, shift.abs())?;
    }

    /// Gaussian noise adds variances: perturbing by σ₁ and then by σ₂ is perturbing by
    /// √(σ₁² + σ₂²), which is what lets NCSN describe each noise level by one σ. Checked through
    /// the scores of both toys; adding standard deviations instead fails at once.
    #[test]
    fn perturbations_add_variances(
        (p, x, _) in mixture_case(),
        (ring, xr) in ring_case(),
        s1 in 0.01f64..3.0,
        s2 in 0.01f64..3.0,
    ) {
        let s12 = s1.hypot(s2);
        let want: Vec<f64> = p.perturbed(s12).score(x.view()).iter().map(|&s| s as f64).collect();
        let got = p.perturbed(s1).perturbed(s2).score(x.view());
        assert_agree("mixture score", got.as_slice().unwrap(), &want, 0.0)?;
        let want: Vec<f64> =
            ring.perturbed(s12).score(xr.view()).iter().map(|&s| s as f64).collect();
        let got = ring.perturbed(s1).perturbed(s2).score(xr.view());
        assert_agree("ring score", got.as_slice().unwrap(), &want, 0.0)?;
    }

    /// Tweedie's formula for every mixture, noise level and point: the posterior mean E[x | x̃],
    /// computed from the components' Gaussian posteriors, is x̃ + σ²∇log q_σ(x̃), computed from
    /// the perturbed mixture's score. (`tweedie_formula_gives_the_posterior_mean` checks the same
    /// against Monte Carlo on one mixture.)
    #[test]
    fn tweedie_holds_for_every_mixture((p, x, _) in mixture_case(), sigma in 0.01f64..3.0) {
        let s = p.perturbed(sigma).score(x.view());
        let want: Vec<f64> = x
            .iter()
            .zip(s.iter())
            .map(|(&xt, &s)| xt as f64 + sigma * sigma * s as f64)
            .collect();
        // One side is x̃ + σ²s with s rounded to f32 on the way: its error u·σ²|s| is not
        // always covered by |x̃ + σ²s| (x̃ and σ²s may cancel), so σ²|s| joins the allowance.
        let got = p.posterior_mean(x.view(), sigma);
        prop_assert_eq!(got.len(), want.len());
        for (i, ((&g, &w), &s)) in got.iter().zip(&want).zip(s.iter()).enumerate() {
            prop_assert!(
                agree(g as f64, w, sigma * sigma * (s as f64).abs()),
                "posterior mean: element {}: {} vs {}", i, g, w
            );
        }
    }

    /// Slicing along the scaled coordinate axes is exact score matching. With each row of x
    /// repeated D times against the directions √D·e₁ … √D·e_D (a set with E[vvᵀ] = I, and points
    /// of the sphere projection), the sliced trace vᵀ∇s v = D·∂ᵢsᵢ averages to tr ∇s over the
    /// copies, SSM's ½(vᵀs)² = ½D·sᵢ² to ½‖s‖², and SSM-VR's ½‖s‖² is already that: both sliced
    /// losses equal ESM with no expectation left. Checked on random networks
    /// s(x) = k·net(x) − a ⊙ x (the pull a, unequal across axes, gives the trace a size of its
    /// own). The two sides add the same terms in different orders through different graphs: f32
    /// rounding of sums of ≤ 24 products per layer over three layers, ≲ 10⁻⁵ of the terms' size
    /// m = mean(|tr ∇s| + ½‖s‖²). The check allows 10⁻⁴·(1 + m); a missing ½, a trace scaled by
    /// √D instead of D, or a trace dropped is off by a fraction of m itself.
    #[test]
    fn sliced_matching_along_the_scaled_axes_is_exact_score_matching(
        d in 1usize..=4,
        n in 1usize..=5,
        hidden in 4usize..=24,
        seed in any::<u64>(),
        k in -2.0f32..2.0,
        pull in 0.0f32..1.0,
    ) {
        let store = ParamStore::new();
        let net = ScoreMlp::new(&store.root(), d, hidden, &mut rng(seed));
        let a = Tensor::from_vec((1..=d).map(|i| pull * i as f32 / d as f32).collect(), &[1, d]);
        let score = |x: &Tensor| net.forward(x).mul_scalar(k).sub(&x.mul(&a));
        let x = Tensor::uniform(&[n, d], -2.0, 2.0, &mut rng(seed ^ 1));
        let esm = esm_loss(score, &x).item() as f64;
        let trace = per_sample_trace(&score, &x);
        let s = rows(&no_grad(|| score(&x)));
        let m = trace.iter().zip(&s).map(|(t, s)| t.abs() + 0.5 * dot(s, s)).sum::<f64>()
            / n as f64;
        let (xr, v) = scaled_axes(&x);
        for vr in [false, true] {
            let sliced = sliced_score_matching(score, &xr, &v, vr).loss.item() as f64;
            prop_assert!(
                (sliced - esm).abs() <= 1e-4 * (1.0 + m),
                "{}: {} vs ESM {} (terms of size {})",
                if vr { "SSM-VR" } else { "SSM" }, sliced, esm, m
            );
        }
    }

    /// One network for both diffusions: DDPM's x_t = √ᾱ x + √(1 − ᾱ) z is √ᾱ times NCSN's
    /// x + σz with σ = √((1 − ᾱ)/ᾱ), so its score is the VE score at x/√ᾱ, divided by √ᾱ.
    /// `vp_from_ve` built on the perturbed mixture's exact score must give the diffused
    /// mixture's, at every point, for ᾱ from 0.01 to 0.99 (β in [0.01, 0.9], t = 0 or 1). The two
    /// sides round differently: x/√ᾱ and σ go to f32 (relative u each) before the score is taken,
    /// and the score's rate of change is at most about ‖x − μ‖²/s⁴ ≲ 10³ for these components
    /// (s ≥ 0.3√ᾱ), so they may differ by ~10³·u ≈ 10⁻⁴ of |s| + 1; the check allows 10⁻³·(1 + |s|).
    /// Without the outer 1/√ᾱ, or with σ = √(1 − ᾱ) in place of the ratio, the sides differ by
    /// factors of up to 10.
    #[test]
    fn the_vp_score_is_the_ve_score_rescaled(
        (p, x, _) in mixture_case(),
        beta in 0.01f64..0.9,
        t in 0usize..=1,
    ) {
        let schedule = VpSchedule::linear(beta, beta, 2);
        let ab = schedule.alpha_bar(t);
        let want = p.diffused(ab.sqrt(), (1.0 - ab).sqrt()).score(x.view());
        let mut vp = vp_from_ve(
            |y: &Tensor, sigma: f32| closed_form_score(&p.perturbed(f64::from(sigma)))(y),
            &schedule,
        );
        let got = vp(&tensor_from_array2(x.clone()), t).to_vec();
        for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
            prop_assert!(
                (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                "ᾱ = {}: element {}: {} vs {}", ab, i, g, w
            );
        }
    }
}
