//! Stride-1 "same" convolutions on x86-64 with AVX-512: an implicit `im2col` feeding a
//! register-blocked micro-kernel.
//!
//! Every 3 × 3 convolution of the NCSN RefineNet has stride 1 and padding p = d·(k − 1)/2 (p = d
//! for dilation d), so its output has the input's size, and so do its 1 × 1 shortcuts. For such a
//! convolution the column matrix needs no copy. Write q = y·W + x for a pixel of the flattened
//! H·W image; the entry of the column matrix in row (c, u, v) and column q is
//!
//! ```text
//! x̂[(c, u, v), q] = x[c, q + (u·d − p)·W + (v·d − p)]   if the tap (y + u·d − p, x + v·d − p)
//!                                                          lies inside the image, else 0,
//! ```
//!
//! so a run of consecutive pixels reads a run of consecutive inputs, shifted by an offset that
//! depends only on the tap, and the only thing that varies from pixel to pixel is whether the
//! tap fell off an edge: a bit mask. A masked vector load (`vmovups` with a mask register; lanes
//! outside the mask are neither read nor faulted on) copies 16 such entries at once.
//!
//! The product y = A·x̂ (A the O × C·kh·kw weight) is computed a tile of [`MR`] output channels
//! × [`NR`] pixels at a time:
//!
//! 1. **Pack a panel.** For the NR pixels of a tile, the NR-wide strip of x̂ for all C·kh·kw rows
//!    is written k-major into a small aligned buffer (`NR` floats per row, two masked loads and
//!    two stores). It stays in L2 while every block of output channels uses it.
//! 2. **Micro-kernel.** MR × NR accumulators live in 16 of AVX-512's 32 vector registers (two
//!    16-lane vectors per output channel). Each step k broadcasts MR weights and multiplies them
//!    with the two vectors of the panel's row k: 16 fused multiply-adds for 2 vector loads and MR
//!    broadcasts, so the core's two FMA units, not its load ports, set the pace. (The more
//!    general 16 × 16 kernel of `matrixmultiply` issues 17 loads for 16 FMAs.)
//! 3. **Store.** After all C·kh·kw steps the tile is final: the bias is added and the tile is
//!    stored, with masks at the right edge (H·W need not be a multiple of NR) and at the last
//!    block of channels (O need not be a multiple of MR).
//!
//! The weights are packed once per call into blocks of MR rows ([`PackedWeights`]), shared by
//! all threads. The input gradient of a "same" convolution is itself a "same" convolution: of
//! ∂L/∂y with the weight transposed (C × O) and flipped in both spatial axes (see
//! `input_grad_same` in the parent module), so it runs on the same kernel with no `col2im`. The
//! weight gradient of a 3 × 3 kernel ([`weight_grad_images`]) sums over the pixels instead, so
//! its vectors run along them.
//!
//! Each output is a sum in a fixed order (over k = (c, u, v) in one accumulator for the first
//! two; over the pixels of a fixed group of images for the weight gradient): the result does not
//! depend on how the batch is split among threads.

use std::arch::x86_64::*;

/// Output channels per tile: rows of the weight handled by one call of the micro-kernel.
pub(super) const MR: usize = 8;
/// Pixels per tile: two 16-lane vectors.
pub(super) const NR: usize = 32;

use super::avx512::Aligned;

/// The geometry of a stride-1 "same" convolution of one image: `c` input channels of `h × w`
/// pixels, a `kh × kw` kernel with dilation `d` and padding `p`, and an output of the input's size.
#[derive(Clone, Copy, Debug)]
pub(super) struct Same {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub d: usize,
    pub p: usize,
}

impl Same {
    /// Rows of the (implicit) column matrix: C·kh·kw.
    pub(super) fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Floats a panel buffer must hold.
    pub(super) fn panel_len(&self) -> usize {
        self.k() * NR
    }
}

/// A [`Same`] geometry with where each tap reads and which pixels it keeps: the same for every
/// channel and image of a convolution, so made once per call and shared by its kernels.
pub(super) struct Taps {
    /// The geometry.
    pub(super) s: Same,
    /// Tap t = (u, v) moves by (u·d − p) rows and (v·d − p) columns: pixel q reads input
    /// q + `offsets[t]` = q + (u·d − p)·W + (v·d − p).
    offsets: Vec<isize>,
    /// `masks[chunk·taps + t]`, bit l: pixel q = 16·chunk + l exists and its tap t is inside the
    /// image (16 lanes per chunk; lanes past the last pixel are off).
    masks: Vec<u16>,
}

impl Taps {
    pub(super) fn new(s: Same) -> Taps {
        let (hw, taps) = (s.h * s.w, s.kh * s.kw);
        let at = |i: usize| (i * s.d) as isize - s.p as isize;
        let mut offsets = vec![0isize; taps];
        let mut masks = vec![0u16; hw.div_ceil(16) * taps];
        for (t, off) in offsets.iter_mut().enumerate() {
            let (dy, dx) = (at(t / s.kw), at(t % s.kw));
            *off = dy * s.w as isize + dx;
            for q in 0..hw {
                let (y, x) = ((q / s.w) as isize + dy, (q % s.w) as isize + dx);
                if y >= 0 && (y as usize) < s.h && x >= 0 && (x as usize) < s.w {
                    masks[(q / 16) * taps + t] |= 1 << (q % 16);
                }
            }
        }
        Taps { s, offsets, masks }
    }

    /// The lanes tap `t` keeps in 16-pixel chunk `chunk` (none past the image).
    fn mask(&self, chunk: usize, t: usize) -> u16 {
        let taps = self.offsets.len();
        self.masks.get(chunk * taps + t).copied().unwrap_or(0)
    }
}

/// An M × K matrix packed for the micro-kernel: ⌈M/MR⌉ blocks of MR rows, each stored k-major
/// (`[K][MR]`, row i of the block at offset i within each group of MR), rows past M zero.
pub(super) struct PackedWeights {
    data: Aligned,
    m: usize,
    k: usize,
}

impl PackedWeights {
    /// Packs the M × K matrix whose row i `row(i, buf)` writes into `buf` (K floats).
    pub(super) fn from_rows(m: usize, k: usize, row: impl Fn(usize, &mut [f32])) -> Self {
        let blocks = m.div_ceil(MR);
        let mut data = Aligned::zeros(blocks * k * MR);
        let dst = data.as_mut_ptr();
        let mut buf = vec![0.0f32; k];
        for i in 0..m {
            row(i, &mut buf);
            let (b, r) = (i / MR, i % MR);
            for (kk, &v) in buf.iter().enumerate() {
                // SAFETY: b·K·MR + kk·MR + r < blocks·K·MR, the buffer's length.
                unsafe { *dst.add(b * k * MR + kk * MR + r) = v };
            }
        }
        PackedWeights { data, m, k }
    }

    /// M, the number of rows.
    pub(super) fn rows(&self) -> usize {
        self.m
    }
}

// ANCHOR: micro_kernel
/// C\[i, j\] = bias\[i\] + Σₖ A\[k\]\[i\] · B\[k\]\[j\] for an MR × NR tile: `a` is one packed block of
/// MR rows (`[K][MR]`), `b` a packed panel (`[K][NR]`, 64-byte aligned). Rows `rows..MR` and the
/// columns outside `cols` (a bit per column) are not stored. With `WIDE` false only the first 16
/// columns are computed: for the last tile of an image with at most 16 pixels left (196 pixels
/// of a 14 × 14 plane are 6 tiles of 32 and one of 4), which would otherwise spend 16 of its
/// FMAs per step on lanes that are never stored.
///
/// # Safety
/// The CPU supports AVX-512F; `a` and `b` hold K·MR and K·NR floats; for i < `rows`, row i of C
/// starts at `c + i·ldc` and the columns set in `cols` are inside its allocation; `bias`, if not
/// null, holds `rows` floats.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const WIDE: bool>(
    k: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: u32,
    bias: *const f32,
) {
    unsafe {
        let mut lo = [_mm512_setzero_ps(); MR]; // pixels 0..16 of the tile, per output channel
        let mut hi = [_mm512_setzero_ps(); MR]; // pixels 16..32
        for kk in 0..k {
            let b0 = _mm512_load_ps(b.add(kk * NR));
            let b1 = if WIDE {
                _mm512_load_ps(b.add(kk * NR + 16))
            } else {
                _mm512_setzero_ps()
            };
            let ak = a.add(kk * MR);
            for i in 0..MR {
                let ai = _mm512_set1_ps(*ak.add(i));
                lo[i] = _mm512_fmadd_ps(ai, b0, lo[i]);
                if WIDE {
                    hi[i] = _mm512_fmadd_ps(ai, b1, hi[i]);
                }
            }
        }
        let (m0, m1) = (cols as u16, (cols >> 16) as u16);
        for i in 0..MR {
            if i < rows {
                let bi = if bias.is_null() {
                    _mm512_setzero_ps()
                } else {
                    _mm512_set1_ps(*bias.add(i))
                };
                let row = c.wrapping_add(i * ldc);
                _mm512_mask_storeu_ps(row, m0, _mm512_add_ps(lo[i], bi));
                if WIDE {
                    _mm512_mask_storeu_ps(row.wrapping_add(16), m1, _mm512_add_ps(hi[i], bi));
                }
            }
        }
    }
}
// ANCHOR_END: micro_kernel

// ANCHOR: conv_image
/// y = bias + w ⋆ x for one image: `x` is C × H × W, `y` is M × H × W (M = `w.m`), `w` the
/// packed M × C·kh·kw weight, `taps` the geometry (C = `taps.s.c`) with its [`Taps`], `bias` M
/// floats or empty. `panel` is scratch of at least [`Same::panel_len`] floats.
///
/// # Safety
/// The CPU supports AVX-512F; `x` holds C·H·W floats and `y` M·H·W; `w.k` is C·kh·kw.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn conv_image(
    w: &PackedWeights,
    taps: &Taps,
    x: *const f32,
    y: *mut f32,
    bias: &[f32],
    panel: &mut Aligned,
) {
    let s = &taps.s;
    let (hw, k) = (s.h * s.w, s.k());
    debug_assert!(w.k == k && panel.len() >= s.panel_len());
    debug_assert!(bias.is_empty() || bias.len() == w.m);
    for j0 in (0..hw).step_by(NR) {
        let nr = NR.min(hw - j0);
        let chunk = j0 / 16; // the tile's two chunks of 16 pixels: chunk, chunk + 1
        // 1. The panel: row (c, u, v) is the NR inputs from q = j0 on, shifted by the tap.
        unsafe {
            let mut dst = panel.as_mut_ptr();
            for c in 0..s.c {
                let xc = x.add(c * hw + j0);
                for (t, &off) in taps.offsets.iter().enumerate() {
                    // Masked-off lanes (the padding, or pixels past the image) read nothing, so
                    // the address may lie outside x; it is never dereferenced there.
                    let src = xc.wrapping_offset(off);
                    let (m0, m1) = (taps.mask(chunk, t), taps.mask(chunk + 1, t));
                    _mm512_store_ps(dst, _mm512_maskz_loadu_ps(m0, src));
                    _mm512_store_ps(dst.add(16), _mm512_maskz_loadu_ps(m1, src.wrapping_add(16)));
                    dst = dst.add(NR);
                }
            }
        }
        // 2–3. Every block of MR output channels against the panel.
        let cols = if nr == NR { u32::MAX } else { (1u32 << nr) - 1 };
        for (blk, i0) in (0..w.m).step_by(MR).enumerate() {
            let rows = MR.min(w.m - i0);
            let bias = if bias.is_empty() {
                std::ptr::null()
            } else {
                bias[i0..].as_ptr()
            };
            // SAFETY: block `blk` holds K·MR floats; the panel K·NR; rows i0..i0 + rows of y
            // exist and the masked columns j0..j0 + nr are inside them.
            unsafe {
                let (a_blk, b, c) = (
                    w.data.as_ptr().add(blk * k * MR),
                    panel.as_ptr(),
                    y.add(i0 * hw + j0),
                );
                if nr > 16 {
                    kernel::<true>(k, a_blk, b, c, hw, rows, cols, bias);
                } else {
                    kernel::<false>(k, a_blk, b, c, hw, rows, cols, bias);
                }
            }
        }
    }
}
// ANCHOR_END: conv_image

// ANCHOR: sum_lanes_16
/// The 16 horizontal sums of 16 vectors, in one vector: lane i of the result is the sum of the
/// lanes of `a[i]`. Four rounds of pairwise shuffles and adds (30 shuffles, 15 adds) instead of
/// 16 separate reductions.
#[target_feature(enable = "avx512f")]
fn sum_lanes_16(a: &[__m512; 16]) -> __m512 {
    // Within each 128-bit quarter: pairs of vectors → 8 vectors holding half-sums.
    let mut b = [_mm512_setzero_ps(); 8];
    for p in 0..8 {
        let (x, y) = (a[2 * p], a[2 * p + 1]);
        b[p] = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    }
    // → 4 vectors; quarter L of c[p] holds the sums over quarter L of a[4p..4p + 4].
    let mut c = [_mm512_setzero_ps(); 4];
    for p in 0..4 {
        let (x, y) = (b[2 * p], b[2 * p + 1]);
        c[p] = _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(x, y),
            _mm512_shuffle_ps::<0xEE>(x, y),
        );
    }
    // Across quarters: add quarters 0 + 1 and 2 + 3, then the two halves.
    let quarters = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(x, y),
            _mm512_shuffle_f32x4::<0xDD>(x, y),
        )
    };
    let d0 = quarters(c[0], c[1]);
    let d1 = quarters(c[2], c[3]);
    quarters(d0, d1)
}
// ANCHOR_END: sum_lanes_16

// ANCHOR: weight_grad_image
/// Output channels per tile of [`weight_grad_images`].
const WG_ROWS: usize = 3;
/// Taps of the kernels [`weight_grad_images`] handles (3 × 3).
pub(super) const WG_TAPS: usize = 9;

/// Pixels a tile of [`weight_grad_images`] should sum over before its accumulators are reduced:
/// callers pass about this many pixels' worth of images at a time.
pub(super) const WG_PIXELS: usize = 768;

/// ∂L/∂w\[o, (c, t)\] += Σₙ Σ_q ∂L/∂yₙ\[o, q\] · x̂ₙ\[(c, t), q\] for `images` consecutive images
/// and a 3 × 3 kernel: `gy` is images × O × H × W, `x` is images × C × H × W, `dw` is O × C·9
/// (row-major, accumulated into).
///
/// Here the sum runs over the pixels, so the vectors run along them: a tile is [`WG_ROWS`]
/// output channels × the 9 taps of one input channel, 27 accumulators of 16 pixels each. Both
/// operands are packed chunk by chunk (16 pixels) so that the tile's loads sit at fixed
/// distances from one pointer: ∂L/∂y once per image (`[block][chunk][row][16]`), and the 9
/// shifted, masked rows of x̂ for one input channel at a time (`[chunk][tap][16]`, 28 KB for
/// 28 × 28 pixels: it stays in L1 while every block of output channels reads it). Per chunk, 3 + 9
/// loads feed 27 FMAs; at the end of the image [`sum_lanes_16`] turns the accumulators into the
/// tile's 27 sums. Taking several small images at once (about [`WG_PIXELS`] pixels) keeps that
/// reduction rare next to the FMAs.
///
/// # Safety
/// The CPU supports AVX-512F; `s` has 3 × 3 taps; `x` holds images·C·H·W floats, `gy`
/// images·O·H·W and `dw` O·C·9.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn weight_grad_images(
    taps: &Taps,
    images: usize,
    x: *const f32,
    gy: *const f32,
    o: usize,
    dw: *mut f32,
    scratch: &mut (Aligned, Aligned),
) {
    const T: usize = WG_TAPS;
    const R: usize = WG_ROWS;
    let s = &taps.s;
    debug_assert_eq!(s.kh * s.kw, T);
    let (hw, k) = (s.h * s.w, s.k());
    let chunks = hw.div_ceil(16); // per image
    let blocks = o.div_ceil(R);
    let len = images * chunks; // chunks in all
    let (gp, xp) = scratch;
    if gp.len() < blocks * len * R * 16 {
        *gp = Aligned::zeros(blocks * len * R * 16);
    }
    if xp.len() < len * T * 16 {
        *xp = Aligned::zeros(len * T * 16);
    }
    // SAFETY (all blocks below): the packed buffers were sized just above; loads from x and gy
    // are masked to the image (the tail of the last chunk, and taps outside it).
    unsafe {
        // ∂L/∂y by blocks of R rows, then image by image and chunk by chunk; rows past O are
        // zero.
        let mut dst = gp.as_mut_ptr();
        for b in 0..blocks {
            for n in 0..images {
                for ch in 0..chunks {
                    let m = (hw - ch * 16).min(16);
                    let tail = if m == 16 { u16::MAX } else { (1u16 << m) - 1 };
                    for i in 0..R {
                        let v = if b * R + i < o {
                            let row = gy.add((n * o + b * R + i) * hw + ch * 16);
                            _mm512_maskz_loadu_ps(tail, row)
                        } else {
                            _mm512_setzero_ps()
                        };
                        _mm512_store_ps(dst, v);
                        dst = dst.add(16);
                    }
                }
            }
        }
        for c in 0..s.c {
            // The 9 shifted rows of channel c, image by image and chunk by chunk.
            let mut dst = xp.as_mut_ptr();
            for n in 0..images {
                let xc = x.add((n * s.c + c) * hw);
                for ch in 0..chunks {
                    for t in 0..T {
                        let src = xc.wrapping_offset(taps.offsets[t]).wrapping_add(ch * 16);
                        _mm512_store_ps(dst, _mm512_maskz_loadu_ps(taps.mask(ch, t), src));
                        dst = dst.add(16);
                    }
                }
            }
            for b in 0..blocks {
                let mut acc = [[_mm512_setzero_ps(); R]; T]; // acc[t][i]
                let mut g = gp.as_ptr().add(b * len * R * 16);
                let mut xr = xp.as_ptr();
                for _ in 0..len {
                    let gv: [__m512; R] = std::array::from_fn(|i| _mm512_load_ps(g.add(16 * i)));
                    for (t, acc_t) in acc.iter_mut().enumerate() {
                        let xv = _mm512_load_ps(xr.add(16 * t));
                        for (a, &gi) in acc_t.iter_mut().zip(&gv) {
                            *a = _mm512_fmadd_ps(gi, xv, *a);
                        }
                    }
                    g = g.add(R * 16);
                    xr = xr.add(T * 16);
                }
                // The 27 sums (tap-major: sum t·R + i is row i, tap t): the first 16, then the last 11
                // padded with zero vectors.
                let flat: [__m512; 32] = std::array::from_fn(|j| {
                    if j < R * T {
                        acc[j / R][j % R]
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                let mut sums = [0.0f32; 32];
                let (lo, hi) = flat.split_at(16);
                _mm512_storeu_ps(sums.as_mut_ptr(), sum_lanes_16(lo.try_into().unwrap()));
                _mm512_storeu_ps(
                    sums.as_mut_ptr().add(16),
                    sum_lanes_16(hi.try_into().unwrap()),
                );
                for i in 0..R.min(o - b * R) {
                    let row = dw.add((b * R + i) * k + c * T);
                    for t in 0..T {
                        *row.add(t) += sums[t * R + i];
                    }
                }
            }
        }
    }
}
// ANCHOR_END: weight_grad_image
