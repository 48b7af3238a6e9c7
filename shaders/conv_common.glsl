// Push constants and index helpers shared by the three convolution kernels (NCHW, row-major).
// x: N x Cin x H x W, weight: Cout x Cin x KH x KW, y: N x Cout x HO x WO, with
// HO = (H + 2 PH - DH (KH - 1) - 1) / SH + 1 (and the same for W), as in PyTorch.

// ANCHOR: params
layout(push_constant) uniform Params {
    uint N, CIN, H, W;
    uint COUT, HO, WO;
    uint KH, KW;
    uint SH, SW;        // stride
    uint PH, PW;        // zero padding
    uint DH, DW;        // dilation
    uint HAS_BIAS;
    uint K_CHUNK;       // weight gradient only: the stretch of K one workgroup sums (split-K)
    // A multiplier and a shift for each size the kernels divide by (see fast_div).
    uint TAPS_M, TAPS_S;        // KH * KW
    uint KW_M, KW_S;
    uint OUT_HW_M, OUT_HW_S;    // HO * WO
    uint WO_M, WO_S;
    uint IN_HW_M, IN_HW_S;      // H * W
    uint W_M, W_S;
} pc;
// ANCHOR_END: params

// ANCHOR: fast_div
// x / d for any x < 2^31 without a divide instruction (a GPU has none for integers: a division by
// a run-time value costs a couple of dozen instructions, and the loads of one step of the tile
// loop would otherwise spend several hundred on index arithmetic). The host computes, with
// l = ceil(log2 d), m = ceil(2^(31 + l) / d) < 2^32 and s = l - 1; then x / d = floor(x m /
// 2^(31 + l)), the high word of the 64-bit product shifted right by s. m = 0 stands for d = 1.
uint fast_div(uint x, uint m, uint s) {
    uint hi, lo;
    umulExtended(x, m, hi, lo);
    return m == 0u ? x : hi >> s;
}

// x / d, with the remainder in r; m and s are d's constants.
uint div_rem(uint x, uint d, uint m, uint s, out uint r) {
    const uint q = fast_div(x, m, s);
    r = x - q * d;
    return q;
}

// k = (c, ki, kj), a channel and a kernel tap, over C x KH x KW.
void split_tap(uint k, out uint c, out uint ki, out uint kj) {
    uint r;
    c = div_rem(k, pc.KH * pc.KW, pc.TAPS_M, pc.TAPS_S, r);
    ki = div_rem(r, pc.KW, pc.KW_M, pc.KW_S, kj);
}

// col = (n, oh, ow), an output pixel, over N x HO x WO.
void split_out_pixel(uint col, out uint n, out uint oh, out uint ow) {
    uint r;
    n = div_rem(col, pc.HO * pc.WO, pc.OUT_HW_M, pc.OUT_HW_S, r);
    oh = div_rem(r, pc.WO, pc.WO_M, pc.WO_S, ow);
}

// col = (n, ih, iw), an input pixel, over N x H x W.
void split_in_pixel(uint col, out uint n, out uint ih, out uint iw) {
    uint r;
    n = div_rem(col, pc.H * pc.W, pc.IN_HW_M, pc.IN_HW_S, r);
    ih = div_rem(r, pc.W, pc.W_M, pc.W_S, iw);
}
// ANCHOR_END: fast_div

// ANCHOR: im2col
// The input pixel that kernel tap (ki, kj) sees from output pixel (oh, ow); false in the padding.
bool input_pixel(uint oh, uint ow, uint ki, uint kj, out uint ih, out uint iw) {
    const int h = int(oh * pc.SH + ki * pc.DH) - int(pc.PH);
    const int w = int(ow * pc.SW + kj * pc.DW) - int(pc.PW);
    ih = uint(h);
    iw = uint(w);
    return h >= 0 && h < int(pc.H) && w >= 0 && w < int(pc.W);
}
// ANCHOR_END: im2col
