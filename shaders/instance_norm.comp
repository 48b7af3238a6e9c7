#version 450
// Instance normalisation of each row of x, seen as ROWS x LEN (ROWS = N*C planes of LEN = H*W
// pixels); one workgroup per row, grid-stride over rows. The mean and the biased variance take
// two passes over the row (mean, then mean squared deviation), which avoids the cancellation of
// E[x^2] - E[x]^2; r = 1 / sqrt(var + eps).
//
//   mode 0, statistics: o[2 row] = mean, o[2 row + 1] = var
//   mode 1, forward:    o = (x - mean) * r                                  (y, the output)
//   mode 2, backward:   o = r * (g - mean(g) - y * mean(g * y))              (dx, first order)
//
// The backward takes the forward's output y and the gradient g and recomputes r from x, so one
// dispatch replaces the 17 elementwise and reduction kernels of the same formula in tensor ops
// (and mode 1 the six of the forward).
// In modes 0 and 1 the y and g bindings are unused (the host binds x there).
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufY { float y[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufG { float g[]; };
layout(std430, set = 0, binding = 3) writeonly buffer BufO { float o[]; };

layout(push_constant) uniform Params { uint mode, rows, len; float eps; } pc;

shared vec2 partial[256];

// The sum over the workgroup of each thread's v (a shared-memory tree), returned to all threads.
vec2 block_sum(vec2 v) {
    const uint t = gl_LocalInvocationID.x;
    partial[t] = v;
    for (uint width = 128; width > 0; width >>= 1) {
        barrier();
        if (t < width) partial[t] += partial[t + width];
    }
    barrier();
    const vec2 s = partial[0];
    barrier();
    return s;
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const float len = float(pc.len);
    for (uint row = gl_WorkGroupID.x; row < pc.rows; row += gl_NumWorkGroups.x) {
        const uint base = row * pc.len;
        float s = 0.0;
        for (uint j = t; j < pc.len; j += 256) s += x[base + j];
        const float mean = block_sum(vec2(s, 0.0)).x / len;
        float q = 0.0;
        for (uint j = t; j < pc.len; j += 256) {
            const float d = x[base + j] - mean;
            q += d * d;
        }
        const float var = block_sum(vec2(q, 0.0)).x / len;
        if (pc.mode == 0u) {
            if (t == 0) {
                o[2 * row] = mean;
                o[2 * row + 1] = var;
            }
            continue;
        }
        const float r = 1.0 / sqrt(var + pc.eps);
        if (pc.mode == 1u) {
            for (uint j = t; j < pc.len; j += 256) o[base + j] = (x[base + j] - mean) * r;
        } else {
            vec2 a = vec2(0.0);
            for (uint j = t; j < pc.len; j += 256) {
                const float gj = g[base + j];
                a += vec2(gj, gj * y[base + j]);
            }
            const vec2 m = block_sum(a) / len;   // mean(g), mean(g * y)
            for (uint j = t; j < pc.len; j += 256) {
                o[base + j] = r * (g[base + j] - m.x - y[base + j] * m.y);
            }
        }
    }
}
