#version 450
// Batched GEMM: C[b] = op(A[b]) . op(B[b]) with op = identity or transpose, all row-major.
// op(A) is M x K, op(B) is K x N, C is M x N. A batch stride of 0 reuses one matrix for every
// batch entry (a broadcast weight). Dispatch: (ceil(N/128), ceil(M/128), batch).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "float_controls.glsl"

layout(std430, set = 0, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer BufC { float c[]; };

// ANCHOR: params
layout(push_constant) uniform Params {
    uint M, N, K;
    uint trans_a, trans_b;                      // 0 or 1
    uint stride_a, stride_b, stride_c;          // elements between batch entries
} pc;

uint dim_m() { return pc.M; }
uint dim_n() { return pc.N; }
uint dim_k() { return pc.K; }

// op(A)[m][k]: A is stored M x K, or K x M when transposed.
float load_a(uint m, uint k) {
    const uint base = gl_WorkGroupID.z * pc.stride_a;
    return pc.trans_a == 0 ? a[base + m * pc.K + k] : a[base + k * pc.M + m];
}
// op(B)[k][n]: B is stored K x N, or N x K when transposed.
float load_b(uint k, uint n) {
    const uint base = gl_WorkGroupID.z * pc.stride_b;
    return pc.trans_b == 0 ? b[base + k * pc.N + n] : b[base + n * pc.K + k];
}
void store_c(uint m, uint n, float v) {
    c[gl_WorkGroupID.z * pc.stride_c + m * pc.N + n] = v;
}
#define A_K_FAST (pc.trans_a == 0)
#define B_N_FAST (pc.trans_b == 0)
// ANCHOR_END: params

#include "gemm_tile.glsl"

void main() { gemm_tile(); }
