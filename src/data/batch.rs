//! Shuffled, transformed mini-batches from a [`Dataset`], reproducible from a seed.
//!
//! [`Batches`] is an endless iterator: it walks the dataset in a random order, one mini-batch at a
//! time, and at the end of each epoch draws a fresh order and goes on, so training loops that count
//! steps (as the reference does, `n_iters`) simply `take` what they need. All randomness (the order,
//! the flips, the dequantisation noise) comes from one `ChaCha8Rng` seeded explicitly, consumed in a
//! fixed order: one shuffle at the start of each epoch, then per batch the flips, then the noise.
//! The same dataset, options and seed give the same batches, bit for bit, on every platform.
//! A run resumed from a checkpoint at step `k` calls [`Batches::skip_batches`]`(k)` to see the
//! batches it would have seen had it never stopped.

use ndarray::{Array4, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::Dataset;
use super::transform::{self, Transform};
use crate::{Error, Result};

/// How [`Batches`] cuts and transforms a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchOptions {
    /// Pictures per batch (the last batch of an epoch may be smaller, see `drop_last`).
    pub batch_size: usize,
    /// Draw a new random order every epoch (`true`, for training) or keep dataset order.
    pub shuffle: bool,
    /// Drop the last, smaller batch of each epoch instead of yielding it. The reference's
    /// `DataLoader` keeps it (`drop_last=False`).
    pub drop_last: bool,
    /// The transforms applied to each batch.
    pub transform: Transform,
}

impl BatchOptions {
    /// Shuffled batches of `batch_size`, last batch kept, with the given transforms.
    pub fn new(batch_size: usize, transform: Transform) -> Self {
        BatchOptions {
            batch_size,
            shuffle: true,
            drop_last: false,
            transform,
        }
    }
}

/// One mini-batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The transformed pictures, `(B, C, H, W)`.
    pub images: Array4<f32>,
    /// Their labels, if the dataset has labels.
    pub labels: Option<Vec<u8>>,
    /// The dataset index of each picture.
    pub indices: Vec<usize>,
    /// The epoch this batch belongs to, counting from 0.
    pub epoch: usize,
}

/// An endless iterator of shuffled, transformed mini-batches over a [`Dataset`]; see the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    opts: BatchOptions,
    rng: ChaCha8Rng,
    order: Vec<usize>,
    pos: usize,
    epoch: usize,
    step: usize,
}

impl<'a> Batches<'a> {
    /// Batches over `dataset` with randomness from `ChaCha8Rng::seed_from_u64(seed)`.
    ///
    /// Fails with [`Error::Invalid`] if the batch size is zero, the dataset is empty, or
    /// `drop_last` is set and the dataset holds fewer pictures than one batch (no batch at all).
    pub fn new(dataset: &'a Dataset, opts: BatchOptions, seed: u64) -> Result<Self> {
        Self::with_rng(dataset, opts, ChaCha8Rng::seed_from_u64(seed))
    }

    /// Batches over `dataset` with randomness from `rng` (for a generator seeded from a full
    /// 32-byte seed, or one that continues an earlier stream). Fails as [`Batches::new`].
    pub fn with_rng(dataset: &'a Dataset, opts: BatchOptions, rng: ChaCha8Rng) -> Result<Self> {
        if opts.batch_size == 0 {
            return Err(Error::Invalid("batch size must be at least 1".into()));
        }
        if dataset.is_empty() {
            return Err(Error::Invalid("cannot batch an empty dataset".into()));
        }
        if opts.drop_last && dataset.len() < opts.batch_size {
            return Err(Error::Invalid(format!(
                "drop_last with batch size {} over {} pictures yields no batch",
                opts.batch_size,
                dataset.len()
            )));
        }
        let mut batches = Batches {
            dataset,
            opts,
            rng,
            order: (0..dataset.len()).collect(),
            pos: 0,
            epoch: 0,
            step: 0,
        };
        batches.start_epoch();
        Ok(batches)
    }

    /// Draws the order of the current epoch.
    fn start_epoch(&mut self) {
        self.pos = 0;
        if self.opts.shuffle {
            self.order.shuffle(&mut self.rng);
        }
    }

    /// Whether the current epoch has no batch left.
    fn epoch_done(&self) -> bool {
        let n = self.order.len();
        self.pos >= n || (self.opts.drop_last && self.pos + self.opts.batch_size > n)
    }

    /// The epoch the next batch belongs to, counting from 0.
    pub fn epoch(&self) -> usize {
        self.epoch + usize::from(self.epoch_done())
    }

    /// The number of batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.opts.batch_size);
        if self.opts.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The number of batches yielded (or skipped) so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Skips `n` batches cheaply, leaving the iterator exactly where `n` calls to `next` would
    /// have: the epochs are shuffled as usual, but the random numbers the skipped batches would
    /// have drawn for flips and noise are jumped over without being generated. For resuming a
    /// run from a checkpoint at step `n` with the same batches it would have seen.
    pub fn skip_batches(&mut self, n: usize) {
        let (c, h, w) = self.dataset.image_shape();
        let t = self.opts.transform;
        for _ in 0..n {
            if self.epoch_done() {
                self.epoch += 1;
                self.start_epoch();
            }
            let len = (self.pos + self.opts.batch_size).min(self.order.len()) - self.pos;
            self.pos += len;
            self.step += 1;
            // One 32-bit word per f32 draw: one per picture for the flips, one per value for
            // the noise (see `next`).
            let words =
                usize::from(t.random_flip) * len + usize::from(t.dequantize) * len * c * h * w;
            self.rng
                .set_word_pos(self.rng.get_word_pos() + words as u128);
        }
    }

    /// The options this iterator was made with.
    pub fn options(&self) -> &BatchOptions {
        &self.opts
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    /// The next batch; never `None`.
    fn next(&mut self) -> Option<Batch> {
        if self.epoch_done() {
            self.epoch += 1;
            self.start_epoch();
        }
        let end = (self.pos + self.opts.batch_size).min(self.order.len());
        let indices = self.order[self.pos..end].to_vec();
        self.pos = end;
        self.step += 1;

        let t = self.opts.transform;
        let mut pixels = self.dataset.images.select(Axis(0), &indices);
        if t.random_flip {
            transform::random_hflip(&mut pixels, &mut self.rng);
        }
        // As torchvision's ToTensor: intensity / 255.
        let mut images = pixels.mapv(|v| f32::from(v) / 255.0);
        if t.dequantize {
            transform::dequantize(&mut images, &mut self.rng);
        }
        if t.logit {
            transform::logit(&mut images);
        }
        let labels = self
            .dataset
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        Some(Batch {
            images,
            labels,
            indices,
            epoch: self.epoch,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}
