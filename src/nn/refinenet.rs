//! CondRefineNetDilated, the score network of NCSN (Song & Ermon 2019), block for block as the
//! reference `models/cond_refinenet_dilated.py`, with the same parameter names.
//!
//! The network maps an image x and a noise level index y to a tensor of x's shape, the estimated
//! score ∇ₓ log p_σ_y(x). It is a U-Net-like encoder–decoder:
//!
//! * **encoder**: `begin_conv`, then four stages of two [`CondResBlock`]s each (`res1`…`res4`).
//!   Only `res2` halves the resolution (28 → 14, or 32 → 16); `res3` and `res4` keep it and widen
//!   their receptive field with dilated convolutions (dilation 2 and 4) instead.
//! * **decoder**: four [`CondRefineBlock`]s (`refine1`…`refine4`), each fusing the previous
//!   refinement with the encoder stage of the same depth: residual conv units ([`CondRcuBlock`]),
//!   multi-resolution fusion ([`CondMsfBlock`], upsampling bilinearly to the larger size) and
//!   chained residual pooling ([`CondCrpBlock`]).
//! * **head**: CondInstanceNorm++, ELU and `end_conv` back to the image's channels.
//!
//! Every normalisation is a [`CondInstanceNorm2dPlus`] conditioned on y, the only way the noise
//! level enters the network.

use super::conv::{Conv2d, ConvMeanPool};
use super::norm::CondInstanceNorm2dPlus;
use super::{Module, ParamStore, Path};
use crate::tensor::{Pool2dConfig, Tensor};
use rand::Rng;

/// The nonlinearity of the reference model, `nn.ELU()` (α = 1).
fn act(x: &Tensor) -> Tensor {
    x.elu(1.0)
}

/// The sizes of a [`CondRefineNetDilated`] (the reference's `config.data` and `config.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefineNetConfig {
    /// Image channels (1 for MNIST, 3 for CIFAR-10).
    pub channels: usize,
    /// Image side (28 or 32).
    pub image_size: usize,
    /// Base width `ngf` (64 for MNIST, 128 for CIFAR-10).
    pub ngf: usize,
    /// Number of noise levels L (10 in the paper).
    pub num_classes: usize,
    /// Inputs already logit-transformed: when false the network first maps x ∈ [0, 1] to 2x − 1.
    pub logit_transform: bool,
}

impl RefineNetConfig {
    /// The paper's MNIST model: 1 channel, 28×28, ngf = 64, 10 noise levels (7,638,657 parameters).
    pub fn mnist() -> Self {
        RefineNetConfig {
            channels: 1,
            image_size: 28,
            ngf: 64,
            num_classes: 10,
            logit_transform: false,
        }
    }

    /// The paper's CIFAR-10 model: 3 channels, 32×32, ngf = 128, 10 noise levels (30,117,635
    /// parameters).
    pub fn cifar10() -> Self {
        RefineNetConfig {
            channels: 3,
            image_size: 32,
            ngf: 128,
            num_classes: 10,
            logit_transform: false,
        }
    }
}

/// How a [`CondResBlock`] changes resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// Same size in and out (the reference's `resample=None`).
    None,
    /// The reference's `resample='down'`: halve the size with [`ConvMeanPool`], or — when the block
    /// is dilated — keep it and only change the width.
    Down,
}

/// A convolution that may be followed by 2×2 mean pooling.
#[derive(Clone)]
enum ResConv {
    Plain(Conv2d),
    MeanPool(ConvMeanPool),
}

impl ResConv {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            ResConv::Plain(c) => c.forward(x),
            ResConv::MeanPool(c) => c.forward(x),
        }
    }
}

/// The reference's `ConditionalResidualBlock`: norm → ELU → conv1 → norm → ELU → conv2, plus a
/// shortcut (identity, or a convolution when the width or size changes).
#[derive(Clone)]
pub struct CondResBlock {
    conv1: Conv2d,
    normalize2: CondInstanceNorm2dPlus,
    conv2: ResConv,
    shortcut: Option<ResConv>,
    normalize1: CondInstanceNorm2dPlus,
}

impl CondResBlock {
    /// A block from `input_dim` to `output_dim` channels; `dilation` selects dilated 3×3
    /// convolutions (and then `Resample::Down` keeps the size). Parameters are registered in the
    /// reference's order: conv1, normalize2, conv2, shortcut, normalize1.
    pub fn new(
        path: &Path,
        input_dim: usize,
        output_dim: usize,
        num_classes: usize,
        resample: Resample,
        dilation: Option<usize>,
        rng: &mut impl Rng,
    ) -> Self {
        let (i, o) = (input_dim, output_dim);
        let norm = |name: &str, c: usize, rng: &mut _| {
            CondInstanceNorm2dPlus::new(&path.sub(name), c, num_classes, rng)
        };
        let plain3 = |name: &str, cin: usize, cout: usize, rng: &mut _| match dilation {
            Some(d) => ResConv::Plain(Conv2d::dilated3x3(&path.sub(name), cin, cout, d, rng)),
            None => ResConv::Plain(Conv2d::conv3x3(&path.sub(name), cin, cout, true, rng)),
        };
        let (conv1, normalize2, conv2, shortcut) = match (resample, dilation) {
            (Resample::Down, Some(_)) => {
                let ResConv::Plain(conv1) = plain3("conv1", i, i, rng) else {
                    unreachable!()
                };
                let n2 = norm("normalize2", i, rng);
                let conv2 = plain3("conv2", i, o, rng);
                let sc = plain3("shortcut", i, o, rng);
                (conv1, n2, conv2, Some(sc))
            }
            (Resample::Down, None) => {
                let conv1 = Conv2d::conv3x3(&path.sub("conv1"), i, i, true, rng);
                let n2 = norm("normalize2", i, rng);
                let conv2 = ResConv::MeanPool(ConvMeanPool::new(&path.sub("conv2"), i, o, 3, rng));
                let sc = ResConv::MeanPool(ConvMeanPool::new(&path.sub("shortcut"), i, o, 1, rng));
                (conv1, n2, conv2, Some(sc))
            }
            (Resample::None, _) => {
                let ResConv::Plain(conv1) = plain3("conv1", i, o, rng) else {
                    unreachable!()
                };
                let n2 = norm("normalize2", o, rng);
                let conv2 = plain3("conv2", o, o, rng);
                let sc = (i != o).then(|| {
                    assert!(
                        dilation.is_some(),
                        "CondResBlock: the reference cannot change width without resampling or dilation"
                    );
                    plain3("shortcut", i, o, rng)
                });
                (conv1, n2, conv2, sc)
            }
        };
        let normalize1 = norm("normalize1", i, rng);
        CondResBlock {
            conv1,
            normalize2,
            conv2,
            shortcut,
            normalize1,
        }
    }

    // ANCHOR: resblock_forward
    /// Applies the block at noise levels `labels`.
    pub fn forward(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        let h = act(&self.normalize1.forward(x, labels));
        let h = self.conv1.forward(&h);
        let h = act(&self.normalize2.forward(&h, labels));
        let h = self.conv2.forward(&h);
        match &self.shortcut {
            Some(sc) => sc.forward(x).add(&h),
            None => x.add(&h),
        }
    }
    // ANCHOR_END: resblock_forward
}

/// The reference's `CondRCUBlock` (residual conv units): `n_blocks` times, x + (norm → ELU →
/// conv3x3) repeated `n_stages` times. Convolutions have no bias; names are `{i}_{j}_norm` and
/// `{i}_{j}_conv`, counted from 1.
#[derive(Clone)]
pub struct CondRcuBlock {
    /// `stages[i][j]`: the norm and convolution of stage j of block i.
    stages: Vec<Vec<(CondInstanceNorm2dPlus, Conv2d)>>,
}

impl CondRcuBlock {
    /// `n_blocks` residual units of `n_stages` stages on `features` channels.
    pub fn new(
        path: &Path,
        features: usize,
        n_blocks: usize,
        n_stages: usize,
        num_classes: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let stages = (1..=n_blocks)
            .map(|i| {
                (1..=n_stages)
                    .map(|j| {
                        let norm = CondInstanceNorm2dPlus::new(
                            &path.sub(format!("{i}_{j}_norm")),
                            features,
                            num_classes,
                            rng,
                        );
                        let conv = Conv2d::conv3x3(
                            &path.sub(format!("{i}_{j}_conv")),
                            features,
                            features,
                            false,
                            rng,
                        );
                        (norm, conv)
                    })
                    .collect()
            })
            .collect();
        CondRcuBlock { stages }
    }

    // ANCHOR: rcu_forward
    /// Applies the units at noise levels `labels`.
    pub fn forward(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        let mut x = x.clone();
        for block in &self.stages {
            let residual = x.clone();
            for (norm, conv) in block {
                x = conv.forward(&act(&norm.forward(&x, labels)));
            }
            x = x.add(&residual);
        }
        x
    }
    // ANCHOR_END: rcu_forward
}

/// The reference's `CondCRPBlock` (chained residual pooling): after an ELU, `n_stages` times
/// path ← conv3x3(avgpool5×5(norm(path))), x ← x + path. The pooling is `nn.AvgPool2d(5, 1, 2)`
/// (the reference names it `maxpool`). Parameters: `convs.{i}` then `norms.{i}`.
#[derive(Clone)]
pub struct CondCrpBlock {
    convs: Vec<Conv2d>,
    norms: Vec<CondInstanceNorm2dPlus>,
}

impl CondCrpBlock {
    /// `n_stages` pooling stages on `features` channels.
    pub fn new(
        path: &Path,
        features: usize,
        n_stages: usize,
        num_classes: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let convs = (0..n_stages)
            .map(|i| Conv2d::conv3x3(&path.sub("convs").sub(i), features, features, false, rng))
            .collect();
        let norms = (0..n_stages)
            .map(|i| {
                CondInstanceNorm2dPlus::new(&path.sub("norms").sub(i), features, num_classes, rng)
            })
            .collect();
        CondCrpBlock { convs, norms }
    }

    // ANCHOR: crp_forward
    /// Applies the block at noise levels `labels`.
    pub fn forward(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        let pool = Pool2dConfig::new(5, 1, 2);
        let mut x = act(x);
        let mut path = x.clone();
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            path = conv.forward(&norm.forward(&path, labels).avg_pool2d(pool));
            x = path.add(&x);
        }
        x
    }
    // ANCHOR_END: crp_forward
}

/// The reference's `CondMSFBlock` (multi-resolution fusion): each input is normalised, convolved
/// (3×3, with bias) to `features` channels and resized bilinearly to the output size; the results
/// are summed. Parameters: `convs.{i}` then `norms.{i}`.
#[derive(Clone)]
pub struct CondMsfBlock {
    convs: Vec<Conv2d>,
    norms: Vec<CondInstanceNorm2dPlus>,
}

impl CondMsfBlock {
    /// Fusion of inputs with `in_planes` channels into `features` channels.
    pub fn new(
        path: &Path,
        in_planes: &[usize],
        features: usize,
        num_classes: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let convs = in_planes
            .iter()
            .enumerate()
            .map(|(i, &c)| Conv2d::conv3x3(&path.sub("convs").sub(i), c, features, true, rng))
            .collect();
        let norms = in_planes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                CondInstanceNorm2dPlus::new(&path.sub("norms").sub(i), c, num_classes, rng)
            })
            .collect();
        CondMsfBlock { convs, norms }
    }

    // ANCHOR: msf_forward
    /// Fuses `xs` at spatial size `shape`.
    pub fn forward(&self, xs: &[Tensor], labels: &[usize], shape: (usize, usize)) -> Tensor {
        let mut sum: Option<Tensor> = None;
        for ((x, conv), norm) in xs.iter().zip(&self.convs).zip(&self.norms) {
            let h = conv
                .forward(&norm.forward(x, labels))
                .resize_bilinear(shape);
            sum = Some(match sum {
                Some(s) => s.add(&h),
                None => h,
            });
        }
        sum.expect("CondMsfBlock: no inputs")
    }
    // ANCHOR_END: msf_forward
}

/// The reference's `CondRefineBlock`: adapt each input with a 2×2 [`CondRcuBlock`]
/// (`adapt_convs.{i}`), fuse them ([`CondMsfBlock`], `msf`, absent in the first block), chained
/// residual pooling (`crp`), and an output [`CondRcuBlock`] (`output_convs`: 1 unit, 3 in the last
/// block).
#[derive(Clone)]
pub struct CondRefineBlock {
    adapt_convs: Vec<CondRcuBlock>,
    output_convs: CondRcuBlock,
    msf: Option<CondMsfBlock>,
    crp: CondCrpBlock,
}

impl CondRefineBlock {
    /// A refine block over inputs of `in_planes` channels with `features` output channels.
    pub fn new(
        path: &Path,
        in_planes: &[usize],
        features: usize,
        num_classes: usize,
        start: bool,
        end: bool,
        rng: &mut impl Rng,
    ) -> Self {
        let adapt_convs = in_planes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                CondRcuBlock::new(&path.sub("adapt_convs").sub(i), c, 2, 2, num_classes, rng)
            })
            .collect();
        let n_out = if end { 3 } else { 1 };
        let output_convs = CondRcuBlock::new(
            &path.sub("output_convs"),
            features,
            n_out,
            2,
            num_classes,
            rng,
        );
        let msf = (!start)
            .then(|| CondMsfBlock::new(&path.sub("msf"), in_planes, features, num_classes, rng));
        let crp = CondCrpBlock::new(&path.sub("crp"), features, 2, num_classes, rng);
        CondRefineBlock {
            adapt_convs,
            output_convs,
            msf,
            crp,
        }
    }

    /// Refines `xs` (one tensor per input) to spatial size `shape`.
    pub fn forward(&self, xs: &[Tensor], labels: &[usize], shape: (usize, usize)) -> Tensor {
        let hs: Vec<Tensor> = xs
            .iter()
            .zip(&self.adapt_convs)
            .map(|(x, rcu)| rcu.forward(x, labels))
            .collect();
        let h = match (&self.msf, hs.len()) {
            (Some(msf), n) if n > 1 => msf.forward(&hs, labels, shape),
            _ => hs[0].clone(),
        };
        let h = self.crp.forward(&h, labels);
        self.output_convs.forward(&h, labels)
    }
}

/// The NCSN score network (the reference's `CondRefineNetDilated`); see the module docs.
#[derive(Clone)]
pub struct CondRefineNetDilated {
    /// The sizes.
    pub config: RefineNetConfig,
    /// The store holding the parameters under the reference's names.
    pub store: ParamStore,
    begin_conv: Conv2d,
    normalizer: CondInstanceNorm2dPlus,
    end_conv: Conv2d,
    res: [Vec<CondResBlock>; 4],
    refine: [CondRefineBlock; 4],
}

impl CondRefineNetDilated {
    /// A freshly initialised network with its own [`ParamStore`].
    pub fn new(config: RefineNetConfig, rng: &mut impl Rng) -> Self {
        Self::with_store(&ParamStore::new(), config, rng)
    }

    /// A network registered at the root of `store` (which must not yet hold these names).
    pub fn with_store(store: &ParamStore, config: RefineNetConfig, rng: &mut impl Rng) -> Self {
        let root = store.root();
        let (ngf, l, ch) = (config.ngf, config.num_classes, config.channels);
        let begin_conv = Conv2d::conv3x3(&root.sub("begin_conv"), ch, ngf, true, rng);
        let normalizer = CondInstanceNorm2dPlus::new(&root.sub("normalizer"), ngf, l, rng);
        let end_conv = Conv2d::conv3x3(&root.sub("end_conv"), ngf, ch, true, rng);
        // (input width, output width, resample, dilation) of the two blocks of each stage.
        let stages = [
            [
                (ngf, ngf, Resample::None, None),
                (ngf, ngf, Resample::None, None),
            ],
            [
                (ngf, 2 * ngf, Resample::Down, None),
                (2 * ngf, 2 * ngf, Resample::None, None),
            ],
            [
                (2 * ngf, 2 * ngf, Resample::Down, Some(2)),
                (2 * ngf, 2 * ngf, Resample::None, Some(2)),
            ],
            [
                (2 * ngf, 2 * ngf, Resample::Down, Some(4)),
                (2 * ngf, 2 * ngf, Resample::None, Some(4)),
            ],
        ];
        let res = std::array::from_fn(|s| {
            let path = root.sub(format!("res{}", s + 1));
            stages[s]
                .iter()
                .enumerate()
                .map(|(b, &(i, o, r, d))| CondResBlock::new(&path.sub(b), i, o, l, r, d, rng))
                .collect()
        });
        let (f1, f2) = (ngf, 2 * ngf);
        let refine = [
            CondRefineBlock::new(&root.sub("refine1"), &[f2], f2, l, true, false, rng),
            CondRefineBlock::new(&root.sub("refine2"), &[f2, f2], f2, l, false, false, rng),
            CondRefineBlock::new(&root.sub("refine3"), &[f2, f2], f1, l, false, false, rng),
            CondRefineBlock::new(&root.sub("refine4"), &[f1, f1], f1, l, false, true, rng),
        ];
        CondRefineNetDilated {
            config,
            store: store.clone(),
            begin_conv,
            normalizer,
            end_conv,
            res,
            refine,
        }
    }

    // ANCHOR: refinenet_forward
    /// The score s_θ(x, y) for images x (N, C, H, W) in [0, 1] and noise level indices `labels`
    /// (N values below `num_classes`).
    pub fn forward(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        assert_eq!(
            labels.len(),
            x.shape()[0],
            "CondRefineNetDilated: {} labels for a batch of {}",
            labels.len(),
            x.shape()[0]
        );
        if let Some(&bad) = labels.iter().find(|&&y| y >= self.config.num_classes) {
            panic!(
                "CondRefineNetDilated: label {bad} out of range for {} noise levels",
                self.config.num_classes
            );
        }
        let x = if self.config.logit_transform {
            x.clone()
        } else {
            x.mul_scalar(2.0).add_scalar(-1.0) // [0, 1] → [−1, 1]
        };
        let stage = |blocks: &[CondResBlock], h: &Tensor| {
            blocks.iter().fold(h.clone(), |h, b| b.forward(&h, labels))
        };
        let h = self.begin_conv.forward(&x);
        let layer1 = stage(&self.res[0], &h);
        let layer2 = stage(&self.res[1], &layer1);
        let layer3 = stage(&self.res[2], &layer2);
        let layer4 = stage(&self.res[3], &layer3);

        let size = |t: &Tensor| (t.shape()[2], t.shape()[3]);
        let ref1 = self.refine[0].forward(std::slice::from_ref(&layer4), labels, size(&layer4));
        let ref2 = self.refine[1].forward(&[layer3.clone(), ref1], labels, size(&layer3));
        let ref3 = self.refine[2].forward(&[layer2.clone(), ref2], labels, size(&layer2));
        let out = self.refine[3].forward(&[layer1.clone(), ref3], labels, size(&layer1));

        let out = act(&self.normalizer.forward(&out, labels));
        self.end_conv.forward(&out)
    }
    // ANCHOR_END: refinenet_forward
}
