#version 450
// z = m != 0 ? a : b elementwise, all three broadcast NumPy-style to the output shape (the
// host passes per-axis strides with 0 on broadcast axes, as in binary.comp). Only the chosen
// operand is read, so an inf or NaN in the other branch does not leak into the result.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufM { float m[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufA { float a[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufB { float b[]; };
layout(std430, set = 0, binding = 3) writeonly buffer BufZ { float z[]; };

#define RANK 6
layout(push_constant) uniform Params {
    uint n;
    uint shape[RANK];
    uint stride_m[RANK];
    uint stride_a[RANK];
    uint stride_b[RANK];
} pc;

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += step) {
        uint rest = i, im = 0, ia = 0, ib = 0;
        for (int d = RANK - 1; d >= 0; --d) {
            const uint c = rest % pc.shape[d];
            rest /= pc.shape[d];
            im += c * pc.stride_m[d];
            ia += c * pc.stride_a[d];
            ib += c * pc.stride_b[d];
        }
        z[i] = m[im] != 0.0 ? a[ia] : b[ib];
    }
}
