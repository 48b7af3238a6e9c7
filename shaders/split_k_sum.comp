#version 450
// The second half of a split-K GEMM: y[i] = p[0][i] + p[1][i] + ... + p[SPLITS-1][i], summed in
// that order, so the result does not depend on how the device schedules the first half.
// Dispatch: a grid-stride loop over the LEN outputs, 256 threads per workgroup.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufP { float p[]; };
layout(std430, set = 0, binding = 1) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Params {
    uint LEN, SPLITS;
} pc;

// ANCHOR: sum
void main() {
    for (uint i = gl_GlobalInvocationID.x; i < pc.LEN; i += gl_NumWorkGroups.x * 256) {
        float s = p[i];
        for (uint z = 1; z < pc.SPLITS; ++z) s += p[z * pc.LEN + i];
        y[i] = s;
    }
}
// ANCHOR_END: sum
