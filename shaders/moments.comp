#version 450
// Per-row mean and biased variance, for instance norm: x is viewed as ROWS x LEN (ROWS = N*C,
// LEN = H*W). Two passes over each row (mean, then mean squared deviation), which avoids the
// cancellation of E[x^2] - E[x]^2. One workgroup per row, grid-stride over rows.

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer BufMean { float mean_out[]; };
layout(std430, set = 0, binding = 2) writeonly buffer BufVar { float var_out[]; };

layout(push_constant) uniform Params { uint rows, len; } pc;

shared float partial[256];

float block_sum(float v) {
    const uint t = gl_LocalInvocationID.x;
    partial[t] = v;
    for (uint width = 128; width > 0; width >>= 1) {
        barrier();
        if (t < width) partial[t] += partial[t + width];
    }
    barrier();
    const float s = partial[0];
    barrier();
    return s;
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    for (uint row = gl_WorkGroupID.x; row < pc.rows; row += gl_NumWorkGroups.x) {
        const uint base = row * pc.len;
        float s = 0.0;
        for (uint j = t; j < pc.len; j += 256) s += x[base + j];
        const float mean = block_sum(s) / float(pc.len);
        float q = 0.0;
        for (uint j = t; j < pc.len; j += 256) {
            const float d = x[base + j] - mean;
            q += d * d;
        }
        const float var = block_sum(q) / float(pc.len);
        if (t == 0) {
            mean_out[row] = mean;
            var_out[row] = var;
        }
    }
}
