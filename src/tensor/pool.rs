//! Average pooling and bilinear resizing of (N, C, H, W) tensors, each with its adjoint.
//!
//! Both are linear maps that act on each (n, c) plane separately and are *separable*: a pass
//! along the rows, then a pass along the columns. The VJP of a linear map is its adjoint, and the
//! VJP of the adjoint is the map again, so gradients of every order stay in this file.
//!
//! * [`Tensor::avg_pool2d`]: `nn.AvgPool2d(kernel, stride, padding)` with PyTorch's defaults
//!   `count_include_pad = True`, `ceil_mode = False`. The 2×2 mean of `ConvMeanPool` is
//!   `avg_pool2d(2, 2, 0)`.
//! * [`Tensor::resize_bilinear`]: `F.interpolate(mode='bilinear', align_corners=True)`.

use super::{Op, Tensor, contiguous};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Kernel size, stride and zero padding of a square average pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dConfig {
    /// Window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Zeros added on each side.
    pub padding: usize,
}

impl Pool2dConfig {
    /// A pooling configuration. Panics unless kernel, stride ≥ 1 and padding ≤ kernel / 2
    /// (PyTorch's rule).
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        assert!(
            kernel >= 1 && stride >= 1 && padding <= kernel / 2,
            "avg_pool2d: need kernel, stride ≥ 1 and padding ≤ kernel/2, got {kernel}, {stride}, {padding}"
        );
        Pool2dConfig {
            kernel,
            stride,
            padding,
        }
    }

    /// Output length along an axis of length `input`: ⌊(input + 2p − k)/s⌋ + 1.
    pub fn out_size(&self, input: usize) -> usize {
        assert!(
            input + 2 * self.padding >= self.kernel,
            "avg_pool2d: window {} larger than padded input {}",
            self.kernel,
            input + 2 * self.padding
        );
        (input + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// For each output position along an axis of length `len`: the input range [lo, hi) its window
    /// covers, and the window's length counting padding (PyTorch's `pool_size` factor).
    fn windows(&self, len: usize) -> Vec<(usize, usize, f32)> {
        let (k, s, p) = (
            self.kernel as isize,
            self.stride as isize,
            self.padding as isize,
        );
        (0..self.out_size(len))
            .map(|o| {
                let start = o as isize * s - p;
                let end = (start + k).min(len as isize + p);
                let size = (end - start) as f32;
                (start.max(0) as usize, end.min(len as isize) as usize, size)
            })
            .collect()
    }
}

fn dims4(t: &[usize], what: &str) -> [usize; 4] {
    <[usize; 4]>::try_from(t)
        .unwrap_or_else(|_| panic!("{what}: expected 4-D (N, C, H, W), got {t:?}"))
}

/// One axis of a separable linear map: output `o` reads input entries `taps[o]` with weights.
/// For pooling every weight is 1 and the entries are a contiguous window, kept as `windows` so
/// that the kernels sum slices instead of walking index lists.
struct Taps(Vec<Vec<(usize, f32)>>, Option<Vec<(usize, usize)>>);

impl Taps {
    fn pool(cfg: &Pool2dConfig, len: usize) -> (Taps, Vec<f32>) {
        let w = cfg.windows(len);
        let taps = w
            .iter()
            .map(|&(lo, hi, _)| (lo..hi).map(|i| (i, 1.0)).collect())
            .collect();
        let ranges = w.iter().map(|&(lo, hi, _)| (lo, hi)).collect();
        (
            Taps(taps, Some(ranges)),
            w.iter().map(|&(_, _, s)| s).collect(),
        )
    }

    /// `F.interpolate(..., align_corners=True)` along one axis: source position o·(in − 1)/(out − 1),
    /// split between its two neighbours (one when it is the last entry).
    fn bilinear(input: usize, output: usize) -> Taps {
        let scale = if output > 1 {
            (input as f32 - 1.0) / (output as f32 - 1.0)
        } else {
            0.0
        };
        Taps(
            (0..output)
                .map(|o| {
                    let src = scale * o as f32;
                    let i0 = (src as usize).min(input - 1);
                    let i1 = if i0 + 1 < input { i0 + 1 } else { i0 };
                    let l1 = src - i0 as f32;
                    vec![(i0, 1.0 - l1), (i1, l1)]
                })
                .collect(),
            None,
        )
    }
}

/// Applies the separable map (rows along H with `th`, columns along W with `tw`, then a scale
/// `rs[oh]·cs[ow]` dividing the result) to every plane of `x` (N·C planes of H×W).
fn separable(
    x: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    th: &Taps,
    tw: &Taps,
    div: Option<(&[f32], &[f32])>,
) -> Vec<f32> {
    let (ho, wo) = (th.0.len(), tw.0.len());
    super::filled(planes * ho * wo, |out| {
        out.par_chunks_mut(ho * wo).enumerate().for_each_init(
            || vec![0.0f32; h * wo],
            |tmp, (pl, dst)| {
                let dst = super::zeroed(dst);
                let src = &x[pl * h * w..][..h * w];
                // Along W: tmp[i][ow] = Σ weight · x[i][j]
                for (row, trow) in src.chunks_exact(w).zip(tmp.chunks_exact_mut(wo)) {
                    match &tw.1 {
                        Some(win) => {
                            for (t, &(lo, hi)) in trow.iter_mut().zip(win) {
                                *t = row[lo..hi].iter().sum();
                            }
                        }
                        None => {
                            for (t, taps) in trow.iter_mut().zip(&tw.0) {
                                *t = taps.iter().map(|&(j, a)| a * row[j]).sum();
                            }
                        }
                    }
                }
                // Along H: out[oh][ow] = Σ weight · tmp[i][ow]
                for (oh, (drow, taps)) in dst.chunks_exact_mut(wo).zip(&th.0).enumerate() {
                    for &(i, a) in taps {
                        for (d, &t) in drow.iter_mut().zip(&tmp[i * wo..][..wo]) {
                            *d += a * t;
                        }
                    }
                    if let Some((rs, cs)) = div {
                        for (d, &c) in drow.iter_mut().zip(cs) {
                            *d /= rs[oh] * c;
                        }
                    }
                }
            },
        );
    })
}

/// The adjoint of [`separable`]: maps `g` (planes of Ho×Wo) back to planes of H×W.
fn separable_adjoint(
    g: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    th: &Taps,
    tw: &Taps,
    div: Option<(&[f32], &[f32])>,
) -> Vec<f32> {
    let (ho, wo) = (th.0.len(), tw.0.len());
    super::filled(planes * h * w, |out| {
        out.par_chunks_mut(h * w).enumerate().for_each_init(
            || (vec![0.0f32; h * wo], vec![0.0f32; wo]),
            |(tmp, grow), (pl, dst)| {
                let dst = super::zeroed(dst);
                let src = &g[pl * ho * wo..][..ho * wo];
                tmp.fill(0.0);
                for (oh, (srow, taps)) in src.chunks_exact(wo).zip(&th.0).enumerate() {
                    grow.copy_from_slice(srow);
                    if let Some((rs, cs)) = div {
                        for (v, &c) in grow.iter_mut().zip(cs) {
                            *v /= rs[oh] * c;
                        }
                    }
                    for &(i, a) in taps {
                        for (t, &v) in tmp[i * wo..][..wo].iter_mut().zip(grow.iter()) {
                            *t += a * v;
                        }
                    }
                }
                for (drow, trow) in dst.chunks_exact_mut(w).zip(tmp.chunks_exact(wo)) {
                    match &tw.1 {
                        Some(win) => {
                            for (&t, &(lo, hi)) in trow.iter().zip(win) {
                                for d in &mut drow[lo..hi] {
                                    *d += t;
                                }
                            }
                        }
                        None => {
                            for (&t, taps) in trow.iter().zip(&tw.0) {
                                for &(j, a) in taps {
                                    drow[j] += a * t;
                                }
                            }
                        }
                    }
                }
            },
        );
    })
}

// ANCHOR: avg_pool
impl Tensor {
    /// Average pooling over square windows, `nn.AvgPool2d(kernel, stride, padding)` with
    /// `count_include_pad = True`: each window's sum is divided by its size counting the padded
    /// zeros (but not beyond the padding).
    pub fn avg_pool2d(&self, cfg: Pool2dConfig) -> Tensor {
        let [n, c, h, w] = dims4(self.shape(), "avg_pool2d");
        assert!(
            h >= 1 && w >= 1,
            "avg_pool2d: input planes of {h}×{w} are empty (shape {:?})",
            self.shape()
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::avg_pool2d(self, cfg) {
            return Tensor::from_op(
                d,
                Op::AvgPool2d {
                    x: self.clone(),
                    cfg,
                },
            );
        }
        let ((th, rs), (tw, cs)) = (Taps::pool(&cfg, h), Taps::pool(&cfg, w));
        let out = separable(
            &contiguous(&self.storage()),
            n * c,
            (h, w),
            &th,
            &tw,
            Some((&rs, &cs)),
        );
        let shape = [n, c, rs.len(), cs.len()];
        Tensor::from_op(
            ArrayD::from_shape_vec(IxDyn(&shape), out).expect("shape"),
            Op::AvgPool2d {
                x: self.clone(),
                cfg,
            },
        )
    }

    /// The adjoint of [`Tensor::avg_pool2d`] (its VJP): spreads each output gradient evenly over
    /// its window, back to an input of spatial size `input_hw`.
    pub fn avg_pool2d_adjoint(&self, cfg: Pool2dConfig, input_hw: (usize, usize)) -> Tensor {
        let [n, c, ho, wo] = dims4(self.shape(), "avg_pool2d_adjoint");
        let (h, w) = input_hw;
        let ((th, rs), (tw, cs)) = (Taps::pool(&cfg, h), Taps::pool(&cfg, w));
        assert_eq!(
            (rs.len(), cs.len()),
            (ho, wo),
            "avg_pool2d_adjoint: gradient {:?} does not fit input size {input_hw:?}",
            self.shape()
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::avg_pool2d_adjoint(self, cfg, input_hw) {
            let g = self.clone();
            return Tensor::from_op(d, Op::AvgPool2dAdjoint { g, cfg });
        }
        let out = separable_adjoint(
            &contiguous(&self.storage()),
            n * c,
            (h, w),
            &th,
            &tw,
            Some((&rs, &cs)),
        );
        Tensor::from_op(
            ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), out).expect("shape"),
            Op::AvgPool2dAdjoint {
                g: self.clone(),
                cfg,
            },
        )
    }
}
// ANCHOR_END: avg_pool

impl Tensor {
    /// Bilinear resizing to `size` = (Ho, Wo) with corners aligned:
    /// `F.interpolate(x, size, mode='bilinear', align_corners=True)`. Resizing to the same size is
    /// the identity and returns `self`.
    pub fn resize_bilinear(&self, size: (usize, usize)) -> Tensor {
        let [n, c, h, w] = dims4(self.shape(), "resize_bilinear");
        assert!(
            size.0 >= 1 && size.1 >= 1,
            "resize_bilinear: empty output size {size:?}"
        );
        assert!(
            h >= 1 && w >= 1,
            "resize_bilinear: input planes of {h}×{w} are empty (shape {:?})",
            self.shape()
        );
        if (h, w) == size {
            return self.clone();
        }
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::resize_bilinear(self, size) {
            return Tensor::from_op(d, Op::ResizeBilinear { x: self.clone() });
        }
        let (th, tw) = (Taps::bilinear(h, size.0), Taps::bilinear(w, size.1));
        let out = separable(&contiguous(&self.storage()), n * c, (h, w), &th, &tw, None);
        Tensor::from_op(
            ArrayD::from_shape_vec(IxDyn(&[n, c, size.0, size.1]), out).expect("shape"),
            Op::ResizeBilinear { x: self.clone() },
        )
    }

    /// The adjoint of [`Tensor::resize_bilinear`] (its VJP): each output gradient goes back to the
    /// four input pixels it was interpolated from, with the same weights.
    pub fn resize_bilinear_adjoint(&self, input_hw: (usize, usize)) -> Tensor {
        let [n, c, ho, wo] = dims4(self.shape(), "resize_bilinear_adjoint");
        if (ho, wo) == input_hw {
            return self.clone();
        }
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::resize_bilinear_adjoint(self, input_hw) {
            return Tensor::from_op(d, Op::ResizeBilinearAdjoint { g: self.clone() });
        }
        let (th, tw) = (
            Taps::bilinear(input_hw.0, ho),
            Taps::bilinear(input_hw.1, wo),
        );
        let out = separable_adjoint(
            &contiguous(&self.storage()),
            n * c,
            input_hw,
            &th,
            &tw,
            None,
        );
        Tensor::from_op(
            ArrayD::from_shape_vec(IxDyn(&[n, c, input_hw.0, input_hw.1]), out).expect("shape"),
            Op::ResizeBilinearAdjoint { g: self.clone() },
        )
    }
}

/// The VJPs: each map's is its adjoint, and the adjoint's is the map.
pub(crate) fn pool_vjp(op: &Op, g: &Tensor) -> Tensor {
    match op {
        Op::AvgPool2d { x, cfg } => g.avg_pool2d_adjoint(*cfg, (x.shape()[2], x.shape()[3])),
        Op::AvgPool2dAdjoint { cfg, .. } => g.avg_pool2d(*cfg),
        Op::ResizeBilinear { x } => g.resize_bilinear_adjoint((x.shape()[2], x.shape()[3])),
        Op::ResizeBilinearAdjoint { g: gy, .. } => {
            g.resize_bilinear((gy.shape()[2], gy.shape()[3]))
        }
        _ => unreachable!("pool_vjp called on {}", op.name()),
    }
}
