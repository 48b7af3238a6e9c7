#version 450
// Index ops along one axis of a tensor seen as (outer, axis, inner).
//   mode 0, select: y[o, i, r] = x[o, idx[i], r]                    y is (outer, count, inner)
//   mode 1, add:    y[o, j, r] = Σ_{i : idx[i] = j} x[o, i, r]      y is (outer, size, inner)
// The add form loops over all indices for each output element: no float atomics, a fixed
// summation order (so results are reproducible), and cheap for the short index lists of
// embeddings (one label per image).
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufI { uint idx[]; };
layout(std430, set = 0, binding = 2) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Params {
    uint mode;
    uint n;       // output elements
    uint size;    // extent of the axis in x (select) or in y (add)
    uint count;   // number of indices
    uint inner;
} pc;

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.n; e += step) {
        const uint r = e % pc.inner;
        if (pc.mode == 0u) {
            const uint i = (e / pc.inner) % pc.count, o = e / (pc.inner * pc.count);
            y[e] = x[(o * pc.size + idx[i]) * pc.inner + r];
        } else {
            const uint j = (e / pc.inner) % pc.size, o = e / (pc.inner * pc.size);
            float acc = 0.0;
            for (uint i = 0; i < pc.count; ++i) {
                if (idx[i] == j) acc += x[(o * pc.count + i) * pc.inner + r];
            }
            y[e] = acc;
        }
    }
}
