#version 450
// One Langevin step in place: x <- x + (alpha / 2) s + sqrt(alpha) z, z ~ N(0, I) drawn here from
// Philox with key = seed and counter = (element / 4, 0, step_lo, step_hi). The noise for step t is
// therefore exactly `randn(seed, t)`: a loop of T steps needs no host round trip and is
// reproducible from (seed, t) alone.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufS { float s[]; };

layout(push_constant) uniform Params {
    uint n;
    float alpha;
    uint seed_lo, seed_hi;   // the key
    uint step_lo, step_hi;   // the step counter
} pc;

#include "philox.glsl"

// ANCHOR: langevin
void main() {
    const uint blocks = (pc.n + 3) / 4;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    const float half_alpha = 0.5 * pc.alpha, noise = sqrt(pc.alpha);
    for (uint j = gl_GlobalInvocationID.x; j < blocks; j += stride) {
        const vec4 z = normals_from_bits(philox4x32_10(uvec4(j, 0u, pc.step_lo, pc.step_hi),
                                                   uvec2(pc.seed_lo, pc.seed_hi)));
        for (uint l = 0; l < 4; ++l) {
            const uint i = 4 * j + l;
            if (i < pc.n) x[i] = x[i] + half_alpha * s[i] + noise * z[l];
        }
    }
}
// ANCHOR_END: langevin
