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

// x^p with C's `powf` rules where GLSL's pow leaves the result undefined (x < 0, x = 0 with
// p <= 0, infinite or NaN x): x^0 = 1; NaN stays NaN; ±0 and ±inf by the sign and parity of p
// (an odd integer p keeps the sign of x); a negative base with an integer p gives ±|x|^p and any
// other p gives NaN.
float powf(float v) {
    const float p = pc.p;
    const float nan = uintBitsToFloat(0x7fc00000u), inf = uintBitsToFloat(0x7f800000u);
    if (p == 0.0) return 1.0;
    if (isnan(v)) return v;
    const bool odd = floor(p) == p && mod(p, 2.0) == 1.0;
    const bool negative = floatBitsToUint(v) >> 31 != 0u;          // also for -0
    if (v == 0.0 || isinf(v)) {
        // |x|^p is 0 or inf: inf for 0 with p < 0 and for inf with p > 0.
        const float m = (v == 0.0) == (p < 0.0) ? inf : 0.0;
        return odd && negative ? -m : m;
    }
    if (v > 0.0) return pow(v, p);
    if (floor(p) != p) return nan;
    const float m = pow(-v, p);
    return odd ? -m : m;
}

float apply(float v) {
    switch (pc.op) {
    case 0:  return -v;
    case 1:  return exp(v);
    case 2:  return log(v);
    case 3:  return sqrt(v);
    // GLSL's tanh may compute (e^2v - 1)/(e^2v + 1) and give inf/inf = NaN for large v; tanh(15)
    // already rounds to 1 in f32. clamp of a NaN is undefined in GLSL, so NaN is passed on first.
    case 4:  return isnan(v) ? v : tanh(clamp(v, -15.0, 15.0));
    case 5:  return 1.0 / (1.0 + exp(-v));
    case 6:  return v < 0.0 ? 0.0 : v;                              // relu; NaN passes, as in PyTorch
    case 7:  return v > 0.0 ? v : pc.p * (exp(v) - 1.0);            // elu
    // softplus, stable form of log(1 + e^v); PyTorch returns v itself above 20.
    // Below e^-9 ≈ 1.2e-4, log(1 + y) = y − y²/2 to within y³/3, where the plain form rounds 1 + y
    // and returns 0 for x below about -16.6 (torch gives e^x).
    case 8: {
        if (v > 20.0) return v;
        const float y = exp(-abs(v));
        return max(v, 0.0) + (y < 1.2e-4 ? y * (1.0 - 0.5 * y) : log(1.0 + y));
    }
    case 9:  return abs(v);
    case 10: return v * v;
    case 11: return 1.0 / v;
    case 12: return sin(v);
    case 13: return cos(v);
    case 14: return v + pc.p;
    case 15: return v * pc.p;
    case 16: return pow(v, pc.p);                                    // v >= 0 only (GLSL pow)
    case 17: return v > 0.0 ? v : pc.p * v;                          // leaky relu
    case 18: return powf(v);                                         // x^p for any sign of x
    case 19: return v / pc.p;
    default: return v;
    }
}

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += step) y[i] = apply(x[i]);
}
