#version 450
// The adjoint of avg_pool2d.comp (its VJP): from g, the gradient of the pooled output
// [planes, HO, WO], the gradient of the input [planes, H, W]. Gather form, one thread per input
// element: input pixel ih is in the window of output row oh when
// oh·SH − PH ≤ ih ≤ oh·SH − PH + KH − 1, a contiguous range of oh; likewise for columns. Every
// window has the divisor KH·KW (count_include_pad, no ceil_mode), as in the forward kernel.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufG { float g[]; };
layout(std430, set = 0, binding = 1) writeonly buffer BufX { float gx[]; };

layout(push_constant) uniform Params {
    uint planes, H, W, HO, WO;
    uint KH, KW, SH, SW, PH, PW;
} pc;

// The output positions whose window covers input position i: [lo, hi), possibly empty.
uvec2 covering(uint i, uint k, uint s, uint p, uint n_out) {
    const int a = int(i + p) - int(k) + 1;                       // oh·s ≥ a
    const uint lo = a <= 0 ? 0u : (uint(a) + s - 1u) / s;
    const uint hi = min((i + p) / s + 1u, n_out);                // oh·s ≤ i + p
    return uvec2(lo, max(lo, hi));
}

void main() {
    const uint n = pc.planes * pc.H * pc.W;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < n; e += stride) {
        const uint plane = e / (pc.H * pc.W), ih = (e / pc.W) % pc.H, iw = e % pc.W;
        const uvec2 rh = covering(ih, pc.KH, pc.SH, pc.PH, pc.HO);
        const uvec2 rw = covering(iw, pc.KW, pc.SW, pc.PW, pc.WO);
        float s = 0.0;
        for (uint oh = rh.x; oh < rh.y; ++oh)
            for (uint ow = rw.x; ow < rw.y; ++ow)
                s += g[(plane * pc.HO + oh) * pc.WO + ow];
        gx[e] = s / float(pc.KH * pc.KW);
    }
}
