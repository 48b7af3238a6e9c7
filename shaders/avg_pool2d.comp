#version 450
// 2-d average pooling, NCHW, zero padding counted in the divisor (PyTorch's AvgPool2d defaults:
// count_include_pad = true, ceil_mode = false, so every window lies inside the padded input and
// the divisor is always KH * KW). One thread per output element.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Params {
    uint planes, H, W, HO, WO;    // planes = N * C
    uint KH, KW, SH, SW, PH, PW;
} pc;

void main() {
    const uint n = pc.planes * pc.HO * pc.WO;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < n; i += stride) {
        const uint plane = i / (pc.HO * pc.WO), oh = (i / pc.WO) % pc.HO, ow = i % pc.WO;
        float s = 0.0;
        for (uint ki = 0; ki < pc.KH; ++ki) {
            const int ih = int(oh * pc.SH + ki) - int(pc.PH);
            if (ih < 0 || ih >= int(pc.H)) continue;
            for (uint kj = 0; kj < pc.KW; ++kj) {
                const int iw = int(ow * pc.SW + kj) - int(pc.PW);
                if (iw < 0 || iw >= int(pc.W)) continue;
                s += x[(plane * pc.H + uint(ih)) * pc.W + uint(iw)];
            }
        }
        y[i] = s / float(pc.KH * pc.KW);
    }
}
