#version 450
// Reduce over any set of axes (sum, mean or max). The host splits the input's axes into kept and
// reduced ones, merges neighbours of the same kind, and pads each list to rank 6 with extent 1.
// One workgroup per output element (grid-stride over outputs): its 256 threads stride over the
// reduced elements, then combine their partial results in shared memory.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer BufY { float y[]; };

#define RANK 6
layout(push_constant) uniform Params {
    uint n_out, n_red;
    uint op;                  // 0 sum, 1 mean, 2 max
    uint kept_shape[RANK], kept_stride[RANK];
    uint red_shape[RANK], red_stride[RANK];
} pc;

shared float partial[256];

// For max, a NaN wins (as torch.amax); GLSL's max(u, NaN) is undefined.
float combine(float u, float v) { return pc.op == 2 ? ((v > u || isnan(v)) ? v : u) : u + v; }

// ANCHOR: tree
// Tree reduction of partial[0..256) into partial[0]: halve the active threads each round.
void reduce_shared() {
    const uint t = gl_LocalInvocationID.x;
    for (uint width = 128; width > 0; width >>= 1) {
        barrier();
        if (t < width) partial[t] = combine(partial[t], partial[t + width]);
    }
    barrier();
}
// ANCHOR_END: tree

void main() {
    const uint t = gl_LocalInvocationID.x;
    const float init = pc.op == 2 ? uintBitsToFloat(0xff800000u) : 0.0;   // -inf for max
    for (uint o = gl_WorkGroupID.x; o < pc.n_out; o += gl_NumWorkGroups.x) {
        uint base = 0, rest = o;
        for (int d = RANK - 1; d >= 0; --d) {
            base += (rest % pc.kept_shape[d]) * pc.kept_stride[d];
            rest /= pc.kept_shape[d];
        }
        float acc = init;
        for (uint j = t; j < pc.n_red; j += 256) {
            uint off = 0, r = j;
            for (int d = RANK - 1; d >= 0; --d) {
                off += (r % pc.red_shape[d]) * pc.red_stride[d];
                r /= pc.red_shape[d];
            }
            acc = combine(acc, x[base + off]);
        }
        partial[t] = acc;
        reduce_shared();
        if (t == 0) y[o] = pc.op == 1 ? partial[0] / float(pc.n_red) : partial[0];
        barrier();   // partial[0] is read before the next output overwrites it
    }
}
