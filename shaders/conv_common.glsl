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
} pc;
// ANCHOR_END: params

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
