// x^p with C's (and Rust's f32::powf) rules, where GLSL's pow(x, p) = exp2(p log2 x) leaves the
// result undefined: x < 0, x = 0 with p <= 0, and infinite or NaN x or p. Shared by the scalar
// power (unary.comp) and the elementwise one (binary.comp).
//
// x^0 = 1 and 1^p = 1 for any p, a NaN p included; otherwise a NaN stays NaN; (-1)^±inf = 1.
// ±0 and ±inf go by the sign and parity of p (an odd integer p keeps the sign of x). A negative
// base with an integer p gives ±|x|^p, with any other p NaN.
// ANCHOR: powf
float powf(float v, float p) {
    if (p == 0.0 || v == 1.0) return 1.0;
    if (isnan(p)) return p;
    if (isnan(v)) return v;
    if (isinf(p) && abs(v) == 1.0) return 1.0;
    const bool odd = floor(p) == p && mod(p, 2.0) == 1.0;
    const bool negative = floatBitsToUint(v) >> 31 != 0u;       // also for -0
    if (v == 0.0 || isinf(v)) {
        // |x|^p is 0 or inf: inf for 0 with p < 0 and for inf with p > 0.
        const float m = (v == 0.0) == (p < 0.0) ? INF : 0.0;
        return odd && negative ? -m : m;
    }
    if (v > 0.0) return pow(v, p);
    if (floor(p) != p) return NAN;
    const float m = pow(-v, p);
    return odd ? -m : m;
}
// ANCHOR_END: powf
