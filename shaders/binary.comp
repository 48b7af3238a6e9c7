#version 450
// Elementwise z = a (op) b with NumPy broadcasting. The host pads both shapes to rank 6 and
// passes, per axis, the output extent and each operand's stride, with stride 0 on a broadcast axis
// (extent 1 against a larger extent). Output is contiguous.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer BufZ { float z[]; };

#include "powf.glsl"

// ANCHOR: broadcast
#define RANK 6
layout(push_constant) uniform Params {
    uint n;              // number of output elements
    uint op;
    uint shape[RANK];    // output extents, outermost first
    uint stride_a[RANK]; // 0 where a is broadcast
    uint stride_b[RANK];
} pc;

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += step) {
        // Peel the output index into coordinates, innermost axis first, and map each
        // coordinate through the operands' strides.
        uint rest = i, ia = 0, ib = 0;
        for (int d = RANK - 1; d >= 0; --d) {
            const uint coord = rest % pc.shape[d];
            rest /= pc.shape[d];
            ia += coord * pc.stride_a[d];
            ib += coord * pc.stride_b[d];
        }
        const float u = a[ia], v = b[ib];
        float r;
        switch (pc.op) {
        case 0:  r = u + v; break;
        case 1:  r = u - v; break;
        case 2:  r = u * v; break;
        case 3:  r = u / v; break;
        // GLSL leaves max and min of a NaN undefined; these pass a NaN on, as torch.maximum does.
        case 4:  r = (v > u || isnan(v)) ? v : u; break;
        case 5:  r = (v < u || isnan(v)) ? v : u; break;
        case 6:  r = powf(u, v); break;    // C's rules for any sign of u
        // Comparisons give 1.0 where true, 0.0 elsewhere (masks for where_ and VJPs).
        case 7:  r = u > v ? 1.0 : 0.0; break;
        case 8:  r = u >= v ? 1.0 : 0.0; break;
        case 9:  r = u < v ? 1.0 : 0.0; break;
        case 10: r = u <= v ? 1.0 : 0.0; break;
        case 11: r = u == v ? 1.0 : 0.0; break;
        default: r = 0.0; break;
        }
        z[i] = r;
    }
}
// ANCHOR_END: broadcast
