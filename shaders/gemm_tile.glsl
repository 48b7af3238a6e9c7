// The tiled GEMM main loop, shared by gemm.comp and the three convolution kernels.
//
// Each workgroup of 16 x 16 threads computes one BM x BN = 128 x 128 block of C = A . B, where A is
// M x K and B is K x N *as seen through index functions*: the including shader defines
//
//   float load_a(uint m, uint k);      // A[m][k], only called with m < M and k < K
//   float load_b(uint k, uint n);      // B[k][n], only called with k < K and n < N
//   void  store_c(uint m, uint n, float v);
//   uint  dim_m(); uint dim_n(); uint dim_k();
//   A_K_FAST, B_N_FAST                 // bool expressions: which index is contiguous in memory
//
// For a plain GEMM these read row-major matrices; for a convolution they decode an im2col index
// on the fly ("implicit GEMM"), so the unfolded matrix never exists in memory.
//
// Every thread owns an 8 x 8 micro-tile of C in registers: rows 4 ty + i and 64 + 4 ty + i, and
// columns 4 tx + j and 64 + 4 tx + j (i, j < 4), so that it reads its 8 values of A and of B for
// one k as two vec4s each from shared memory. Tiles that hang over the edge of A, B or C are
// zero-filled on load and masked on store, so any M, N, K work.
//
// The fixed-trip loops carry [[unroll]] (GL_EXT_control_flow_attributes, enabled by the including
// shader): the 64 accumulators stay in registers only if every index into acc is a constant, and
// the hint puts that in the SPIR-V instead of leaving it to the driver's compiler.
//
// gemm_tile_k(k_begin, k_end) sums only the products over k in [k_begin, k_end) (split-K: several
// workgroups share one tile of C, each over its own stretch of K, and a second kernel adds their
// partial tiles); gemm_tile() is the whole sum.

// ANCHOR: tile
#define BM 128
#define BN 128
#define BK 8
#define TM 8
#define TN 8

layout(local_size_x = 16, local_size_y = 16, local_size_z = 1) in;

// K-major tiles of vec4s: a_tile[k][q] holds rows 4q .. 4q + 3 of column k of the A block, and
// b_tile[k][q] columns 4q .. 4q + 3 of row k of the B block. The padding of one vec4 puts the
// rows 132 floats apart, which spreads the stores of a warp over all 32 banks.
shared vec4 a_tile[BK][BM / 4 + 1];
shared vec4 b_tile[BK][BN / 4 + 1];

// The row (or column) of the block that element r < 8 of a thread's micro-tile lies in.
uint micro(uint t, uint r) { return (r < 4 ? 0 : 64) + 4 * t + (r & 3); }

void gemm_tile_k(uint k_begin, uint k_end) {
    const uint tx = gl_LocalInvocationID.x;   // 0..15, along N
    const uint ty = gl_LocalInvocationID.y;   // 0..15, along M
    const uint tid = ty * 16 + tx;            // 0..255
    const uint m0 = gl_WorkGroupID.y * BM;
    const uint n0 = gl_WorkGroupID.x * BN;
    const uint M = dim_m(), N = dim_n();

    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; ++i)
        [[unroll]] for (uint j = 0; j < TN; ++j)
            acc[i][j] = 0.0;

    for (uint k0 = k_begin; k0 < k_end; k0 += BK) {
        // Stage 1: 256 threads copy a 128 x 8 tile of A and an 8 x 128 tile of B into shared
        // memory, 4 elements each. Neighbouring threads read neighbouring addresses.
        [[unroll]] for (uint p = 0; p < (BM * BK) / 256; ++p) {
            const uint l = tid + 256 * p;
            const uint r = A_K_FAST ? l / BK : l % BM;   // row in the tile (m)
            const uint c = A_K_FAST ? l % BK : l / BM;   // column in the tile (k)
            const uint m = m0 + r, k = k0 + c;
            a_tile[c][r / 4][r % 4] = (m < M && k < k_end) ? load_a(m, k) : 0.0;
        }
        [[unroll]] for (uint p = 0; p < (BK * BN) / 256; ++p) {
            const uint l = tid + 256 * p;
            const uint r = B_N_FAST ? l / BN : l % BK;   // row in the tile (k)
            const uint c = B_N_FAST ? l % BN : l / BK;   // column in the tile (n)
            const uint k = k0 + r, n = n0 + c;
            b_tile[r][c / 4][c % 4] = (k < k_end && n < N) ? load_b(k, n) : 0.0;
        }
        barrier();

        // Stage 2: each thread does an 8 x 8 outer product per k, from registers, after four
        // vec4 reads of shared memory (16 multiply-adds per read).
        [[unroll]] for (uint k = 0; k < BK; ++k) {
            const vec4 a_lo = a_tile[k][ty], a_hi = a_tile[k][16 + ty];
            const vec4 b_lo = b_tile[k][tx], b_hi = b_tile[k][16 + tx];
            const float a_reg[TM] = float[TM](a_lo.x, a_lo.y, a_lo.z, a_lo.w,
                                              a_hi.x, a_hi.y, a_hi.z, a_hi.w);
            const float b_reg[TN] = float[TN](b_lo.x, b_lo.y, b_lo.z, b_lo.w,
                                              b_hi.x, b_hi.y, b_hi.z, b_hi.w);
            [[unroll]] for (uint i = 0; i < TM; ++i)
                [[unroll]] for (uint j = 0; j < TN; ++j)
                    acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]);
        }
        barrier();   // everyone is done reading before the next tile overwrites shared memory
    }

    [[unroll]] for (uint i = 0; i < TM; ++i) {
        [[unroll]] for (uint j = 0; j < TN; ++j) {
            const uint m = m0 + micro(ty, i), n = n0 + micro(tx, j);
            if (m < M && n < N) store_c(m, n, acc[i][j]);
        }
    }
}
// ANCHOR_END: tile

void gemm_tile() { gemm_tile_k(0, dim_k()); }
