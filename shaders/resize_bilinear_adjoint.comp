#version 450
// The adjoint of resize_bilinear.comp (its VJP): from g [planes, HO, WO], the gradient of the
// input [planes, H, W]. Gather form, one thread per input element: it sums g over the output
// pixels whose bilinear stencil touches it, with the stencil's weight, computed by the very
// formula of the forward kernel, so this kernel is that kernel's exact transpose.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufG { float g[]; };
layout(std430, set = 0, binding = 1) writeonly buffer BufX { float gx[]; };

layout(push_constant) uniform Params {
    uint planes, H, W, HO, WO;
    float scale_h, scale_w;
} pc;

// The weight of input position i in the stencil of output position o along one axis.
float tap(uint o, uint i, float scale, uint size) {
    const float src = scale * float(o);
    const uint i0 = min(uint(src), size - 1), i1 = min(i0 + 1, size - 1);
    const float l = src - float(i0);
    return (i0 == i ? 1.0 - l : 0.0) + (i1 == i ? l : 0.0);
}

void main() {
    const uint n = pc.planes * pc.H * pc.W;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < n; e += stride) {
        const uint plane = e / (pc.H * pc.W), ih = (e / pc.W) % pc.H, iw = e % pc.W;
        float s = 0.0;
        for (uint oh = 0; oh < pc.HO; ++oh) {
            const float wh = tap(oh, ih, pc.scale_h, pc.H);
            if (wh == 0.0) continue;
            float row = 0.0;
            for (uint ow = 0; ow < pc.WO; ++ow) {
                const float ww = tap(ow, iw, pc.scale_w, pc.W);
                if (ww != 0.0) row += ww * g[(plane * pc.HO + oh) * pc.WO + ow];
            }
            s += wh * row;
        }
        gx[e] = s;
    }
}
