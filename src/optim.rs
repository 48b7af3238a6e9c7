//! Optimizers that update named parameters in place: [`Sgd`], [`Adam`], and an exponential moving
//! average of parameters, [`Ema`].
//!
//! The update rules are PyTorch's (`torch.optim.SGD`, `torch.optim.Adam`, single-tensor
//! implementations), written out so that a step can be checked by hand; the reference NCSN code
//! trains with Adam (lr 1e-3, β = (0.9, 0.999), no weight decay, amsgrad off) and samples with an
//! EMA of the weights (μ = 0.999) in its later version.
//!
//! Hyper-parameters are `f64`, as PyTorch's are Python floats: a scalar such as `1 − β₂` is worked
//! out in double precision and rounded to the tensors' `f32` once, as the reference does.

use crate::autograd::Gradients;
use crate::tensor::{Tensor, contiguous, fastmath};
use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};
use std::collections::BTreeMap;

/// An optimizer's state for a checkpoint: named tensors, and scalars (step counts) as strings.
pub type StateDict = (Vec<(String, ArrayD<f32>)>, BTreeMap<String, String>);

/// Stochastic gradient descent with momentum, PyTorch's `torch.optim.SGD`.
pub struct Sgd {
    params: Vec<(String, Tensor)>,
    /// The settings.
    pub config: SgdConfig,
    momentum_buffers: Vec<Option<ArrayD<f32>>>,
}

/// Settings of [`Sgd`].
#[derive(Clone, Copy, Debug)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 for plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum buffer's new term.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl Sgd {
    /// An optimizer over the given named parameters (e.g. `store.named_params()`).
    pub fn new(params: Vec<(String, Tensor)>, config: SgdConfig) -> Self {
        let n = params.len();
        Sgd {
            params,
            config,
            momentum_buffers: vec![None; n],
        }
    }

    /// One update from `grads`; parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &Gradients) {
        let c = self.config;
        // The scalars in f32, each rounded once from the f64 settings.
        let (lr, momentum, keep, wd) = (
            c.lr as f32,
            c.momentum as f32,
            (1.0 - c.dampening) as f32,
            c.weight_decay as f32,
        );
        for ((_, p), buf) in self.params.iter().zip(&mut self.momentum_buffers) {
            let Some(g) = grads.get(p) else { continue };
            let mut d = g.to_array(); // d = g + λ·p
            if wd != 0.0 {
                d.scaled_add(wd, &p.storage());
            }
            if momentum != 0.0 {
                let b = match buf.take() {
                    None => d.clone(), // first step: buf = d
                    Some(mut b) => {
                        b.zip_mut_with(&d, |b, &d| *b = momentum * *b + keep * d);
                        b
                    }
                };
                if c.nesterov {
                    d.zip_mut_with(&b, |d, &b| *d += momentum * b)
                } else {
                    d.assign(&b)
                }
                *buf = Some(b);
            }
            p.update_data(|p| p.scaled_add(-lr, &d)); // p ← p − lr·d
        }
    }
}

/// Settings of [`Adam`]; the defaults are PyTorch's.
///
/// They are `f64`, as PyTorch's are Python floats: the update uses `1 − β₁`, `1 − β₂` and
/// `lr/(1 − β₁ᵗ)`, which PyTorch works out in double precision and rounds to `f32` once. From an
/// `f32` β₂ = 0.999 (0.99900001…), `1 − β₂` would be 0.00099998713 instead of 0.001: a second
/// moment 1.3·10⁻⁵ too small, about a hundred units in the last place.
#[derive(Clone, Copy, Debug)]
pub struct AdamConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Decay of the first-moment average (0.9).
    pub beta1: f64,
    /// Decay of the second-moment average (0.999).
    pub beta2: f64,
    /// Added to the denominator after the square root (1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (0).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        }
    }
}

/// The `f32` numbers of one Adam step, rounded from `f64` where PyTorch rounds them: its
/// hyper-parameters are Python floats, combined in double precision (`1 − β`, the bias
/// corrections `1 − βᵗ`, `lr/(1 − β₁ᵗ)`) and cast to the tensors' `f32` by the kernels that take
/// them. The bias corrections in particular cancel badly in `f32` (1 − β₂ᵗ has a relative error of
/// 3·10⁻⁵ at t = 2).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamWeights {
    /// The weight of the gradient in the first moment, `1 − β₁` (`exp_avg.lerp_(grad, 1 − β₁)`).
    pub one_minus_beta1: f32,
    /// The decay of the second moment, β₂ (`exp_avg_sq.mul_(β₂)`).
    pub beta2: f32,
    /// The weight of g² in the second moment, `1 − β₂` (`addcmul_(grad, grad, value=1 − β₂)`).
    pub one_minus_beta2: f32,
    /// `lr/(1 − β₁ᵗ)`.
    pub step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bias2_sqrt: f32,
    /// ε.
    pub eps: f32,
    /// λ.
    pub weight_decay: f32,
}

// ANCHOR: adam_weights
impl AdamWeights {
    /// The numbers of step `step` (counted from 1).
    pub fn new(c: &AdamConfig, step: u64) -> Self {
        // Python's `beta ** step` with the step a float, as `torch.optim.Adam` keeps it.
        let t = step as f64;
        AdamWeights {
            one_minus_beta1: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            step_size: (c.lr / (1.0 - c.beta1.powf(t))) as f32,
            bias2_sqrt: (1.0 - c.beta2.powf(t)).sqrt() as f32,
            eps: c.eps as f32,
            weight_decay: c.weight_decay as f32,
        }
    }
}
// ANCHOR_END: adam_weights

/// The per-parameter state of [`Adam`].
#[derive(Clone)]
struct AdamState {
    step: u64,
    exp_avg: ArrayD<f32>,
    exp_avg_sq: ArrayD<f32>,
    max_exp_avg_sq: Option<ArrayD<f32>>,
    /// The moments as device tensors, for a parameter on a Vulkan device; they supersede the
    /// arrays above while set.
    #[cfg(feature = "vulkan")]
    on_device: Option<DeviceMoments>,
}

/// [`AdamState`]'s arrays on a Vulkan device.
#[cfg(feature = "vulkan")]
#[derive(Clone)]
struct DeviceMoments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
}

/// Adam (Kingma & Ba), with PyTorch's bias correction, weight decay and AMSGrad flag.
pub struct Adam {
    params: Vec<(String, Tensor)>,
    /// The settings.
    pub config: AdamConfig,
    state: Vec<Option<AdamState>>,
}

impl Adam {
    /// An optimizer over the given named parameters (e.g. `store.named_params()`).
    pub fn new(params: Vec<(String, Tensor)>, config: AdamConfig) -> Self {
        let n = params.len();
        Adam {
            params,
            config,
            state: vec![None; n],
        }
    }

    /// One update from `grads`; parameters without a gradient are left alone (and their step
    /// count does not advance), as in PyTorch.
    // ANCHOR: adam_step
    pub fn step(&mut self, grads: &Gradients) {
        let c = self.config;
        for ((_, p), state) in self.params.iter().zip(&mut self.state) {
            let Some(g) = grads.get(p) else { continue };
            let shape = IxDyn(p.shape());
            let s = state.get_or_insert_with(|| AdamState {
                step: 0,
                exp_avg: ArrayD::zeros(shape.clone()),
                exp_avg_sq: ArrayD::zeros(shape.clone()),
                max_exp_avg_sq: c.amsgrad.then(|| ArrayD::zeros(shape.clone())),
                #[cfg(feature = "vulkan")]
                on_device: None,
            });
            s.step += 1;
            // A parameter on a Vulkan device: the same update as one kernel there.
            #[cfg(feature = "vulkan")]
            if !p.device().is_cpu() {
                s.device_step(p, g, c);
                continue;
            }
            #[cfg(feature = "vulkan")]
            if let Some(d) = s.on_device.take() {
                // Back on the CPU: the moments come home once.
                s.exp_avg = d.exp_avg.to_array();
                s.exp_avg_sq = d.exp_avg_sq.to_array();
                s.max_exp_avg_sq = d.max_exp_avg_sq.as_ref().map(Tensor::to_array);
            }
            let w = AdamWeights::new(&c, s.step);
            let g = g.storage();
            // The update below is a loop over row-major slices. Gradients arrive in their
            // weight's own layout, so this borrows; only a gradient with other strides (a
            // permuted view) is copied.
            let g = contiguous(&g);
            let g = ArrayViewD::from_shape(p.shape(), &g).expect("gradient shape");
            // The moments, then the step along m scaled by the v it is given (v itself, or
            // AMSGrad's running maximum of it): both variants share these two.
            let moments = |p: f32, g: f32, m: &mut f32, v: &mut f32| {
                let g = g + w.weight_decay * p; //                g ← g + λ·p
                *m += w.one_minus_beta1 * (g - *m); //            m ← m + (1 − β₁)(g − m)
                *v = w.beta2 * *v + w.one_minus_beta2 * g * g; // v ← β₂v + (1 − β₂)g²
            };
            let descend = |p: &mut f32, m: f32, v: f32| {
                let denom = v.sqrt() / w.bias2_sqrt + w.eps; //   √(v/(1 − β₂ᵗ)) + ε
                *p -= w.step_size * m / denom; //                 p ← p − lr/(1 − β₁ᵗ)·m/denom
            };
            let update = |p: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
                moments(*p, g, m, v);
                descend(p, *m, *v);
            };
            p.update_data(|p| match s.max_exp_avg_sq.as_mut() {
                // Row-major data everywhere (the usual case): a plain loop over slices, which
                // the compiler vectorises; otherwise ndarray's Zip walks any layout.
                None => match (
                    p.as_slice_mut(),
                    g.as_slice(),
                    s.exp_avg.as_slice_mut(),
                    s.exp_avg_sq.as_slice_mut(),
                ) {
                    (Some(ps), Some(gs), Some(ms), Some(vs)) => fastmath::dispatch(
                        #[inline(always)]
                        || {
                            for (((p, &g), m), v) in ps.iter_mut().zip(gs).zip(ms).zip(vs) {
                                update(p, g, m, v);
                            }
                        },
                    ),
                    _ => Zip::from(p)
                        .and(&g)
                        .and(&mut s.exp_avg)
                        .and(&mut s.exp_avg_sq)
                        .for_each(|p, &g, m, v| update(p, g, m, v)),
                },
                Some(vmax) => Zip::from(p)
                    .and(&g)
                    .and(&mut s.exp_avg)
                    .and(&mut s.exp_avg_sq)
                    .and(vmax)
                    .for_each(|p, &g, m, v, vmax| {
                        moments(*p, g, m, v);
                        // AMSGrad: the running maximum of v, passing a NaN on as torch.maximum
                        // does (f32::max would keep the other operand).
                        if *v > *vmax || v.is_nan() {
                            *vmax = *v;
                        }
                        descend(p, *m, *vmax);
                    }),
            });
        }
    }
    // ANCHOR_END: adam_step

    /// The optimizer state for a checkpoint: tensors named `<param>.exp_avg`, `<param>.exp_avg_sq`
    /// (and `<param>.max_exp_avg_sq`), and the step count of each parameter as metadata
    /// `<param>.step`.
    pub fn state_dict(&self) -> StateDict {
        let mut tensors = Vec::new();
        let mut meta = BTreeMap::new();
        for ((name, _), s) in self.params.iter().zip(&self.state) {
            let Some(s) = s else { continue };
            #[cfg(feature = "vulkan")]
            if let Some(d) = &s.on_device {
                tensors.push((format!("{name}.exp_avg"), d.exp_avg.to_array()));
                tensors.push((format!("{name}.exp_avg_sq"), d.exp_avg_sq.to_array()));
                if let Some(m) = &d.max_exp_avg_sq {
                    tensors.push((format!("{name}.max_exp_avg_sq"), m.to_array()));
                }
                meta.insert(format!("{name}.step"), s.step.to_string());
                continue;
            }
            tensors.push((format!("{name}.exp_avg"), s.exp_avg.clone()));
            tensors.push((format!("{name}.exp_avg_sq"), s.exp_avg_sq.clone()));
            if let Some(m) = &s.max_exp_avg_sq {
                tensors.push((format!("{name}.max_exp_avg_sq"), m.clone()));
            }
            meta.insert(format!("{name}.step"), s.step.to_string());
        }
        (tensors, meta)
    }

    /// Restores a state written by [`Adam::state_dict`]. Checks everything first and changes
    /// nothing on error.
    ///
    /// A parameter without a step count has no state yet (it has had no gradient), as in PyTorch.
    /// Everything in the state must belong to a parameter: a step count or moment under a name that
    /// matches none (a renamed parameter, a damaged file) is an error, since dropping it would
    /// quietly restart that parameter's moments.
    pub fn load_state_dict(
        &mut self,
        tensors: &BTreeMap<String, ArrayD<f32>>,
        meta: &BTreeMap<String, String>,
    ) -> crate::Result<()> {
        let counted = |name: &str| self.params.iter().any(|(n, _)| n == name);
        if let Some(key) = meta
            .keys()
            .find(|k| !k.strip_suffix(".step").is_some_and(counted))
        {
            return Err(crate::Error::Invalid(format!(
                "optimizer state: `{key}` is the step count of no parameter"
            )));
        }
        let owned = |key: &str| {
            ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"].iter().any(|m| {
                key.strip_suffix(m)
                    .and_then(|k| k.strip_suffix('.'))
                    .is_some_and(|n| meta.contains_key(&format!("{n}.step")))
            })
        };
        if let Some(key) = tensors.keys().find(|k| !owned(k)) {
            return Err(crate::Error::Invalid(format!(
                "optimizer state: tensor `{key}` belongs to no parameter with a step count"
            )));
        }
        // AMSGrad's running maxima, loaded into plain Adam, would be dropped without a word: the
        // run would go on as another algorithm. (The other way round, `fetch` finds them missing.)
        if !self.config.amsgrad
            && let Some(key) = tensors.keys().find(|k| k.ends_with(".max_exp_avg_sq"))
        {
            return Err(crate::Error::Invalid(format!(
                "optimizer state: `{key}` is AMSGrad's, and this optimizer is plain Adam \
                 (resume with amsgrad on)"
            )));
        }
        let mut new_state = Vec::with_capacity(self.params.len());
        for (name, p) in &self.params {
            let Some(step) = meta.get(&format!("{name}.step")) else {
                new_state.push(None);
                continue;
            };
            // At least one step was taken, and few enough that β^step and the count's own
            // increment stay exact (a count of u64::MAX would wrap to 0 and divide by 1 − β⁰ = 0).
            let step: u64 = step
                .parse()
                .ok()
                .filter(|s| (1..1 << 53).contains(s))
                .ok_or_else(|| {
                    crate::Error::Invalid(format!(
                        "optimizer state: bad step count `{step}` for `{name}`"
                    ))
                })?;
            let fetch = |suffix: &str| -> crate::Result<ArrayD<f32>> {
                let key = format!("{name}.{suffix}");
                let t = tensors.get(&key).ok_or_else(|| {
                    crate::Error::Invalid(format!("optimizer state: missing tensor `{key}`"))
                })?;
                if t.shape() != p.shape() {
                    return Err(crate::Error::Invalid(format!(
                        "optimizer state: `{key}` has shape {:?}, parameter has {:?}",
                        t.shape(),
                        p.shape()
                    )));
                }
                Ok(t.clone())
            };
            let max_exp_avg_sq = if self.config.amsgrad {
                Some(fetch("max_exp_avg_sq")?)
            } else {
                None
            };
            new_state.push(Some(AdamState {
                step,
                exp_avg: fetch("exp_avg")?,
                exp_avg_sq: fetch("exp_avg_sq")?,
                max_exp_avg_sq,
                #[cfg(feature = "vulkan")]
                on_device: None,
            }));
        }
        self.state = new_state;
        Ok(())
    }
}

#[cfg(feature = "vulkan")]
impl AdamState {
    /// One step (the count already advanced) for a parameter on a Vulkan device: the moments
    /// move to the device on the first such step (zeros made there, or the loaded values
    /// uploaded once) and the update runs as `shaders/adam.comp` (`adam_amsgrad.comp`).
    fn device_step(&mut self, p: &Tensor, g: &Tensor, c: AdamConfig) {
        let device = p.device();
        let d = self.on_device.get_or_insert_with(|| {
            let moved = |a: &ArrayD<f32>| {
                if self.step == 1 {
                    Tensor::full_on(a.shape(), 0.0, &device)
                } else {
                    Tensor::from_array(a.clone()).to(&device)
                }
            };
            DeviceMoments {
                exp_avg: moved(&self.exp_avg),
                exp_avg_sq: moved(&self.exp_avg_sq),
                max_exp_avg_sq: self.max_exp_avg_sq.as_ref().map(moved),
            }
        });
        let cfg = crate::backend::vulkan::AdamConfig {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
        };
        p.adam_step_on_device(
            g,
            &d.exp_avg,
            &d.exp_avg_sq,
            d.max_exp_avg_sq.as_ref(),
            cfg,
            self.step,
        );
    }
}

/// An exponential moving average of parameters, as the reference's `EMAHelper`:
/// shadow ← (1 − μ)·param + μ·shadow after each optimizer step.
///
/// The averages live where the parameters live: on a Vulkan device the update is two scalings
/// and a sum there, and nothing passes through the host until a checkpoint asks for
/// [`Ema::shadow`].
pub struct Ema {
    /// The decay μ (the reference uses 0.999).
    pub mu: f64,
    params: Vec<(String, Tensor)>,
    shadow: Vec<Tensor>,
}

impl Ema {
    /// Starts the average at the parameters' current values.
    pub fn new(params: Vec<(String, Tensor)>, mu: f64) -> Self {
        let shadow = params.iter().map(|(_, p)| p.detach()).collect();
        Ema { mu, params, shadow }
    }

    /// Folds the parameters' current values into the average.
    // ANCHOR: ema_update
    pub fn update(&mut self) {
        // `(1. - mu) * param + mu * shadow` in the reference: 1 − μ in double precision, then f32.
        let (keep, mu) = ((1.0 - self.mu) as f32, self.mu as f32);
        crate::no_grad(|| {
            for ((_, p), s) in self.params.iter().zip(&mut self.shadow) {
                // A parameter moved to another device since: its average follows it, once.
                if s.device() != p.device() {
                    *s = s.to(&p.device());
                }
                *s = p.mul_scalar(keep).add(&s.mul_scalar(mu));
            }
        })
    }
    // ANCHOR_END: ema_update

    /// The averaged values with their parameter names (copied to the host).
    pub fn shadow(&self) -> Vec<(String, ArrayD<f32>)> {
        self.params
            .iter()
            .map(|(n, _)| n.clone())
            .zip(self.shadow.iter().map(Tensor::to_array))
            .collect()
    }

    /// Replaces the averaged values with `shadow` (from a checkpoint), keyed by parameter name,
    /// each on its parameter's device. Checks every name and shape first and changes nothing on
    /// error.
    pub fn load_shadow(&mut self, shadow: &BTreeMap<String, ArrayD<f32>>) -> crate::Result<()> {
        let mut found = Vec::with_capacity(self.params.len());
        for (name, p) in &self.params {
            let s = shadow.get(name).ok_or_else(|| {
                crate::Error::Invalid(format!("EMA state: missing tensor `{name}`"))
            })?;
            if s.shape() != p.shape() {
                return Err(crate::Error::Invalid(format!(
                    "EMA state: `{name}` has shape {:?}, parameter has {:?}",
                    s.shape(),
                    p.shape()
                )));
            }
            found.push(s);
        }
        self.shadow = found
            .into_iter()
            .zip(&self.params)
            .map(|(s, (_, p))| Tensor::from_array(s.clone()).to(&p.device()))
            .collect();
        Ok(())
    }

    /// Writes the averaged values into the parameters (e.g. before sampling), device to device.
    pub fn copy_to_params(&self) {
        for ((_, p), s) in self.params.iter().zip(&self.shadow) {
            p.set_data_from(&s.to(&p.device()));
        }
    }
}
