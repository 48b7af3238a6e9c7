//! The memorisation check of the paper's Fig. 9–10 (pixel variant): for each generated picture,
//! its nearest neighbours in the training set by Euclidean distance in pixel space.
//!
//! If a model only reproduced training pictures, each sample would sit at distance ≈ 0 from one of
//! them. The search is exhaustive: every query against every training picture, in parallel over
//! the training set with rayon (each thread keeps the best `k` of its share; the shares are then
//! merged), with ties broken by the smaller index so that the answer does not depend on the
//! number of threads.

use ndarray::{Array4, ArrayView4, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;

/// One neighbour of a query.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    /// Index of the training picture.
    pub index: usize,
    /// Euclidean distance in pixel space, intensities in `[0, 1]`. NaN for a sample that is not
    /// a number (a sampler that diverged); JSON has no NaN, so it is written as `null` and read
    /// back as NaN.
    #[serde(deserialize_with = "nan_from_null")]
    pub distance: f32,
}

/// An `f32` that serde_json wrote as `null` (which it does for NaN and the infinities) is NaN.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

/// Keeps the `k` best (smallest distance, then smallest index) of `list`, sorted.
fn keep_best(list: &mut Vec<Neighbour>, k: usize) {
    list.sort_by(|a, b| {
        a.distance
            .total_cmp(&b.distance)
            .then(a.index.cmp(&b.index))
    });
    list.truncate(k);
}

// ANCHOR: nearest
/// The `k` nearest training pictures of each query, by pixel-space L2 distance, nearest first.
///
/// `queries` is `(Q, C, H, W)` in `[0, 1]` (values outside are clamped, as when the samples are
/// shown); the training pictures are compared as `intensity / 255`. Panics if the picture shapes
/// differ.
pub fn nearest_neighbours(
    queries: ArrayView4<f32>,
    train: &Dataset,
    k: usize,
) -> Vec<Vec<Neighbour>> {
    let (_, c, h, w) = queries.dim();
    assert_eq!(
        (c, h, w),
        train.image_shape(),
        "nearest_neighbours: queries are {:?}, training pictures {:?}",
        (c, h, w),
        train.image_shape()
    );
    let d = c * h * w;
    let q: Vec<Vec<f32>> = queries
        .outer_iter()
        .map(|x| x.iter().map(|v| v.clamp(0.0, 1.0)).collect())
        .collect();
    let pixels = train.images.as_standard_layout();
    let flat = pixels.as_slice().expect("standard layout");
    let merge = |mut a: Vec<Vec<Neighbour>>, b: Vec<Vec<Neighbour>>| {
        for (x, y) in a.iter_mut().zip(b) {
            x.extend(y);
            keep_best(x, k);
        }
        a
    };
    flat.par_chunks(d)
        .enumerate()
        .fold(
            || vec![Vec::new(); q.len()],
            |mut best, (index, picture)| {
                for (query, list) in q.iter().zip(best.iter_mut()) {
                    let d2: f32 = query
                        .iter()
                        .zip(picture)
                        .map(|(&a, &b)| {
                            let t = a - f32::from(b) / 255.0;
                            t * t
                        })
                        .sum();
                    list.push(Neighbour {
                        index,
                        distance: d2.sqrt(),
                    });
                    if list.len() >= 4 * k.max(8) {
                        keep_best(list, k);
                    }
                }
                best
            },
        )
        .map(|mut best| {
            best.iter_mut().for_each(|l| keep_best(l, k));
            best
        })
        .reduce(|| vec![Vec::new(); q.len()], merge)
}
// ANCHOR_END: nearest

/// The figure as one batch laid out `k + 1` to a row: each query, then its neighbours.
pub fn nearest_grid(
    queries: ArrayView4<f32>,
    train: &Dataset,
    found: &[Vec<Neighbour>],
) -> Array4<f32> {
    let (n, c, h, w) = queries.dim();
    let k = found.iter().map(Vec::len).max().unwrap_or(0);
    let cols = k + 1;
    let mut out = Array4::zeros((n * cols, c, h, w));
    for (i, list) in found.iter().enumerate().take(n) {
        out.index_axis_mut(Axis(0), i * cols)
            .assign(&queries.index_axis(Axis(0), i));
        for (j, nb) in list.iter().enumerate() {
            let pic = train.gather_f32(&[nb.index]);
            out.index_axis_mut(Axis(0), i * cols + 1 + j)
                .assign(&pic.index_axis(Axis(0), 0));
        }
    }
    out
}
