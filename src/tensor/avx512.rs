//! What the AVX-512 kernels ([`conv_same`](super::conv_same), [`small_gemm`](super::small_gemm))
//! share: the check that the CPU can run them, and a buffer of floats aligned to cache lines.

/// Whether this CPU supports AVX-512F (checked once by the standard library, then a load).
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// One cache line: 16 floats, 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

/// A buffer of floats that starts on a cache line, so that the kernels' vector loads never
/// straddle two lines, and whose aligned loads and stores are legal.
pub(super) struct Aligned(Vec<Line>);

impl Aligned {
    /// An empty buffer (for a `const` initialiser).
    pub(super) const fn new() -> Self {
        Aligned(Vec::new())
    }
    /// Room for at least `n` floats, all zero.
    pub(super) fn zeros(n: usize) -> Self {
        Aligned(vec![Line([0.0; 16]); n.div_ceil(16)])
    }
    /// Grows the buffer to room for at least `n` floats; what it held stays, new room is zero.
    pub(super) fn grow(&mut self, n: usize) {
        if self.len() < n {
            self.0.resize(n.div_ceil(16), Line([0.0; 16]));
        }
    }
    pub(super) fn as_ptr(&self) -> *const f32 {
        self.0.as_ptr() as *const f32
    }
    pub(super) fn as_mut_ptr(&mut self) -> *mut f32 {
        self.0.as_mut_ptr() as *mut f32
    }
    pub(super) fn len(&self) -> usize {
        self.0.len() * 16
    }
}
