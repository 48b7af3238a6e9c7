#version 450
// CondInstanceNorm++ in three passes, forward and first-order backward. x is N x C planes of
// LEN = H*W pixels; e (N x 3C) holds each sample's gamma | alpha | beta; stats (N x C x 2) each
// plane's mean and biased variance (instance_norm.comp, mode 0). r = 1/sqrt(var + eps); z is a
// plane's mean standardised across the C channels of its sample with their *unbiased* variance
// v: z = (mu - m)/s, s = sqrt(v + eps). Per plane, four numbers [mu, p, q, t] drive one pass:
//
//   mode 0, per sample:  coef = [mu, 0, gamma r, gamma alpha z + beta]
//   mode 1, per pixel:   o = q (x - mu) + t                                       (the output)
//   mode 2, per plane:   sums = [S1, S2] = [sum g, r sum g (x - mu)]
//   mode 3, per sample:  coef = [mu, p, q, t], de = [dgamma | dalpha | dbeta], with u = gamma
//                        alpha S1, p = gamma r, q = -p r S2/L, t = (dmu - p S1)/L and
//                        dmu = (u - mean(u) - z sum(u z)/(C - 1))/s (src/tensor/norm.rs derives it)
//   mode 4, per pixel:   o = p g + q (x - mu) + t                                 (dx)
//
// Bindings a mode does not use are bound to some other buffer of the call by the host.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufG { float g[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufStats { float stats[]; };
layout(std430, set = 0, binding = 3) readonly buffer BufE { float e[]; };
layout(std430, set = 0, binding = 4) readonly buffer BufIn { float coef_in[]; };
layout(std430, set = 0, binding = 5) writeonly buffer BufO { float o[]; };
layout(std430, set = 0, binding = 6) writeonly buffer BufDe { float de[]; };

layout(push_constant) uniform Params { uint mode, n, c, len; float eps; } pc;

shared vec2 partial[256];

// The sum over the workgroup of each thread's v, returned to all threads.
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

// ANCHOR: per_sample
// Modes 0 and 3: one workgroup per sample, threads over its channels.
void per_sample() {
    const uint t = gl_LocalInvocationID.x, C = pc.c;
    for (uint n = gl_WorkGroupID.x; n < pc.n; n += gl_NumWorkGroups.x) {
        const uint base = n * C;
        float acc = 0.0;
        for (uint k = t; k < C; k += 256) acc += stats[2 * (base + k)];
        const float m = block_sum(vec2(acc, 0.0)).x / float(C);
        acc = 0.0;
        for (uint k = t; k < C; k += 256) {
            const float d = stats[2 * (base + k)] - m;
            acc += d * d;
        }
        const float s = sqrt(block_sum(vec2(acc, 0.0)).x / float(C - 1) + pc.eps);
        const uint eb = 3 * base;   // e[eb + k], e[eb + C + k], e[eb + 2C + k]: gamma, alpha, beta
        if (pc.mode == 0u) {
            for (uint k = t; k < C; k += 256) {
                const float mu = stats[2 * (base + k)];
                const float r = 1.0 / sqrt(stats[2 * (base + k) + 1] + pc.eps);
                const float gamma = e[eb + k], alpha = e[eb + C + k], beta = e[eb + 2 * C + k];
                const float z = (mu - m) / s;
                const uint i = 4 * (base + k);
                o[i] = mu;
                o[i + 1] = 0.0;
                o[i + 2] = gamma * r;
                o[i + 3] = gamma * alpha * z + beta;
            }
            continue;
        }
        vec2 uu = vec2(0.0);   // sum u, sum u z
        for (uint k = t; k < C; k += 256) {
            const float z = (stats[2 * (base + k)] - m) / s;
            const float u = e[eb + k] * e[eb + C + k] * coef_in[2 * (base + k)];
            uu += vec2(u, u * z);
        }
        uu = block_sum(uu);
        const float mean_u = uu.x / float(C), uz = uu.y / float(C - 1), L = float(pc.len);
        for (uint k = t; k < C; k += 256) {
            const float mu = stats[2 * (base + k)];
            const float r = 1.0 / sqrt(stats[2 * (base + k) + 1] + pc.eps);
            const float gamma = e[eb + k], alpha = e[eb + C + k];
            const float s1 = coef_in[2 * (base + k)], s2 = coef_in[2 * (base + k) + 1];
            const float z = (mu - m) / s;
            const float u = gamma * alpha * s1;
            const float dmu = (u - mean_u - z * uz) / s;
            const float p = gamma * r;
            const uint i = 4 * (base + k);
            o[i] = mu;
            o[i + 1] = p;
            o[i + 2] = -p * r * s2 / L;
            o[i + 3] = (dmu - p * s1) / L;
            de[eb + k] = s2 + alpha * z * s1;
            de[eb + C + k] = gamma * z * s1;
            de[eb + 2 * C + k] = s1;
        }
    }
}
// ANCHOR_END: per_sample

// Mode 2: one workgroup per plane.
void plane_sums() {
    const uint t = gl_LocalInvocationID.x;
    for (uint pl = gl_WorkGroupID.x; pl < pc.n * pc.c; pl += gl_NumWorkGroups.x) {
        const uint base = pl * pc.len;
        const float mu = stats[2 * pl];
        vec2 acc = vec2(0.0);
        for (uint j = t; j < pc.len; j += 256) {
            const float gj = g[base + j];
            acc += vec2(gj, gj * (x[base + j] - mu));
        }
        acc = block_sum(acc);
        if (t == 0) {
            o[2 * pl] = acc.x;
            o[2 * pl + 1] = acc.y / sqrt(stats[2 * pl + 1] + pc.eps);
        }
    }
}

// Modes 1 and 4: every pixel, grid-stride.
void apply() {
    const uint total = pc.n * pc.c * pc.len;
    const uint stride = gl_NumWorkGroups.x * 256;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += stride) {
        const uint pl = i / pc.len;
        const vec4 k = vec4(coef_in[4 * pl], coef_in[4 * pl + 1], coef_in[4 * pl + 2],
                            coef_in[4 * pl + 3]);
        float v = k.z * (x[i] - k.x) + k.w;
        if (pc.mode == 4u) v += k.y * g[i];
        o[i] = v;
    }
}

void main() {
    if (pc.mode == 0u || pc.mode == 3u) per_sample();
    else if (pc.mode == 2u) plane_sums();
    else apply();
}
