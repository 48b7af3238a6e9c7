#version 450
// Counter-based random numbers. Block j (four outputs) uses counter (c0 + j, c1, c2, c3) and
// key (k0, k1). Mode 0 writes the raw Philox words, mode 1 standard normals (as f32 bits).
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) writeonly buffer BufOut { uint out_words[]; };

layout(push_constant) uniform Params {
    uint n;                  // number of outputs (need not be a multiple of 4)
    uint mode;               // 0 raw bits, 1 normals
    uint c0, c1, c2, c3;     // counter of block 0 (scalars: no std430 vector padding)
    uint k0, k1;             // key
} pc;

#include "philox.glsl"

void main() {
    const uint blocks = (pc.n + 3) / 4;
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint j = gl_GlobalInvocationID.x; j < blocks; j += step) {
        const uvec4 bits = philox4x32_10(uvec4(pc.c0 + j, pc.c1, pc.c2, pc.c3), uvec2(pc.k0, pc.k1));
        const uvec4 words = pc.mode == 0 ? bits : floatBitsToUint(normals_from_bits(bits));
        for (uint l = 0; l < 4; ++l) {
            if (4 * j + l < pc.n) out_words[4 * j + l] = words[l];
        }
    }
}
