#version 450
// Convolution forward as an implicit GEMM:
//   Y (COUT x N*HO*WO) = Wt (COUT x CIN*KH*KW) . im2col(X) (CIN*KH*KW x N*HO*WO) [+ bias]
// The im2col matrix is never stored: load_b computes its entries from X on the fly.
// Dispatch: (ceil(N*HO*WO/128), ceil(COUT/128), 1).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "float_controls.glsl"

layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufW { float wt[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufBias { float bias[]; };
layout(std430, set = 0, binding = 3) writeonly buffer BufY { float y[]; };

#include "conv_common.glsl"

uint dim_m() { return pc.COUT; }
uint dim_n() { return pc.N * pc.HO * pc.WO; }
uint dim_k() { return pc.CIN * pc.KH * pc.KW; }

// ANCHOR: loads
float load_a(uint co, uint k) { return wt[co * dim_k() + k]; }

// im2col(X)[k][col] with k = (ci, ki, kj) and col = (n, oh, ow).
float load_b(uint k, uint col) {
    uint ci, ki, kj, n, oh, ow, ih, iw;
    split_tap(k, ci, ki, kj);
    split_out_pixel(col, n, oh, ow);
    if (!input_pixel(oh, ow, ki, kj, ih, iw)) return 0.0;
    return x[((n * pc.CIN + ci) * pc.H + ih) * pc.W + iw];
}

void store_c(uint co, uint col, float v) {
    const uint hw = pc.HO * pc.WO;
    uint s;
    const uint n = div_rem(col, hw, pc.OUT_HW_M, pc.OUT_HW_S, s);
    y[(n * pc.COUT + co) * hw + s] = v + (pc.HAS_BIAS != 0 ? bias[co] : 0.0);
}
// ANCHOR_END: loads
#define A_K_FAST true
#define B_N_FAST true

#include "gemm_tile.glsl"

void main() { gemm_tile(); }
