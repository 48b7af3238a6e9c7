#version 450
// Gradient of a convolution with respect to its input, as an implicit GEMM that only gathers:
//   dX (CIN x N*H*W) = A (CIN x COUT*KH*KW) . B (COUT*KH*KW x N*H*W)
// with A[ci][(co, ki, kj)] = Wt[co][ci][ki][kj] and B[(co, ki, kj)][(n, ih, iw)] = dY[n][co][oh][ow]
// for the output pixel (oh, ow) whose tap (ki, kj) reads (ih, iw), or 0 if there is none.
// Each dX entry is written once, so no atomics are needed (a col2im scatter would need them).
// With stride s, most taps miss (only 1 in s*s hits): the price of gathering.
// Dispatch: (ceil(N*H*W/128), ceil(CIN/128), 1).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "float_controls.glsl"

layout(std430, set = 0, binding = 0) readonly buffer BufDy { float dy[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufW { float wt[]; };
layout(std430, set = 0, binding = 2) writeonly buffer BufDx { float dx[]; };

#include "conv_common.glsl"

uint dim_m() { return pc.CIN; }
uint dim_n() { return pc.N * pc.H * pc.W; }
uint dim_k() { return pc.COUT * pc.KH * pc.KW; }

float load_a(uint ci, uint k) {
    const uint taps = pc.KH * pc.KW;
    uint r;
    const uint co = div_rem(k, taps, pc.TAPS_M, pc.TAPS_S, r);
    return wt[(co * pc.CIN + ci) * taps + r];
}

// ANCHOR: gather
float load_b(uint k, uint col) {
    uint co, ki, kj, n, ih, iw;
    split_tap(k, co, ki, kj);
    split_in_pixel(col, n, ih, iw);
    // Invert ih = oh * SH + ki * DH - PH: the output row must be a whole number in range. (A
    // stride of 1, the common case, divides nothing; the test is the same for the whole dispatch.)
    const int th = int(ih + pc.PH) - int(ki * pc.DH);
    const int tw = int(iw + pc.PW) - int(kj * pc.DW);
    if (th < 0 || tw < 0) return 0.0;
    uint oh = uint(th), ow = uint(tw);
    if (pc.SH != 1u) {
        if (oh % pc.SH != 0u) return 0.0;
        oh /= pc.SH;
    }
    if (pc.SW != 1u) {
        if (ow % pc.SW != 0u) return 0.0;
        ow /= pc.SW;
    }
    if (oh >= pc.HO || ow >= pc.WO) return 0.0;
    return dy[((n * pc.COUT + co) * pc.HO + oh) * pc.WO + ow];
}
// ANCHOR_END: gather

void store_c(uint ci, uint col, float v) {
    const uint hw = pc.H * pc.W;
    uint s;
    const uint n = div_rem(col, hw, pc.IN_HW_M, pc.IN_HW_S, s);
    dx[(n * pc.CIN + ci) * hw + s] = v;
}
#define A_K_FAST true
#define B_N_FAST true

#include "gemm_tile.glsl"

void main() { gemm_tile(); }
