//! Convolution layers: `nn.Conv2d` and the reference's `ConvMeanPool`.

use super::{Module, Path, init};
use crate::tensor::{Conv2dConfig, Pool2dConfig, Tensor};
use rand::Rng;

/// `nn.Conv2d` with square kernels: weight (out, in, k, k), optional bias (out), PyTorch's default
/// initialisation (kaiming-uniform with a = √5, i.e. U(±1/√fan_in), and bias U(±1/√fan_in), with
/// fan_in = in·k·k).
#[derive(Clone)]
pub struct Conv2d {
    /// (out_channels, in_channels, k, k)
    pub weight: Tensor,
    /// (out_channels), if the layer has a bias.
    pub bias: Option<Tensor>,
    /// Stride, padding and dilation.
    pub cfg: Conv2dConfig,
}

impl Conv2d {
    /// A convolution registered as `path.weight` (and `path.bias` when `bias`).
    pub fn new(
        path: &Path,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        cfg: Conv2dConfig,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Conv2d {
        let fan_in = in_channels * kernel * kernel;
        let w = init::kaiming_uniform(
            &[out_channels, in_channels, kernel, kernel],
            fan_in,
            5f32.sqrt(),
            rng,
        );
        let weight = path.param("weight", w);
        let bias =
            bias.then(|| path.param("bias", init::default_bias(&[out_channels], fan_in, rng)));
        Conv2d { weight, bias, cfg }
    }

    /// The reference's `conv3x3`: 3×3, stride 1, padding 1.
    pub fn conv3x3(path: &Path, cin: usize, cout: usize, bias: bool, rng: &mut impl Rng) -> Conv2d {
        Conv2d::new(path, cin, cout, 3, Conv2dConfig::new(1, 1, 1), bias, rng)
    }

    /// The reference's `dilated_conv3x3`: 3×3 with dilation d and padding d (the output keeps the
    /// input's size), with a bias.
    pub fn dilated3x3(
        path: &Path,
        cin: usize,
        cout: usize,
        d: usize,
        rng: &mut impl Rng,
    ) -> Conv2d {
        Conv2d::new(path, cin, cout, 3, Conv2dConfig::new(1, d, d), true, rng)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, self.bias.as_ref(), self.cfg)
    }
}

/// The reference's `ConvMeanPool`: a convolution (stride 1, padding k/2, with bias) registered at
/// `path.conv`, then the mean of each 2×2 block, halving height and width.
///
/// (The reference's `adjust_padding` variant is never built by `CondRefineNetDilated`: where it is
/// requested, a dilation is given too and takes precedence. It is not implemented.)
#[derive(Clone)]
pub struct ConvMeanPool {
    /// The convolution, `path.conv`.
    pub conv: Conv2d,
}

impl ConvMeanPool {
    /// A k×k convolution from `cin` to `cout` channels followed by 2×2 mean pooling.
    pub fn new(path: &Path, cin: usize, cout: usize, kernel: usize, rng: &mut impl Rng) -> Self {
        let cfg = Conv2dConfig::new(1, kernel / 2, 1);
        ConvMeanPool {
            conv: Conv2d::new(&path.sub("conv"), cin, cout, kernel, cfg, true, rng),
        }
    }
}

impl Module for ConvMeanPool {
    fn forward(&self, x: &Tensor) -> Tensor {
        // (o[::2, ::2] + o[1::2, ::2] + o[::2, 1::2] + o[1::2, 1::2]) / 4 is a 2×2, stride-2 average.
        self.conv.forward(x).avg_pool2d(Pool2dConfig::new(2, 2, 0))
    }
}
