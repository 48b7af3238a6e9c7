#version 450
// Embedding gather: y[i, :] = table[idx[i], :], table is ROWS x DIM. An index past the table
// reads zeros (the host refuses such indices, so this is only a guard).
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufT { float table[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufI { uint idx[]; };
layout(std430, set = 0, binding = 2) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Params { uint count, dim, rows; } pc;

void main() {
    const uint n = pc.count * pc.dim;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < n; i += stride) {
        const uint row = idx[i / pc.dim];
        y[i] = row < pc.rows ? table[row * pc.dim + i % pc.dim] : 0.0;
    }
}
