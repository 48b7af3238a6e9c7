#version 450
// Bilinear resize with align_corners = true, as F.interpolate(mode='bilinear',
// align_corners=True): output pixel o maps to source coordinate o * (in - 1) / (out - 1), with the
// scale computed in f32 on the host as PyTorch does (0 when out == 1).
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Params {
    uint planes, H, W, HO, WO;
    float scale_h, scale_w;
} pc;

void main() {
    const uint n = pc.planes * pc.HO * pc.WO;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < n; i += stride) {
        const uint plane = i / (pc.HO * pc.WO), oh = (i / pc.WO) % pc.HO, ow = i % pc.WO;
        const float sh = pc.scale_h * float(oh), sw = pc.scale_w * float(ow);
        const uint h0 = min(uint(sh), pc.H - 1), w0 = min(uint(sw), pc.W - 1);
        const uint h1 = min(h0 + 1, pc.H - 1), w1 = min(w0 + 1, pc.W - 1);
        const float lh = sh - float(h0), lw = sw - float(w0);
        const uint base = plane * pc.H * pc.W;
        const float top = (1.0 - lw) * x[base + h0 * pc.W + w0] + lw * x[base + h0 * pc.W + w1];
        const float bot = (1.0 - lw) * x[base + h1 * pc.W + w0] + lw * x[base + h1 * pc.W + w1];
        y[i] = (1.0 - lh) * top + lh * bot;
    }
}
