#version 450
// Elementwise y = f(x; p) for a family of unary and tensor-scalar ops, picked by pc.op.
// The op codes match `UnaryOp::code` in src/backend/vulkan/ops.rs. Grid-stride loop: any length
// works with at most 65535 workgroups.
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Params {
    uint n;
    uint op;
    float p;    // the scalar of the scalar ops, alpha of elu
} pc;

#include "powf.glsl"

// e^v − 1 without the cancellation of exp(v) − 1 just below 0 (there, 1.4e-3 relative at
// v = −1e-5 even with a correctly rounded exp): the Taylor series to v⁷ for |v| < 0.35, as
// `fastmath::expm1` on the CPU, and exp(v) − 1 beyond.
float expm1_(float v) {
    if (abs(v) < 0.35)
        return v * (1.0 + v * (0.5 + v * (1.0 / 6.0 + v * (1.0 / 24.0
             + v * (1.0 / 120.0 + v * (1.0 / 720.0 + v * (1.0 / 5040.0)))))));
    return exp(v) - 1.0;
}

// ln(1 + y) for y in [0, 1] to a few ulps relative, as `fastmath::log1p_unit` on the CPU:
// 2 atanh(s) with s = y/(2 + y) ≤ 1/3, summed to s¹³. It needs no log, whose error Vulkan bounds
// only absolutely (2⁻²¹ near 1: up to 4e-3 relative where ln(1 + y) is small).
float log1p_unit(float y) {
    const float s = y / (2.0 + y), s2 = s * s;
    return 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0
         + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0)))))));
}

float apply(float v) {
    switch (pc.op) {
    case 0:  return -v;
    case 1:  return exp(v);
    // GLSL leaves log undefined at x <= 0 and sqrt at x < 0; these give the CPU's (IEEE's)
    // answers there: ln 0 = -inf, and NaN for a negative x (sqrt(-0) = -0 is defined).
    case 2:  return v < 0.0 ? NAN : v == 0.0 ? -INF : log(v);
    case 3:  return v < 0.0 ? NAN : sqrt(v);
    // GLSL's tanh may compute (e^2v - 1)/(e^2v + 1) and give inf/inf = NaN for large v; tanh(15)
    // already rounds to 1 in f32. clamp of a NaN is undefined in GLSL, so NaN is passed on first.
    case 4:  return isnan(v) ? v : tanh(clamp(v, -15.0, 15.0));
    case 5:  return 1.0 / (1.0 + exp(-v));
    case 6:  return v < 0.0 ? 0.0 : v;                              // relu; NaN passes, as in PyTorch
    case 7:  return v > 0.0 ? v : pc.p * expm1_(v);                  // elu
    // softplus, stable form of log(1 + e^v) = max(v, 0) + log(1 + e^-|v|); PyTorch returns v
    // itself above 20. log(1.0 + y) would round 1 + y first, and give 0 below v ≈ -16.6 where
    // torch gives e^v.
    case 8:  return v > 20.0 ? v : max(v, 0.0) + log1p_unit(exp(-abs(v)));
    case 9:  return abs(v);
    case 10: return v * v;
    case 11: return 1.0 / v;
    case 12: return sin(v);
    case 13: return cos(v);
    case 14: return v + pc.p;
    case 15: return v * pc.p;
    case 17: return v > 0.0 ? v : pc.p * v;                          // leaky relu
    case 18: return powf(v, pc.p);                                   // x^p for any sign of x
    case 19: return v / pc.p;
    default: return v;
    }
}

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += step) y[i] = apply(x[i]);
}
