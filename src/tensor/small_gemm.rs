//! Small matrix products on x86-64 with AVX-512: the toy score network's 64 × 128 × 128.
//!
//! `matrixmultiply::sgemm` serves every size with one scheme: pack both operands into panels,
//! then run a 16 × 16 micro-kernel over C. For a product of about a million multiply-adds its
//! costs show: packing copies A and B in full on every call (the 128 × 128 weight, every time),
//! and the kernel issues 17 loads (one vector of B, sixteen broadcasts of A) for its 16
//! multiply-adds. The scheme here is narrower, for products of one thread's size:
//!
//! - **B is packed, A is not.** B's columns are cut into panels of 64; a panel is stored as k
//!   rows of 64 contiguous floats ([`PackedB`]). A row-major B is copied with one masked vector
//!   load and store per 16 floats; a column-major one — the transposed weight `w.t()` of a linear
//!   layer — is transposed 16 × 16 blocks at a time in registers. A is read where it lies: the
//!   kernel broadcasts single elements, which costs the same for any stride.
//!
//!   Why pack B at all: read in place, row k of a 128-column B is 512 bytes from row k + 1, and
//!   a 64-column panel of it then falls into half of L1's 64 sets (each row's 4 lines start 8
//!   lines after the last row's) — 16 lines a set, more than those sets hold — so the panel is re-read from L2 for every tile. Packed, it is 32 KiB in a row and
//!   stays in L1 while all of A passes over it.
//! - **The micro-kernel** keeps a tile of [`MR`] = 4 rows × 64 columns of C in 16 of AVX-512's
//!   32 vector registers. Step k loads the panel's row k (four vectors) and broadcasts A[i, k]
//!   for the four rows: 16 fused multiply-adds for 8 loads, so the two FMA units, not the load
//!   ports, set the pace.
//!
//! Each entry of C is one chain of fused multiply-adds over k = 0, 1, …, K − 1 in order — as in
//! `sgemm`'s kernel when K fits its depth block (256) — so the two give the same bits for the
//! products this path takes (`tests/tensor.rs` checks it).

use super::avx512::Aligned;
use std::arch::x86_64::*;

/// Rows of C per tile.
const MR: usize = 4;
/// 16-lane vectors per tile row: 64 columns.
const NV: usize = 4;
/// Columns of C per tile.
const NR: usize = 16 * NV;

// ANCHOR: small_gemm_kernel
/// One tile: C[i, j] = Σₖ A[i, k]·B[k, j] for i < `rows` (≤ MR) and the columns j < `cols`
/// (≤ 64) of one packed panel of B (`k` rows of 64 floats).
///
/// # Safety
/// The CPU supports AVX-512F. For i < `rows` and kk < `k`, `a + i·rsa + kk·csa` is readable;
/// `panel` holds k·64 floats and is 64-byte aligned; for i < `rows`, `c + i·ldc` has `cols`
/// writable floats.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    k: usize,
    a: *const f32,
    (rsa, csa): (isize, isize),
    rows: usize,
    panel: *const f32,
    cols: usize,
    c: *mut f32,
    ldc: usize,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        // Rows past `rows` (the last tile of a short matrix) repeat the last real row: their
        // sums are computed and never stored, so every step runs the same 16 FMAs.
        let a_row: [*const f32; MR] =
            std::array::from_fn(|i| a.wrapping_offset(i.min(rows - 1) as isize * rsa));
        for kk in 0..k {
            let b_row = panel.add(kk * NR);
            let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_load_ps(b_row.add(16 * v)));
            for i in 0..MR {
                let ai = _mm512_set1_ps(*a_row[i].offset(kk as isize * csa));
                for v in 0..NV {
                    acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
                }
            }
        }
        let mask = if cols == NR {
            u64::MAX
        } else {
            (1u64 << cols) - 1
        };
        for (i, acc_i) in acc.iter().enumerate().take(rows) {
            let c_row = c.add(i * ldc);
            for (v, acc_iv) in acc_i.iter().enumerate() {
                let lanes = (mask >> (16 * v)) as u16;
                _mm512_mask_storeu_ps(c_row.wrapping_add(16 * v), lanes, *acc_iv);
            }
        }
    }
}
// ANCHOR_END: small_gemm_kernel

/// B packed for [`gemm`]: its columns in panels of 64, each panel `k` rows of 64 contiguous
/// floats, 64-byte aligned. In the last panel, the columns past n hold whatever an earlier
/// product left there: the kernel multiplies them into lanes it never stores, and a vector's
/// lanes never mix, so they cannot reach C.
pub(super) struct PackedB {
    k: usize,
    n: usize,
    data: Aligned,
}

impl PackedB {
    /// An empty buffer, to be filled by [`PackedB::pack`] (and kept between calls, so that the
    /// next product of the same size allocates nothing).
    pub(super) const fn new() -> Self {
        PackedB {
            k: 0,
            n: 0,
            data: Aligned::new(),
        }
    }

    // ANCHOR: pack_b
    /// Packs the k × n matrix B whose element (kk, j) is at `b + kk·rs + j·cs`. Rows of B that
    /// are contiguous (`cs` = 1) are copied a panel row at a time; columns that are contiguous
    /// (`rs` = 1: a transposed weight) are transposed 16 × 16 blocks at a time in registers;
    /// any other strides are read one element at a time.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; for kk < k and j < n, `b + kk·rs + j·cs` is readable.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack(
        &mut self,
        (k, n): (usize, usize),
        b: *const f32,
        (rs, cs): (isize, isize),
    ) {
        self.data.grow(n.div_ceil(NR) * k * NR);
        (self.k, self.n) = (k, n);
        let dst = self.data.as_mut_ptr();
        let at = |kk: usize, j: usize| b.wrapping_offset(kk as isize * rs + j as isize * cs);
        // Where element (kk, j) goes: panel j / 64, row kk, column j % 64.
        let to = |kk: usize, j: usize| dst.wrapping_add((j / NR) * k * NR + kk * NR + j % NR);
        // SAFETY (all three branches): reads stay inside B by the caller's promise (the masks
        // cut the vector loads at column n or row k); writes stay inside the buffer just
        // sized, and the aligned stores land on whole lines.
        unsafe {
            if cs == 1 {
                for kk in 0..k {
                    for j0 in (0..n).step_by(16) {
                        let lanes = if n - j0 >= 16 {
                            u16::MAX
                        } else {
                            (1u16 << (n - j0)) - 1
                        };
                        _mm512_store_ps(to(kk, j0), _mm512_maskz_loadu_ps(lanes, at(kk, j0)));
                    }
                }
            } else if rs == 1 {
                // Bᵀ is row-major (n × k, rows `cs` apart): transpose it block by block.
                for j0 in (0..n).step_by(16) {
                    let nj = (n - j0).min(16);
                    for k0 in (0..k).step_by(16) {
                        let nk = (k - k0).min(16);
                        let lanes = if nk == 16 { u16::MAX } else { (1u16 << nk) - 1 };
                        let rows: [__m512; 16] = std::array::from_fn(|t| {
                            if t < nj {
                                _mm512_maskz_loadu_ps(lanes, at(k0, j0 + t))
                            } else {
                                _mm512_setzero_ps()
                            }
                        });
                        for (t, row) in transpose_16(rows).iter().enumerate().take(nk) {
                            // Row k0 + t of B, columns j0..j0 + 16 (zero past column n).
                            _mm512_store_ps(to(k0 + t, j0), *row);
                        }
                    }
                }
            } else {
                for kk in 0..k {
                    for j in 0..n {
                        *to(kk, j) = *at(kk, j);
                    }
                }
            }
        }
    }
    // ANCHOR_END: pack_b
}

/// C = A·B for an m × k A with strides `a_strides` (any, including 0 or negative) and the B last
/// packed into `b`, into the row-major m × n C at `c`.
///
/// # Safety
/// The CPU supports AVX-512F; A's m·k elements are readable at those strides; `c` has room for
/// m·n floats.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gemm(
    m: usize,
    a: *const f32,
    a_strides: (isize, isize),
    b: &PackedB,
    c: *mut f32,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    let packed = b.data.as_ptr();
    for j0 in (0..n).step_by(NR) {
        let panel = packed.wrapping_add((j0 / NR) * k * NR);
        for i0 in (0..m).step_by(MR) {
            // SAFETY: rows i0.. of A and C and the panel of columns j0..: the tile reads rows
            // < m of A, the packed panel, and writes rows < m, columns < n of C.
            unsafe {
                tile(
                    k,
                    a.wrapping_offset(i0 as isize * a_strides.0),
                    a_strides,
                    (m - i0).min(MR),
                    panel,
                    (n - j0).min(NR),
                    c.add(i0 * n + j0),
                    n,
                );
            }
        }
    }
}

/// The transpose of a 16 × 16 block held as sixteen row vectors: element j of `out[i]` is
/// element i of `r[j]`. Three rounds of shuffles: 32-bit interleaves, then 64-bit, then 128-bit
/// lanes.
#[target_feature(enable = "avx512f")]
fn transpose_16(r: [__m512; 16]) -> [__m512; 16] {
    // Round 1, within each 128-bit lane L: t[2m] = rows 2m, 2m+1 at columns 4L, 4L+1,
    // interleaved; t[2m+1] the same at columns 4L+2, 4L+3.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (x, y) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(x, y)
        } else {
            _mm512_unpackhi_ps(x, y)
        }
    });
    // Round 2: u[4q + c] holds, in lane L, rows 4q..4q+3 of column 4L + c.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (q, c) = (i / 4, i % 4);
        let (x, y) = (t[4 * q + c / 2], t[4 * q + 2 + c / 2]);
        if c % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(x, y)
        } else {
            _mm512_shuffle_ps::<0xEE>(x, y)
        }
    });
    // Round 3: column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]); // lanes 0, 2 of each
        let v1 = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]); // lanes 1, 3
        let w0 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(v0, w0); //       lane 0
        out[8 + c] = _mm512_shuffle_f32x4::<0xDD>(v0, w0); //   lane 2
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(v1, w1); //   lane 1
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(v1, w1); //  lane 3
    }
    out
}
