#version 450
// Gradient of a convolution with respect to its weight, as an implicit GEMM whose K runs over
// every output pixel of every batch entry:
//   dW (COUT x CIN*KH*KW) = dY (COUT x N*HO*WO) . im2col(X)^T (N*HO*WO x CIN*KH*KW)
// K is long (every output pixel of the batch: 131072 for a 32 x 32 CIFAR-10 batch of 128) while
// dW has few 128 x 128 tiles (9 for a 128 -> 128 channel 3 x 3 convolution), so the sum is split:
// workgroup z sums K's stretch [z K_CHUNK, (z + 1) K_CHUNK) into slice z of the output buffer,
// SPLITS x COUT x CIN*KH*KW, and split_k_sum.comp adds the slices in order (with one split, the
// slice is dW itself).
// Dispatch: (ceil(CIN*KH*KW/128), ceil(COUT/128), SPLITS). The bias gradient is a plain reduction
// of dY over (n, h, w) and is not computed here.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "float_controls.glsl"

layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufDy { float dy[]; };
layout(std430, set = 0, binding = 2) writeonly buffer BufDw { float dw[]; };

#include "conv_common.glsl"

uint dim_m() { return pc.COUT; }
uint dim_n() { return pc.CIN * pc.KH * pc.KW; }
uint dim_k() { return pc.N * pc.HO * pc.WO; }

float load_a(uint co, uint k) {
    const uint hw = pc.HO * pc.WO;
    uint s;
    const uint n = div_rem(k, hw, pc.OUT_HW_M, pc.OUT_HW_S, s);
    return dy[(n * pc.COUT + co) * hw + s];
}

// im2col(X)^T[(n, oh, ow)][(ci, ki, kj)]
float load_b(uint k, uint col) {
    uint n, oh, ow, ci, ki, kj, ih, iw;
    split_out_pixel(k, n, oh, ow);
    split_tap(col, ci, ki, kj);
    if (!input_pixel(oh, ow, ki, kj, ih, iw)) return 0.0;
    return x[((n * pc.CIN + ci) * pc.H + ih) * pc.W + iw];
}

void store_c(uint co, uint col, float v) {
    dw[(gl_WorkGroupID.z * pc.COUT + co) * dim_n() + col] = v;
}
#define A_K_FAST true
#define B_N_FAST false

#include "gemm_tile.glsl"

// ANCHOR: split_k
void main() {
    const uint k_begin = gl_WorkGroupID.z * pc.K_CHUNK;
    gemm_tile_k(k_begin, min(k_begin + pc.K_CHUNK, dim_k()));
}
// ANCHOR_END: split_k
