#version 450
// Gradient of a convolution with respect to its weight, as an implicit GEMM whose K runs over
// every output pixel of every batch entry:
//   dW (COUT x CIN*KH*KW) = dY (COUT x N*HO*WO) . im2col(X)^T (N*HO*WO x CIN*KH*KW)
// Dispatch: (ceil(CIN*KH*KW/64), ceil(COUT/64), 1). The bias gradient is a plain reduction of dY
// over (n, h, w) and is not computed here.
#extension GL_GOOGLE_include_directive : require

layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufDy { float dy[]; };
layout(std430, set = 0, binding = 2) writeonly buffer BufDw { float dw[]; };

#include "conv_common.glsl"

uint dim_m() { return pc.COUT; }
uint dim_n() { return pc.CIN * pc.KH * pc.KW; }
uint dim_k() { return pc.N * pc.HO * pc.WO; }

float load_a(uint co, uint k) {
    const uint hw = pc.HO * pc.WO, n = k / hw, s = k % hw;
    return dy[(n * pc.COUT + co) * hw + s];
}

// im2col(X)^T[(n, oh, ow)][(ci, ki, kj)]
float load_b(uint k, uint col) {
    const uint n = k / (pc.HO * pc.WO), oh = (k / pc.WO) % pc.HO, ow = k % pc.WO;
    const uint ci = col / (pc.KH * pc.KW), ki = (col / pc.KW) % pc.KH, kj = col % pc.KW;
    uint ih, iw;
    if (!input_pixel(oh, ow, ki, kj, ih, iw)) return 0.0;
    return x[((n * pc.CIN + ci) * pc.H + ih) * pc.W + iw];
}

void store_c(uint co, uint col, float v) { dw[co * dim_n() + col] = v; }
#define A_K_FAST true
#define B_N_FAST false

#include "gemm_tile.glsl"

void main() { gemm_tile(); }
