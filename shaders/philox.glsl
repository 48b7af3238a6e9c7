// Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011), a counter-based generator: the output is a pure function of a 128-bit counter and a
// 64-bit key, so every thread can draw its own numbers with no state and no communication, and a
// rerun with the same (key, counter) gives the same bits on any device.

// ANCHOR: philox
const uint PHILOX_M0 = 0xD2511F53u, PHILOX_M1 = 0xCD9E8D57u;   // round multipliers
const uint PHILOX_W0 = 0x9E3779B9u, PHILOX_W1 = 0xBB67AE85u;   // Weyl key increments

uvec4 philox4x32_10(uvec4 ctr, uvec2 key) {
    for (int round = 0; round < 10; ++round) {
        uint hi0, lo0, hi1, lo1;
        umulExtended(PHILOX_M0, ctr.x, hi0, lo0);   // 32 x 32 -> 64-bit products
        umulExtended(PHILOX_M1, ctr.z, hi1, lo1);
        ctr = uvec4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
        key += uvec2(PHILOX_W0, PHILOX_W1);
    }
    return ctr;
}
// ANCHOR_END: philox

// ANCHOR: box_muller
// Four standard normals from four random words (Box-Muller, two pairs). 24 bits per uniform keep
// the conversion exact in f32: u1 in (0, 1] so log(u1) is finite, and |z| <= sqrt(48 ln 2) ~ 5.77.
// Vulkan lets log be off by 2^-21 absolute near 1, more than |log(1 - 2^-24)|, so a driver may
// return a positive log there: the max keeps the square root's argument >= 0 (a no-op where log
// is correctly rounded, as on the CPU).
vec4 normals_from_bits(uvec4 w) {
    const float inv24 = 1.0 / 16777216.0;
    const float PI = 3.14159265358979;
    vec2 u1 = (vec2(w.xz >> 8) + 1.0) * inv24;
    vec2 theta = vec2(w.yw >> 8) * inv24 * (2.0 * PI) - PI;   // in [-pi, pi)
    vec2 r = sqrt(max(-2.0 * log(u1), 0.0));
    return vec4(r.x * cos(theta.x), r.x * sin(theta.x), r.y * cos(theta.y), r.y * sin(theta.y));
}
// ANCHOR_END: box_muller
