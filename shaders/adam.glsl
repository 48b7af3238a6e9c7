// Adam, in place on (param, m, v), following torch.optim.Adam (single-tensor implementation):
//   g <- g + weight_decay * p
//   m <- m + (1 - beta1) (g - m)           (exp_avg.lerp_)
//   v <- beta2 v + (1 - beta2) g^2
//   p <- p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// With AMSGRAD defined (adam_amsgrad.comp) the denominator uses vmax <- max(vmax, v), the running
// maximum of the second moment, kept in a fifth buffer.
// The host works out 1 - beta1, 1 - beta2 and the bias corrections in f64 and rounds each to f32
// once, as PyTorch does with its Python-float hyper-parameters (src/optim.rs, AdamWeights).

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) buffer BufP { float p[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufG { float g[]; };
layout(std430, set = 0, binding = 2) buffer BufM { float m[]; };
layout(std430, set = 0, binding = 3) buffer BufV { float v[]; };
#ifdef AMSGRAD
layout(std430, set = 0, binding = 4) buffer BufVmax { float vmax[]; };
#endif

layout(push_constant) uniform Params {
    uint n;
    float step_size;      // lr / (1 - beta1^t)
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float eps, weight_decay;
    float bc2_sqrt;       // sqrt(1 - beta2^t)
} pc;

// ANCHOR: adam
void main() {
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += stride) {
        const float grad = g[i] + pc.weight_decay * p[i];
        const float mi = m[i] + pc.one_minus_beta1 * (grad - m[i]);
        const float vi = pc.beta2 * v[i] + pc.one_minus_beta2 * grad * grad;
        m[i] = mi;
        v[i] = vi;
#ifdef AMSGRAD
        // torch.maximum passes a NaN on; GLSL's max leaves it unspecified (NVIDIA drops it).
        const float vd = (vi > vmax[i] || isnan(vi)) ? vi : vmax[i];
        vmax[i] = vd;
#else
        const float vd = vi;
#endif
        p[i] = p[i] - pc.step_size * mi / (sqrt(vd) / pc.bc2_sqrt + pc.eps);
    }
}
// ANCHOR_END: adam
