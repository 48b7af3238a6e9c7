//! SVG figures for the two-dimensional experiments: density heatmaps, score fields, samples and loss
//! curves.
//!
//! These draw the paper's Fig. 1 (loss curves, [`lines`]), Fig. 2 (data density, true and estimated
//! scores: [`heatmap`], [`quiver`]) and Fig. 3 (i.i.d., Langevin and annealed Langevin samples:
//! [`scatter`]), and the samplers' paths of the score-SDE chapter ([`paths`]). Everything is
//! written with [plotters]' SVG backend, which needs no system fonts: text is emitted as SVG
//! `<text>` elements and rendered by the viewer.
//!
//! The 2-D plots are framed by a [`Grid`]: its ranges are the axes, and its cell centres are where
//! densities and fields are evaluated. A typical figure:
//!
//! ```no_run
//! use ncsn::plot::{self, ArrowScale, Figure, Grid};
//! use ncsn::toy::{ClosedFormScore, GaussianMixture};
//!
//! let p = GaussianMixture::paper();
//! let grid = Grid::square(-8.0, 8.0, 20);
//! let pts = grid.points();
//! let fine = Grid::square(-8.0, 8.0, 120);
//! plot::quiver(
//!     "scores.svg",
//!     &Figure::new("Data scores"),
//!     &grid,
//!     p.score(pts.view()).view(),
//!     ArrowScale::Linear,
//!     Some((&fine, p.log_prob(fine.points().view()).view())),
//! )?;
//! # Ok::<(), ncsn::Error>(())
//! ```
//!
//! Errors (a directory that does not exist, a full disk) come back as [`Error::Io`] naming the file.
//! Shapes that do not match the grid are programmer errors and panic.

use std::path::Path;

use ndarray::{Array2, ArrayView1, ArrayView2};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;
use plotters_backend::DrawingErrorKind;

use crate::io::write_atomic;
use crate::{Error, Result};

/// A rectangular grid of `nx × ny` cells covering `x × y`; values live at the cell centres.
///
/// Cell (i, j) has centre (x₀ + (i + ½)Δx, y₀ + (j + ½)Δy) with Δx = (x₁ − x₀)/nx and
/// Δy = (y₁ − y₀)/ny. Points are ordered row by row: point k = j·nx + i, so x varies fastest.
/// Integrating a density over the grid with the cell centres is the midpoint rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    /// The x range (x₀, x₁).
    pub x: (f64, f64),
    /// The y range (y₀, y₁).
    pub y: (f64, f64),
    /// Number of cells along x.
    pub nx: usize,
    /// Number of cells along y.
    pub ny: usize,
}

impl Grid {
    /// A grid of `nx × ny` cells on `x × y`.
    ///
    /// # Panics
    /// If a range is empty or not finite, or `nx` or `ny` is zero.
    pub fn new(x: (f64, f64), y: (f64, f64), nx: usize, ny: usize) -> Self {
        for r in [x, y] {
            assert!(
                r.0.is_finite() && r.1.is_finite() && r.0 < r.1,
                "Grid: empty range {r:?}"
            );
        }
        assert!(
            nx > 0 && ny > 0,
            "Grid: need at least one cell, got {nx} × {ny}"
        );
        Grid { x, y, nx, ny }
    }

    /// The square [lo, hi]² with `n × n` cells.
    pub fn square(lo: f64, hi: f64, n: usize) -> Self {
        Grid::new((lo, hi), (lo, hi), n, n)
    }

    /// Number of cells, nx · ny.
    pub fn len(&self) -> usize {
        self.nx * self.ny
    }

    /// Always false: a grid has at least one cell.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The cell size (Δx, Δy).
    pub fn cell(&self) -> (f64, f64) {
        (
            (self.x.1 - self.x.0) / self.nx as f64,
            (self.y.1 - self.y.0) / self.ny as f64,
        )
    }

    /// The centre of cell `i` along x.
    pub fn x_at(&self, i: usize) -> f64 {
        self.x.0 + (i as f64 + 0.5) * self.cell().0
    }

    /// The centre of cell `j` along y.
    pub fn y_at(&self, j: usize) -> f64 {
        self.y.0 + (j as f64 + 0.5) * self.cell().1
    }

    /// All cell centres as an `(nx·ny, 2)` batch, row k = j·nx + i holding (x_i, y_j): ready for
    /// `log_prob` and `score`.
    pub fn points(&self) -> Array2<f32> {
        Array2::from_shape_fn((self.len(), 2), |(k, c)| {
            if c == 0 {
                self.x_at(k % self.nx) as f32
            } else {
                self.y_at(k / self.nx) as f32
            }
        })
    }
}

/// Title, axis labels and size of a figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// The caption above the plot.
    pub title: String,
    /// The x-axis label.
    pub x_label: String,
    /// The y-axis label.
    pub y_label: String,
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// How many nats below the maximum the log-density colour scale reaches; lower values get the
    /// lightest colour. Keeps far tails (log p ≈ −1000) from flattening the picture.
    pub log_range: f64,
}

impl Figure {
    /// A 600 × 600 figure titled `title`, axes labelled "x₁" and "x₂", log-density range 20 nats.
    pub fn new(title: impl Into<String>) -> Self {
        Figure {
            title: title.into(),
            x_label: "x₁".into(),
            y_label: "x₂".into(),
            size: (600, 600),
            log_range: 20.0,
        }
    }

    /// Sets the axis labels.
    pub fn labels(mut self, x: impl Into<String>, y: impl Into<String>) -> Self {
        self.x_label = x.into();
        self.y_label = y.into();
        self
    }

    /// Sets the size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Sets the log-density colour range in nats (see [`Figure::log_range`](Self#structfield.log_range)).
    pub fn log_range(mut self, nats: f64) -> Self {
        self.log_range = nats;
        self
    }
}

/// How [`quiver`] turns vectors into arrow lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrowScale {
    /// Length proportional to ‖v‖, the longest arrow 0.9 of a cell: magnitudes compare across the
    /// figure (Fig. 2 of the paper).
    Linear,
    /// Length proportional to √‖v‖, the longest arrow 0.9 of a cell: small vectors near the modes
    /// stay visible next to large ones in the tails.
    Sqrt,
    /// Every arrow 0.8 of a cell: directions only.
    Unit,
}

/// How [`lines`] draws a series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Style {
    /// A curve through the points in order.
    #[default]
    Line,
    /// A dot at each point, unconnected (samples under a curve).
    Dots,
}

/// One named curve (or cloud of points) of a line plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// The (x, y) points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// A line or dots.
    pub style: Style,
}

impl Series {
    /// A curve through (x, y) points.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
            style: Style::Line,
        }
    }

    /// Unconnected dots at (x, y) points.
    pub fn dots(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            style: Style::Dots,
            ..Series::new(label, points)
        }
    }

    /// A series from values at x = 0, 1, 2, … (a loss per step).
    pub fn from_values(label: impl Into<String>, values: &[f32]) -> Self {
        let points = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64, v as f64))
            .collect();
        Series::new(label, points)
    }
}

fn draw_error(path: &Path) -> impl Fn(DrawingAreaErrorKind<std::io::Error>) -> Error + '_ {
    move |e| match e {
        DrawingAreaErrorKind::BackendError(DrawingErrorKind::DrawingError(io)) => {
            Error::io(path, io)
        }
        other => Error::io(
            path,
            std::io::Error::other(format!("drawing failed: {other}")),
        ),
    }
}

const FONT: &str = "sans-serif";

/// Tick labels with three significant digits (every digit of the integer part from 1000 up: "12345")
/// and no trailing zeros: "0.25", "-8", "1e-5", "2.5e6". Plain notation between 1e-3 and 1e5,
/// scientific outside.
fn tick_label(v: &f64) -> String {
    let v = *v;
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { format!("{v}") };
    }
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let prec = (2 - a.log10().floor() as i32).max(0) as usize;
        trim(format!("{v:.prec$}"))
    } else {
        let s = format!("{v:.2e}");
        let (mantissa, exp) = s.split_once('e').unwrap();
        format!("{}e{exp}", trim(mantissa.to_string()))
    }
}

/// Colours for successive series (a qualitative palette).
const SERIES_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The sequential colour map for densities: from near-white (low) through orange to dark brown
/// (high), so darker means more probable, as in the paper's Fig. 2.
fn density_colour(t: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [255.0, 250.0, 243.0]),
        (0.3, [253.0, 208.0, 162.0]),
        (0.6, [253.0, 141.0, 60.0]),
        (0.85, [217.0, 72.0, 1.0]),
        (1.0, [127.0, 39.0, 4.0]),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let k = STOPS
        .iter()
        .rposition(|s| s.0 <= t)
        .unwrap_or(0)
        .min(STOPS.len() - 2);
    let (t0, c0) = STOPS[k];
    let (t1, c1) = STOPS[k + 1];
    let u = (t - t0) / (t1 - t0);
    let mix = |i: usize| (c0[i] + u * (c1[i] - c0[i])).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

/// The colour-scale bounds (lo, hi) for a log-density: hi is the largest finite value and lo the
/// smallest, but no lower than hi − `log_range`. `None` if nothing is finite.
fn log_density_bounds(log_density: ArrayView1<f32>, log_range: f64) -> Option<(f64, f64)> {
    let finite = log_density
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| v as f64);
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if hi == f64::NEG_INFINITY {
        return None;
    }
    let lo = lo.max(hi - log_range.abs());
    Some(if hi - lo < 1e-12 {
        (lo - 1.0, hi)
    } else {
        (lo, hi)
    })
}

/// Levels the colour map is quantised to; equal neighbours along a row are merged into one
/// rectangle, which keeps the SVG small where the density is flat.
const LEVELS: f64 = 96.0;

fn level(v: f32, (lo, hi): (f64, f64)) -> u32 {
    if !v.is_finite() || (v as f64) <= lo {
        return 0;
    }
    (((v as f64 - lo) / (hi - lo)).min(1.0) * LEVELS).round() as u32
}

/// Fills the grid's cells with the log-density colour map, merging equal neighbours along rows;
/// each rectangle overlaps its right and upper neighbours slightly (see below).
fn draw_density<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    grid: &Grid,
    log_density: ArrayView1<f32>,
    log_range: f64,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    assert_eq!(
        log_density.len(),
        grid.len(),
        "log-density of length {} for a {} × {} grid",
        log_density.len(),
        grid.nx,
        grid.ny
    );
    let Some(bounds) = log_density_bounds(log_density, log_range) else {
        return Ok(());
    };
    let (dx, dy) = grid.cell();
    // Each rectangle reaches a pixel or two into its right and upper neighbours, which are drawn
    // after it and cover the overlap. Edge to edge, a viewer that scales the figure puts the
    // shared edge between pixels and blends both cells with the background there: a faint seam.
    // (1.5 pixels, so that after the backend rounds to whole pixels at least one remains.)
    let (left, bottom) = chart.backend_coord(&(grid.x.0, grid.y.0));
    let (right, top) = chart.backend_coord(&(grid.x.1, grid.y.1));
    let over_x = 1.5 * (grid.x.1 - grid.x.0) / f64::from((right - left).abs().max(1));
    let over_y = 1.5 * (grid.y.1 - grid.y.0) / f64::from((bottom - top).abs().max(1));
    let mut rects = Vec::new();
    for j in 0..grid.ny {
        let row = log_density.slice(ndarray::s![j * grid.nx..(j + 1) * grid.nx]);
        let mut i = 0;
        while i < grid.nx {
            let l = level(row[i], bounds);
            let mut end = i + 1;
            while end < grid.nx && level(row[end], bounds) == l {
                end += 1;
            }
            let x0 = grid.x.0 + i as f64 * dx;
            let x1 = grid.x.0 + end as f64 * dx + if end < grid.nx { over_x } else { 0.0 };
            let y0 = grid.y.0 + j as f64 * dy;
            let y1 = y0 + dy + if j + 1 < grid.ny { over_y } else { 0.0 };
            let colour = density_colour(l as f64 / LEVELS);
            rects.push(Rectangle::new([(x0, y0), (x1, y1)], colour.filled()));
            i = end;
        }
    }
    chart.draw_series(rects)?;
    Ok(())
}

/// Root area, caption and a 2-D chart framed by `grid`.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    fig: &Figure,
    grid: &Grid,
) -> std::result::Result<
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    DrawingAreaErrorKind<std::io::Error>,
> {
    let mut chart = ChartBuilder::on(root)
        .caption(&fig.title, (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(grid.x.0..grid.x.1, grid.y.0..grid.y.1)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(&fig.x_label)
        .y_desc(&fig.y_label)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    Ok(chart)
}

/// Draws a figure with `draw` into an SVG document in memory, then writes it to `path` at once
/// ([`write_atomic`]): a viewer reloading `loss.svg` while a run trains, or a run interrupted
/// mid-figure, never sees half a picture, only the old figure or the new one.
fn svg_file(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    let mut svg = String::new();
    draw(SVGBackend::with_string(&mut svg, size).into_drawing_area())?;
    write_atomic(path, svg.as_bytes())
}

/// The 2-D chart a point figure is drawn in.
type PlaneChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A figure in the plane framed by `grid`, over a log-density heatmap on that grid if one is
/// given, with what `draw` adds on top: the frame that [`scatter`] and [`paths`] share.
fn over_density(
    path: &Path,
    fig: &Figure,
    grid: &Grid,
    log_density: Option<ArrayView1<f32>>,
    draw: impl FnOnce(
        &mut PlaneChart<'_, '_>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>,
) -> Result<()> {
    let err = draw_error(path);
    svg_file(path, fig.size, |root| {
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = frame(&root, fig, grid).map_err(&err)?;
        if let Some(lp) = log_density {
            draw_density(&mut chart, grid, lp, fig.log_range).map_err(&err)?;
        }
        draw(&mut chart).map_err(&err)?;
        root.present().map_err(&err)?;
        Ok(())
    })
}

/// A heatmap of a log-density on a grid, with a colour bar: darker is more probable.
///
/// `log_density` holds log p at [`Grid::points`] (length nx·ny). The colour scale runs from the
/// largest value down [`Figure::log_range`](Figure#structfield.log_range) nats; −∞ (outside a
/// support) gets the lightest colour.
pub fn heatmap(
    path: impl AsRef<Path>,
    fig: &Figure,
    grid: &Grid,
    log_density: ArrayView1<f32>,
) -> Result<()> {
    let path = path.as_ref();
    let err = draw_error(path);
    svg_file(path, fig.size, |root| {
        root.fill(&WHITE).map_err(&err)?;
        let (main, bar) = root.split_horizontally(fig.size.0.saturating_sub(90));
        {
            let mut chart = frame(&main, fig, grid).map_err(&err)?;
            draw_density(&mut chart, grid, log_density, fig.log_range).map_err(&err)?;
            // Redraw the axes frame over the cells.
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(0)
                .y_labels(0)
                .draw()
                .map_err(&err)?;
        }
        if let Some((lo, hi)) = log_density_bounds(log_density, fig.log_range) {
            let mut cb = ChartBuilder::on(&bar)
                .margin_top(12 + 30)
                .margin_bottom(12 + 45)
                .margin_right(8)
                .y_label_area_size(45)
                .build_cartesian_2d(0.0..1.0, lo..hi)
                .map_err(&err)?;
            cb.configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .y_desc("log p")
                .y_labels(6)
                .y_label_formatter(&tick_label)
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 14))
                .draw()
                .map_err(&err)?;
            let steps = 64;
            let h = (hi - lo) / steps as f64;
            // Each band reaches 1.5 pixels into the next, as the heatmap's cells do (no seams).
            let (_, bottom) = cb.backend_coord(&(0.0, lo));
            let (_, top) = cb.backend_coord(&(0.0, hi));
            let over = 1.5 * (hi - lo) / f64::from((bottom - top).abs().max(1));
            cb.draw_series((0..steps).map(|k| {
                let y0 = lo + k as f64 * h;
                let y1 = y0 + h + if k + 1 < steps { over } else { 0.0 };
                let c = density_colour((k as f64 + 0.5) / steps as f64);
                Rectangle::new([(0.0, y0), (1.0, y1)], c.filled())
            }))
            .map_err(&err)?;
        }
        root.present().map_err(&err)?;
        Ok(())
    })
}

/// A quiver plot of a vector field (scores) on a grid, optionally over a log-density heatmap.
///
/// `field` has one row (v₁, v₂) per point of [`Grid::points`] (shape `(nx·ny, 2)`); each arrow is
/// centred on its cell, with its length set by `scale` (arrows are drawn in data coordinates, so a
/// grid with square cells keeps their angles true). Non-finite vectors are skipped.
/// `background` is an optional (grid, log p at its points) pair drawn underneath, usually finer than
/// the arrow grid.
pub fn quiver(
    path: impl AsRef<Path>,
    fig: &Figure,
    grid: &Grid,
    field: ArrayView2<f32>,
    scale: ArrowScale,
    background: Option<(&Grid, ArrayView1<f32>)>,
) -> Result<()> {
    assert_eq!(
        field.shape(),
        &[grid.len(), 2],
        "quiver: field of shape {:?} for a {} × {} grid",
        field.shape(),
        grid.nx,
        grid.ny
    );
    let path = path.as_ref();
    let err = draw_error(path);
    svg_file(path, fig.size, |root| {
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = frame(&root, fig, grid).map_err(&err)?;
        if let Some((bg, lp)) = background {
            draw_density(&mut chart, bg, lp, fig.log_range).map_err(&err)?;
        }
        let norms: Vec<f64> = field
            .outer_iter()
            .map(|v| (v[0] as f64).hypot(v[1] as f64))
            .collect();
        let max = norms
            .iter()
            .copied()
            .filter(|n| n.is_finite())
            .fold(0.0, f64::max);
        let (dx, dy) = grid.cell();
        let cell = dx.min(dy);
        let pts = grid.points();
        let mut arrows = Vec::new();
        for ((p, v), &n) in pts.outer_iter().zip(field.outer_iter()).zip(&norms) {
            if !n.is_finite() || n == 0.0 || max == 0.0 {
                continue;
            }
            let len = match scale {
                ArrowScale::Linear => 0.9 * cell * n / max,
                ArrowScale::Sqrt => 0.9 * cell * (n / max).sqrt(),
                ArrowScale::Unit => 0.8 * cell,
            };
            let (ux, uy) = (v[0] as f64 / n, v[1] as f64 / n);
            let (cx, cy) = (p[0] as f64, p[1] as f64);
            let tail = (cx - 0.5 * len * ux, cy - 0.5 * len * uy);
            let tip = (cx + 0.5 * len * ux, cy + 0.5 * len * uy);
            // Arrowhead: two strokes 25° either side of the shaft, a third of its length (capped).
            let head = (0.35 * len).min(0.3 * cell);
            let (c, s) = (25f64.to_radians().cos(), 25f64.to_radians().sin());
            let wing = |sign: f64| {
                let (wx, wy) = (ux * c - sign * uy * s, sign * ux * s + uy * c);
                (tip.0 - head * wx, tip.1 - head * wy)
            };
            arrows.push(PathElement::new(vec![tail, tip], BLACK.stroke_width(1)));
            arrows.push(PathElement::new(
                vec![wing(1.0), tip, wing(-1.0)],
                BLACK.stroke_width(1),
            ));
        }
        chart.draw_series(arrows).map_err(&err)?;
        root.present().map_err(&err)?;
        Ok(())
    })
}

/// A scatter plot of 2-D samples (shape `(N, 2)`), framed by `grid`'s ranges and optionally drawn
/// over a log-density heatmap on that grid (`log_density` at [`Grid::points`]). Points outside the
/// frame and non-finite points are left out (a diverged sampler shows as missing points).
pub fn scatter(
    path: impl AsRef<Path>,
    fig: &Figure,
    samples: ArrayView2<f32>,
    grid: &Grid,
    log_density: Option<ArrayView1<f32>>,
) -> Result<()> {
    assert_eq!(
        samples.ncols(),
        2,
        "scatter: samples of shape {:?}, expected (N, 2)",
        samples.shape()
    );
    over_density(path.as_ref(), fig, grid, log_density, |chart| {
        let colour = RGBColor(31, 80, 160).mix(0.6).filled();
        let dots = samples
            .outer_iter()
            .map(|p| (p[0] as f64, p[1] as f64))
            .filter(|&p| in_frame(grid, p))
            .map(|p| Circle::new(p, 2, colour));
        chart.draw_series(dots)?;
        Ok(())
    })
}

/// Whether a point lies in the frame of `grid`, edges included (a NaN or infinite coordinate
/// never does: every comparison with NaN is false, and ±∞ lies beyond the finite ranges).
fn in_frame(grid: &Grid, (x, y): (f64, f64)) -> bool {
    x >= grid.x.0 && x <= grid.x.1 && y >= grid.y.0 && y <= grid.y.1
}

/// The runs of consecutive points of `path` that are inside the frame of `grid` ([`in_frame`]),
/// in order: where a path leaves the frame it is cut, and where it comes back a new run starts.
fn runs_inside(path: &[(f64, f64)], grid: &Grid) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for p in path {
        if in_frame(grid, *p) {
            run.push(*p);
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// Paths in the plane, each a sequence of points (a sampler's trajectory, say), drawn as thin
/// lines framed by `grid`'s ranges, optionally over a log-density heatmap on that grid, with a
/// dot where each path ends. The parts of a path outside the frame, and non-finite points, are
/// left out: the line is cut there and starts again where the path comes back, and a path that
/// ends outside has no dot.
pub fn paths(
    path: impl AsRef<Path>,
    fig: &Figure,
    paths: &[Vec<(f64, f64)>],
    grid: &Grid,
    log_density: Option<ArrayView1<f32>>,
) -> Result<()> {
    over_density(path.as_ref(), fig, grid, log_density, |chart| {
        let colour = RGBColor(31, 80, 160);
        for p in paths {
            for run in runs_inside(p, grid).into_iter().filter(|r| r.len() > 1) {
                chart.draw_series(LineSeries::new(run, colour.mix(0.5).stroke_width(1)))?;
            }
        }
        let ends = paths
            .iter()
            .filter_map(|p| p.last().copied())
            .filter(|&e| in_frame(grid, e))
            .map(|e| Circle::new(e, 2, colour.filled()));
        chart.draw_series(ends)?;
        Ok(())
    })
}

/// The pixels a line plot draws: each dot, and each curve traced along its segments at steps of at
/// most one pixel (so that a long straight segment counts as much as the pixels it covers).
fn trace_pixels(
    series: &[Series],
    kept: &[Vec<(f64, f64)>],
    px: impl Fn((f64, f64)) -> (i32, i32),
) -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for (s, pts) in series.iter().zip(kept) {
        let pixels: Vec<(i32, i32)> = pts.iter().map(|&p| px(p)).collect();
        if s.style == Style::Dots {
            out.extend(pixels);
            continue;
        }
        out.extend(pixels.last());
        for w in pixels.windows(2) {
            let ((ax, ay), (bx, by)) = (w[0], w[1]);
            let n = (bx - ax).abs().max((by - ay).abs()).max(1);
            out.extend((0..n).map(|i| (ax + (bx - ax) * i / n, ay + (by - ay) * i / n)));
        }
    }
    out
}

/// The legend's size in pixels as plotters draws it with 14-pixel labels: a 20-pixel row per
/// series and a width of 47 pixels (marker and padding) plus about 8 per character of the
/// longest label (measured on the figures this module writes).
fn legend_size(series: &[Series]) -> (i32, i32) {
    let chars = series.iter().map(|s| s.label.chars().count()).max();
    (
        47 + 8 * chars.unwrap_or(0) as i32,
        4 + 20 * series.len() as i32,
    )
}

/// The corner of the plotting area for the legend: the one whose box covers the fewest drawn
/// pixels, preferring upper right, then upper left, lower right and lower left on a tie, so that
/// the legend does not hide a curve where some corner is free.
fn legend_corner(
    (xs, ys): (std::ops::Range<i32>, std::ops::Range<i32>),
    (w, h): (i32, i32),
    drawn: &[(i32, i32)],
) -> SeriesLabelPosition {
    const GAP: i32 = 5; // plotters' gap between the legend and the edges of the plotting area
    let (left, right) = (xs.start + GAP, xs.end - GAP - w);
    let (top, bottom) = (ys.start + GAP, ys.end - GAP - h);
    let corners = [(right, top), (left, top), (right, bottom), (left, bottom)];
    let covered = |&(x, y): &(i32, i32)| {
        drawn
            .iter()
            .filter(|&&(px, py)| (x..=x + w).contains(&px) && (y..=y + h).contains(&py))
            .count()
    };
    let best = (0..4).min_by_key(|&i| covered(&corners[i])).unwrap_or(0);
    [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ][best]
        .clone()
}

/// Line plots of one or more series with a legend, optionally with a logarithmic y axis; a
/// series with [`Style::Dots`] is drawn as unconnected dots. The legend goes in the corner where it
/// hides the least of what is drawn.
///
/// Non-finite points are dropped, and with `log_y` so are points with y ≤ 0. The axes span the
/// remaining points. An empty plot (no drawable point) still writes a framed figure.
pub fn lines(path: impl AsRef<Path>, fig: &Figure, series: &[Series], log_y: bool) -> Result<()> {
    let path = path.as_ref();
    let err = draw_error(path);
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let kept: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| s.points.iter().copied().filter(keep).collect())
        .collect();
    let all = kept.iter().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = all.fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 1.0, 10.0);
    }
    if x1 - x0 < 1e-12 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    if log_y {
        // Start a hair below a whole decade: plotters puts log ticks at the powers of ten from
        // ⌈log₁₀ y₀⌉ (and, for short ranges, at their multiples), so this labels the bottom decade.
        (y0, y1) = (10f64.powf(y0.log10().floor()) * (1.0 - 1e-9), y1 * 1.1);
    } else {
        let pad = if y1 - y0 < 1e-12 {
            0.5
        } else {
            0.05 * (y1 - y0)
        };
        (y0, y1) = (y0 - pad, y1 + pad);
    }

    svg_file(path, fig.size, |root| {
        root.fill(&WHITE).map_err(&err)?;
        let builder = |root| {
            let mut b = ChartBuilder::on(root);
            b.caption(&fig.title, (FONT, 22))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70);
            b
        };
        // The same drawing for a linear and a logarithmic y axis (different coordinate types).
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart.map_err(&err)?;
                chart
                    .configure_mesh()
                    .x_desc(&fig.x_label)
                    .y_desc(&fig.y_label)
                    .x_label_formatter(&tick_label)
                    .y_label_formatter(&tick_label)
                    .label_style((FONT, 14))
                    .axis_desc_style((FONT, 16))
                    .light_line_style(WHITE.mix(0.0))
                    .bold_line_style(BLACK.mix(0.1))
                    .draw()
                    .map_err(&err)?;
                for (k, (s, pts)) in series.iter().zip(&kept).enumerate() {
                    let colour = SERIES_COLOURS[k % SERIES_COLOURS.len()];
                    match s.style {
                        Style::Line => chart
                            .draw_series(LineSeries::new(
                                pts.iter().copied(),
                                colour.stroke_width(2),
                            ))
                            .map_err(&err)?
                            .label(s.label.clone())
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                            }),
                        Style::Dots => chart
                            .draw_series(
                                pts.iter()
                                    .map(|&p| Circle::new(p, 2, colour.mix(0.5).filled())),
                            )
                            .map_err(&err)?
                            .label(s.label.clone())
                            .legend(move |(x, y)| Circle::new((x + 10, y), 3, colour.filled())),
                    };
                }
                if !series.is_empty() {
                    let traced = trace_pixels(series, &kept, |p| chart.backend_coord(&p));
                    let corner = legend_corner(
                        chart.plotting_area().get_pixel_range(),
                        legend_size(series),
                        &traced,
                    );
                    chart
                        .configure_series_labels()
                        .position(corner)
                        .label_font((FONT, 14))
                        .background_style(WHITE.mix(0.85))
                        .border_style(BLACK.mix(0.4))
                        .draw()
                        .map_err(&err)?;
                }
            }};
        }
        if log_y {
            draw!(builder(&root).build_cartesian_2d(x0..x1, (y0..y1).log_scale()));
        } else {
            draw!(builder(&root).build_cartesian_2d(x0..x1, y0..y1));
        }
        root.present().map_err(&err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::tick_label;

    /// Three significant digits, trailing zeros and a bare point trimmed, plain from 1e-3 up to
    /// (not including) 1e5 and scientific outside: the examples of its documentation and the
    /// edges of both rules.
    #[test]
    fn tick_labels_are_short() {
        for (v, want) in [
            (0.0, "0"),
            (0.25, "0.25"),
            (-8.0, "-8"),
            (1.234, "1.23"),
            (123.4, "123"),
            (12345.0, "12345"),
            (0.001234, "0.00123"),
            (0.002, "0.002"),
            (0.0009, "9e-4"),
            (1e-5, "1e-5"),
            (-1.5e-4, "-1.5e-4"),
            (1e5, "1e5"),
            (2.5e6, "2.5e6"),
            (1.25e7, "1.25e7"),
        ] {
            assert_eq!(tick_label(&v), want, "{v}");
        }
    }
}
