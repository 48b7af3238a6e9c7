#version 450
// Strided copy: y[dst_off + Σ c_d·dst_stride_d] = x[src_off + Σ c_d·src_stride_d] for every
// coordinate c of `shape`. One kernel serves every movement op of the Tensor API: broadcast_to
// (source stride 0 on broadcast axes), permute (permuted source strides), narrow (a source offset),
// and pad and concat (a destination offset and the destination's strides). Grid-stride loop.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) buffer BufY { float y[]; };

#define RANK 6
layout(push_constant) uniform Params {
    uint n;                 // number of elements copied (the product of shape)
    uint src_off;
    uint dst_off;
    uint shape[RANK];       // outermost first, padded in front with 1
    uint src_stride[RANK];
    uint dst_stride[RANK];
} pc;

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += step) {
        uint rest = i, is = pc.src_off, id = pc.dst_off;
        for (int d = RANK - 1; d >= 0; --d) {
            const uint c = rest % pc.shape[d];
            rest /= pc.shape[d];
            is += c * pc.src_stride[d];
            id += c * pc.dst_stride[d];
        }
        y[id] = x[is];
    }
}
