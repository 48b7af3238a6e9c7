//! Conditional instance normalisation, CondInstanceNorm++ (the reference's
//! `ConditionalInstanceNorm2dPlus`).

use super::Path;
use crate::tensor::Tensor;
use rand::Rng;
use rand_distr::Normal;

/// The ε of the reference: `nn.InstanceNorm2d`'s default, and the one added to the variance of the
/// channel means.
pub const NORM_EPS: f32 = 1e-5;

/// CondInstanceNorm++ (Song & Ermon 2019, appendix A): instance normalisation whose scale γ, shift
/// β and mean-correction α are looked up per noise level, plus a term that puts back the
/// information instance normalisation removes — how the channel means differ from one another.
///
/// With μ_c, σ_c the mean and (biased) standard deviation of channel c of one sample, m and v the
/// mean and *unbiased* variance of the μ_c over the channels, and y the noise level:
///
/// ```text
/// out_c = γ[y, c] · ( (x_c − μ_c) / √(σ_c² + ε)  +  α[y, c] · (μ_c − m) / √(v + ε) ) + β[y, c]
/// ```
///
/// γ, α and β are the three chunks of one embedding, `path.embed.weight` of shape
/// (num_classes, 3C), initialised γ, α ~ N(1, 0.02) and β = 0.
#[derive(Clone)]
pub struct CondInstanceNorm2dPlus {
    /// (num_classes, 3·num_features): γ, α, β side by side.
    pub embed: Tensor,
    /// C, the number of channels.
    pub num_features: usize,
}

impl CondInstanceNorm2dPlus {
    /// A layer for `num_features` channels and `num_classes` noise levels.
    pub fn new(path: &Path, num_features: usize, num_classes: usize, rng: &mut impl Rng) -> Self {
        let c = num_features;
        let normal = Normal::new(1.0f32, 0.02).expect("valid normal");
        let gamma_alpha = Tensor::sample(&[num_classes, 2 * c], normal, rng);
        let beta = Tensor::zeros(&[num_classes, c]);
        let w = Tensor::concat(&[gamma_alpha, beta], 1);
        CondInstanceNorm2dPlus {
            embed: path.sub("embed").param("weight", w),
            num_features,
        }
    }

    // ANCHOR: cin_forward
    /// Normalises x (N, C, H, W) with the parameters of noise levels `labels` (one per sample):
    /// the embedding lookup, then [`Tensor::cond_instance_norm_plus`], which computes what
    /// [`forward_unfused`](Self::forward_unfused) spells out in three passes over x.
    pub fn forward(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        let e = self.embed.index_select(0, labels); // (N, 3C): γ, α, β of each sample
        x.cond_instance_norm_plus(&e, NORM_EPS)
    }

    /// The same layer in plain tensor ops: the definition, which the fused op is tested against.
    pub fn forward_unfused(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        let c = self.num_features;
        let e = self.embed.index_select(0, labels); // (N, 3C): the embedding lookup
        let (gamma, alpha, beta) = (e.narrow(1, 0, c), e.narrow(1, c, c), e.narrow(1, 2 * c, c));

        let means = x.mean(&[2, 3], false); // μ_c, (N, C)
        let m = means.mean(&[1], true);
        let v = means.var(&[1], true, true); // unbiased, as torch.var's default
        let means = means.sub(&m).div(&v.add_scalar(NORM_EPS).sqrt());

        let h = x.instance_norm(NORM_EPS); // (x − μ_c)/√(σ_c² + ε), biased σ²
        // γ·(h + α·means) + β  =  h·γ + (γ·α·means + β): one pass over the activations.
        let shift = gamma.mul(&alpha).mul(&means).add(&beta);
        h.channel_affine(&gamma, Some(&shift))
    }
    // ANCHOR_END: cin_forward
}
