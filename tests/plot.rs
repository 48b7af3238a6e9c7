//! The SVG figures: every plot function writes a well-formed SVG whose title and axis labels are
//! `<text>` elements; failures name the file.

use ncsn::plot::{self, ArrowScale, Figure, Grid, Series};
use ncsn::toy::{ClosedFormScore, GaussianMixture, ToyDistribution, UniformSquare};
use ndarray::{Array1, Array2, array};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// A path for a figure, in a folder of this process's own (two runs of the suite at once must not
/// read each other's half-written files).
fn out(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("plot_tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A small XML well-formedness check: every element closes in order, attribute values are quoted,
/// comments and the declaration are skipped, and `&` only starts an entity. Returns the text content
/// of the `<text>` elements.
fn check_svg(path: &PathBuf) -> Vec<String> {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(
        s.trim_start().starts_with("<svg"),
        "{}: does not start with <svg",
        path.display()
    );
    assert!(
        s.trim_end().ends_with("</svg>"),
        "{}: does not end with </svg>",
        path.display()
    );
    let b = s.as_bytes();
    let (mut i, mut stack, mut texts) = (0, Vec::<String>::new(), Vec::new());
    let mut text_start = None;
    while i < b.len() {
        match b[i] {
            b'<' if s[i..].starts_with("<!--") => {
                i += s[i..].find("-->").expect("open comment") + 3
            }
            b'<' if s[i..].starts_with("<?") => {
                i += s[i..].find("?>").expect("open declaration") + 2
            }
            b'<' => {
                let mut j = i + 1;
                let mut quote = None;
                while quote.is_some() || b[j] != b'>' {
                    match (quote, b[j]) {
                        (None, q @ (b'"' | b'\'')) => quote = Some(q),
                        (Some(q), c) if c == q => quote = None,
                        (None, b'<') => panic!("{}: '<' inside a tag at byte {j}", path.display()),
                        _ => {}
                    }
                    j += 1;
                }
                let tag = &s[i + 1..j];
                if let Some(name) = tag.strip_prefix('/') {
                    let open = stack.pop().unwrap_or_else(|| panic!("stray </{name}>"));
                    assert_eq!(
                        open,
                        name.trim(),
                        "{}: <{open}> closed by </{name}>",
                        path.display()
                    );
                    if name.trim() == "text" {
                        texts.push(s[text_start.take().unwrap()..i].to_string());
                    }
                } else if !tag.ends_with('/') {
                    let name = tag.split_whitespace().next().unwrap().to_string();
                    if name == "text" {
                        text_start = Some(j + 1);
                    }
                    stack.push(name);
                }
                i = j + 1;
            }
            b'&' => {
                let semi = s[i..].find(';').expect("unterminated entity");
                let ent = &s[i + 1..i + semi];
                assert!(
                    ["amp", "lt", "gt", "quot", "apos"].contains(&ent) || ent.starts_with('#'),
                    "{}: bad entity &{ent};",
                    path.display()
                );
                i += semi + 1;
            }
            _ => i += 1,
        }
    }
    assert!(
        stack.is_empty(),
        "{}: unclosed elements {stack:?}",
        path.display()
    );
    texts
}

fn has_text(texts: &[String], want: &str) -> bool {
    texts.iter().any(|t| t.trim() == want)
}

#[test]
fn grid_points_are_cell_centres_x_fastest() {
    let g = Grid::new((0.0, 4.0), (-1.0, 1.0), 4, 2);
    assert_eq!(g.len(), 8);
    assert_eq!(g.cell(), (1.0, 1.0));
    let p = g.points();
    assert_eq!(p.row(0), array![0.5f32, -0.5]);
    assert_eq!(p.row(1), array![1.5f32, -0.5]);
    assert_eq!(p.row(4), array![0.5f32, 0.5]);
    assert_eq!(p.row(7), array![3.5f32, 0.5]);
}

#[test]
fn heatmap_quiver_scatter_write_valid_svg_with_text() {
    let p = GaussianMixture::paper();
    let fine = Grid::square(-8.0, 8.0, 40);
    let coarse = Grid::square(-8.0, 8.0, 9);
    let lp = p.log_prob(fine.points().view());
    let fig = Figure::new("Scores of p & q < r").labels("first axis", "second axis");

    let path = out("heatmap.svg");
    plot::heatmap(&path, &fig, &fine, lp.view()).unwrap();
    let texts = check_svg(&path);
    assert!(has_text(&texts, "Scores of p &amp; q &lt; r"), "{texts:?}");
    assert!(
        has_text(&texts, "first axis")
            && has_text(&texts, "second axis")
            && has_text(&texts, "log p")
    );
    assert!(texts.len() > 10, "tick labels missing: {texts:?}");

    for scale in [ArrowScale::Linear, ArrowScale::Sqrt, ArrowScale::Unit] {
        let path = out(&format!("quiver_{scale:?}.svg"));
        let s = p.score(coarse.points().view());
        plot::quiver(
            &path,
            &fig,
            &coarse,
            s.view(),
            scale,
            Some((&fine, lp.view())),
        )
        .unwrap();
        let texts = check_svg(&path);
        assert!(has_text(&texts, "first axis"), "{texts:?}");
    }
    // Non-finite and all-zero fields draw without panicking.
    let mut s = Array2::<f32>::zeros((coarse.len(), 2));
    plot::quiver(
        out("quiver_zero.svg"),
        &fig,
        &coarse,
        s.view(),
        ArrowScale::Linear,
        None,
    )
    .unwrap();
    check_svg(&out("quiver_zero.svg"));
    s[[0, 0]] = f32::NAN;
    s[[1, 1]] = 1.0;
    plot::quiver(
        out("quiver_nan.svg"),
        &fig,
        &coarse,
        s.view(),
        ArrowScale::Linear,
        None,
    )
    .unwrap();
    check_svg(&out("quiver_nan.svg"));
    // The one finite non-zero vector is drawn (a shaft and a head, two polylines more than the
    // all-zero field), and the NaN one is not: an arrow from NaN would be a stray polyline.
    let polylines = |name: &str| {
        std::fs::read_to_string(out(name))
            .unwrap()
            .matches("<polyline")
            .count()
    };
    assert_eq!(
        polylines("quiver_nan.svg"),
        polylines("quiver_zero.svg") + 2
    );

    let x = p.sample(300, &mut ChaCha8Rng::seed_from_u64(0));
    let path = out("scatter.svg");
    plot::scatter(
        &path,
        &Figure::new("i.i.d. samples"),
        x.view(),
        &fine,
        Some(lp.view()),
    )
    .unwrap();
    let texts = check_svg(&path);
    assert!(has_text(&texts, "i.i.d. samples"));
    let svg = std::fs::read_to_string(&path).unwrap();
    let inside = x
        .outer_iter()
        .filter(|r| r.iter().all(|v| v.abs() <= 8.0))
        .count();
    assert!(inside > 290);
    assert_eq!(svg.matches("<circle").count(), inside);
    // Out-of-frame and NaN samples are left out.
    let odd = array![[0.0f32, 0.0], [100.0, 0.0], [f32::NAN, 1.0]];
    plot::scatter(
        out("scatter_odd.svg"),
        &Figure::new("odd"),
        odd.view(),
        &fine,
        None,
    )
    .unwrap();
    let svg = std::fs::read_to_string(out("scatter_odd.svg")).unwrap();
    assert_eq!(svg.matches("<circle").count(), 1);
}

#[test]
fn heatmap_handles_minus_infinity() {
    let g = Grid::square(-2.0, 2.0, 30);
    let lp = UniformSquare::new(-1.0, 1.0).log_prob(g.points().view());
    let path = out("square.svg");
    plot::heatmap(&path, &Figure::new("square"), &g, lp.view()).unwrap();
    check_svg(&path);
    let all_inf = Array1::from_elem(g.len(), f32::NEG_INFINITY);
    plot::heatmap(
        out("empty.svg"),
        &Figure::new("nothing"),
        &g,
        all_inf.view(),
    )
    .unwrap();
    check_svg(&out("empty.svg"));
}

#[test]
fn lines_linear_and_log() {
    let loss: Vec<f32> = (0..200)
        .map(|i| 10.0 * (-(i as f32) / 50.0).exp() + 0.01)
        .collect();
    let series = vec![
        Series::from_values("no noise", &loss),
        Series::new(
            "with noise",
            (0..200)
                .map(|i| (i as f64, 5.0 - i as f64 / 50.0))
                .collect(),
        ),
    ];
    for log_y in [false, true] {
        let path = out(&format!("lines_{log_y}.svg"));
        let fig = Figure::new("SSM loss").labels("iteration", "loss");
        plot::lines(&path, &fig, &series, log_y).unwrap();
        let texts = check_svg(&path);
        for t in ["SSM loss", "iteration", "loss", "no noise", "with noise"] {
            assert!(has_text(&texts, t), "{t} missing in {texts:?}");
        }
    }
    // Degenerate inputs still give a figure.
    plot::lines(out("lines_empty.svg"), &Figure::new("empty"), &[], true).unwrap();
    assert!(has_text(&check_svg(&out("lines_empty.svg")), "empty"));
    let flat = [Series::new("flat", vec![(1.0, 2.0), (f64::NAN, 3.0)])];
    plot::lines(out("lines_flat.svg"), &Figure::new("flat"), &flat, false).unwrap();
    check_svg(&out("lines_flat.svg"));
}

/// The legend goes to the first free corner in the order upper right, upper left, lower right,
/// lower left, so that it hides no curve where a corner is free. Where it went is read from the
/// SVG: the legend's background is the one rectangle drawn at opacity 0.85.
#[test]
fn the_legend_takes_a_free_corner() {
    let legend_at = |name: &str, series: &[Series]| {
        let path = out(name);
        plot::lines(&path, &Figure::new(name), series, false).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let rect = svg
            .split("<rect ")
            .find(|r| r.contains("opacity=\"0.85\""))
            .map(|r| format!(" {r}")) // every attribute now follows a space
            .expect("the legend's background");
        let attr = |key: &str| -> f64 {
            let v = rect.split(&format!(" {key}=\"")).nth(1).unwrap();
            v[..v.find('"').unwrap()].parse().unwrap()
        };
        // Which half of the 600 × 600 figure the legend's centre lies in.
        let (x, y) = (
            attr("x") + attr("width") / 2.0,
            attr("y") + attr("height") / 2.0,
        );
        (
            if x > 300.0 { "right" } else { "left" },
            if y < 300.0 { "upper" } else { "lower" },
        )
    };
    let line = |label: &str, pts: &[(f64, f64)]| Series::new(label, pts.to_vec());
    // A decaying curve leaves the upper right free: the legend stays there.
    let decay: Vec<(f64, f64)> = (0..=100)
        .map(|i| (i as f64 / 10.0, 10.0 * (-(i as f64) / 10.0).exp()))
        .collect();
    assert_eq!(
        legend_at("legend_decay.svg", &[line("decay", &decay)]),
        ("right", "upper")
    );
    // A line along the top takes both upper corners (a dot at the bottom sets the range): the
    // lower right; with a wall down the right edge too, the lower left.
    let top = line("top", &[(0.0, 10.0), (10.0, 10.0)]);
    let floor = Series::dots("floor", vec![(5.0, 0.0)]);
    let wall = line("wall", &[(9.5, 0.0), (9.5, 10.0)]);
    assert_eq!(
        legend_at("legend_top.svg", &[top.clone(), floor.clone()]),
        ("right", "lower")
    );
    assert_eq!(
        legend_at("legend_top_wall.svg", &[top, floor, wall]),
        ("left", "lower")
    );
    let diagonal = line("diagonal", &[(0.0, 0.0), (10.0, 10.0)]);
    let low = line("low", &[(0.0, 0.0), (10.0, 1.0)]);
    // The diagonal alone takes the upper right and the lower left: the upper left is free.
    assert_eq!(
        legend_at("legend_diag.svg", &[diagonal, low]),
        ("left", "upper")
    );
}

/// A dots series is a circle per drawable point, unconnected, plus one in its legend entry; a
/// line series beside it is one polyline, plus one in its legend entry.
#[test]
fn dots_are_unconnected_points() {
    let mut dots: Vec<(f64, f64)> = (0..40).map(|i| (i as f64 / 4.0, (i % 7) as f64)).collect();
    dots.push((f64::NAN, 1.0)); // dropped, like any non-finite point
    // The line lies inside the dots' range, so both figures have the same axes and grid lines.
    let line = Series::new("mean", vec![(0.0, 3.0), (9.75, 3.0)]);
    let draw = |name: &str, series: &[Series]| {
        let path = out(name);
        plot::lines(&path, &Figure::new("dots"), series, false).unwrap();
        let texts = check_svg(&path);
        let svg = std::fs::read_to_string(&path).unwrap();
        (
            texts,
            svg.matches("<circle").count(),
            svg.matches("<polyline").count(),
        )
    };
    let (_, circles_alone, polylines_alone) = draw(
        "lines_dots_alone.svg",
        &[Series::dots("targets", dots.clone())],
    );
    let (texts, circles, polylines) =
        draw("lines_dots.svg", &[Series::dots("targets", dots), line]);
    assert!(has_text(&texts, "targets") && has_text(&texts, "mean"));
    assert_eq!((circles_alone, circles), (40 + 1, 40 + 1));
    assert_eq!(polylines, polylines_alone + 1 + 1);
}

#[test]
fn errors_name_the_path() {
    let path = PathBuf::from("/nonexistent-dir-for-ncsn-tests/fig.svg");
    let g = Grid::square(0.0, 1.0, 2);
    let e = plot::heatmap(&path, &Figure::new("x"), &g, Array1::zeros(4).view()).unwrap_err();
    assert!(matches!(e, ncsn::Error::Io { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("/nonexistent-dir-for-ncsn-tests/fig.svg"),
        "{e}"
    );
    let e = plot::lines(&path, &Figure::new("x"), &[], false).unwrap_err();
    assert!(e.to_string().contains("fig.svg"), "{e}");
}

// ------------------------------------------------------------------------------------------------
// Where things land in the SVG. plotters writes integer pixel coordinates; the helpers below read
// the elements back, and map data coordinates to pixels with the axes' own tick labels (a tick's
// label sits at the tick: x for the x axis, y for the y axis).

/// An element's attributes by name.
type Attrs = std::collections::HashMap<String, String>;

/// The attributes of every `<tag …>` element, in document order.
fn elements(svg: &str, tag: &str) -> Vec<Attrs> {
    svg.split(&format!("<{tag} "))
        .skip(1)
        .map(|rest| {
            let end = rest.find('>').unwrap();
            let mut attrs = Attrs::new();
            let mut s = &rest[..end];
            while let Some(eq) = s.find("=\"") {
                let key = s[..eq].trim().to_string();
                let v = &s[eq + 2..];
                let close = v.find('"').unwrap();
                attrs.insert(key, v[..close].to_string());
                s = &v[close + 1..];
            }
            attrs
        })
        .collect()
}

fn num(e: &Attrs, key: &str) -> f64 {
    e[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {:?}", e[key]))
}

/// The `<text>` elements: (attributes, trimmed content).
fn texts_at(svg: &str) -> Vec<(Attrs, String)> {
    let attrs = elements(svg, "text");
    let contents = svg.split("<text ").skip(1).map(|r| {
        r[r.find('>').unwrap() + 1..r.find("</text>").unwrap()]
            .trim()
            .to_string()
    });
    attrs.into_iter().zip(contents).collect()
}

/// The polylines' points, in document order, with their stroke colour.
fn polylines(svg: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    elements(svg, "polyline")
        .into_iter()
        .map(|e| {
            let pts = e["points"]
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            (e["stroke"].clone(), pts)
        })
        .collect()
}

/// Tick labels as (value, pixel position along the axis).
type Ticks = Vec<(f64, f64)>;

/// The numeric tick labels of the x axis (centred, unrotated) and of the y axis (right-aligned),
/// left of `x_max` pixels (the colour bar's labels lie right of it).
fn ticks(svg: &str, x_max: f64) -> (Ticks, Ticks) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for (a, text) in texts_at(svg) {
        let Ok(v) = text.parse::<f64>() else { continue };
        if a.contains_key("transform") || num(&a, "x") > x_max {
            continue;
        }
        match a["text-anchor"].as_str() {
            "middle" => xs.push((v, num(&a, "x"))),
            "end" => ys.push((v, num(&a, "y"))),
            _ => {}
        }
    }
    (xs, ys)
}

/// The linear map from data to pixels through the first and last tick.
fn fit(ticks: &[(f64, f64)]) -> impl Fn(f64) -> f64 {
    assert!(ticks.len() >= 2, "ticks {ticks:?}");
    let (a, b) = (ticks[0], ticks[ticks.len() - 1]);
    move |v| a.1 + (v - a.0) * (b.1 - a.1) / (b.0 - a.0)
}

/// Each arrow where the documentation puts it: centred on its cell, along its vector (y up), as
/// long as its scale says (Linear: 0.9 of a cell for the longest, ‖v‖/max of that for the others;
/// Sqrt: √(‖v‖/max) of it; Unit: 0.8 of a cell), with a cell the smaller side (1 here: the cells
/// are 2 × 1), and a head of two strokes 25° either side of the shaft, 0.35 of its length but at
/// most 0.3 of a cell. A zero and an infinite vector draw nothing, and leave the others' scale
/// alone. The data-to-pixel map comes from the tick labels; plotters rounds every coordinate to
/// a whole pixel, and so were the ticks the map is fitted to, so each point is allowed 2 pixels
/// (a cell is about 170 × 250 pixels, the shortest shaft about 15).
#[test]
fn quiver_arrows_are_centred_scaled_and_pointed_as_documented() {
    let grid = Grid::new((0.0, 6.0), (0.0, 2.0), 3, 2);
    let vs = [
        (1.0f32, 0.0f32),
        (0.0, 2.0),
        (-3.0, 4.0), // the longest: ‖v‖ = 5
        (0.0, -0.5),
        (0.0, 0.0),
        (f32::INFINITY, 1.0),
    ];
    let field = Array2::from_shape_fn((6, 2), |(k, c)| if c == 0 { vs[k].0 } else { vs[k].1 });
    let fig = Figure::new("arrows");
    let zero = out("quiver_geometry_zero.svg");
    plot::quiver(
        &zero,
        &fig,
        &grid,
        Array2::zeros((6, 2)).view(),
        ArrowScale::Unit,
        None,
    )
    .unwrap();
    let frame = polylines(&std::fs::read_to_string(&zero).unwrap()).len();
    for scale in [ArrowScale::Linear, ArrowScale::Sqrt, ArrowScale::Unit] {
        let path = out(&format!("quiver_geometry_{scale:?}.svg"));
        plot::quiver(&path, &fig, &grid, field.view(), scale, None).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let (xt, yt) = ticks(&svg, f64::INFINITY);
        let (px, py) = (fit(&xt), fit(&yt));
        let lines = polylines(&svg);
        // The frame, then a shaft and a head per drawn arrow: four of them.
        assert_eq!(lines.len(), frame + 8, "{scale:?}");
        for (k, &(vx, vy)) in vs[..4].iter().enumerate() {
            let (vx, vy) = (vx as f64, vy as f64);
            let n = vx.hypot(vy);
            let len = match scale {
                ArrowScale::Linear => 0.9 * n / 5.0,
                ArrowScale::Sqrt => 0.9 * (n / 5.0).sqrt(),
                ArrowScale::Unit => 0.8,
            };
            let (ux, uy) = (vx / n, vy / n);
            let (cx, cy) = (grid.x_at(k % 3), grid.y_at(k / 3));
            let tail = (cx - 0.5 * len * ux, cy - 0.5 * len * uy);
            let tip = (cx + 0.5 * len * ux, cy + 0.5 * len * uy);
            let head = (0.35 * len).min(0.3);
            let wing = |a: f64| {
                let (c, s) = (a.to_radians().cos(), a.to_radians().sin());
                (
                    tip.0 - head * (ux * c - uy * s),
                    tip.1 - head * (ux * s + uy * c),
                )
            };
            let want = [vec![tail, tip], vec![wing(25.0), tip, wing(-25.0)]];
            for (part, want) in want.iter().enumerate() {
                let (_, got) = &lines[frame + 2 * k + part];
                assert_eq!(got.len(), want.len(), "{scale:?} arrow {k}");
                for (g, w) in got.iter().zip(want) {
                    let w = (px(w.0), py(w.1));
                    assert!(
                        (g.0 - w.0).abs() <= 2.0 && (g.1 - w.1).abs() <= 2.0,
                        "{scale:?} arrow {k} ({}): pixel {g:?}, want {w:?}",
                        ["shaft", "head"][part]
                    );
                }
            }
        }
    }
}

/// Scatter dots sit at their samples, on a frame whose x and y ranges differ: points outside
/// either range are left out (the frame's edges included), and x is not taken for y.
#[test]
fn scatter_dots_sit_at_their_samples() {
    let grid = Grid::new((-1.0, 3.0), (0.0, 10.0), 4, 4);
    let samples = array![
        [0.5f32, 1.0],
        [2.0, 8.0],
        [-1.0, 0.0], // a corner of the frame: inside
        [3.5, 5.0],  // right of it
        [1.0, 10.5], // above it
    ];
    let path = out("scatter_positions.svg");
    plot::scatter(&path, &Figure::new("dots"), samples.view(), &grid, None).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let (xt, yt) = ticks(&svg, f64::INFINITY);
    let (px, py) = (fit(&xt), fit(&yt));
    let got: Vec<(f64, f64)> = elements(&svg, "circle")
        .iter()
        .map(|c| (num(c, "cx"), num(c, "cy")))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    for (g, s) in got.iter().zip(samples.outer_iter()) {
        let w = (px(s[0] as f64), py(s[1] as f64));
        assert!(
            (g.0 - w.0).abs() <= 2.0 && (g.1 - w.1).abs() <= 2.0,
            "dot at {g:?}, sample {s} at {w:?}"
        );
    }
}

/// The heatmap's cells, read back from the SVG: the rectangles drawn after the white background
/// and left of the colour bar, as (x, y, width, height, fill).
fn cells(svg: &str) -> Vec<(f64, f64, f64, f64, String)> {
    elements(svg, "rect")
        .iter()
        .skip(1)
        .filter(|r| num(r, "x") < 500.0 && r["fill"] != "none")
        .map(|r| {
            (
                num(r, "x"),
                num(r, "y"),
                num(r, "width"),
                num(r, "height"),
                r["fill"].clone(),
            )
        })
        .collect()
}

/// The colour map as documented: log p is placed on a scale from its largest finite value (hi)
/// down `log_range` nats (lo), quantised to 96 levels (rounded), and coloured by interpolating
/// the stops near-white (255, 250, 243) at 0, (253, 208, 162) at 0.3, (253, 141, 60) at 0.6,
/// (217, 72, 1) at 0.85 and dark brown (127, 39, 4) at 1, each channel rounded. Worked out by hand
/// for hi = 0 and the default 20 nats:
///   0   → level 96   → 1                          → #7F2704 (the darkest)
///   −4  → 76.8 → 77  → 0.802: 0.81 of 0.6 → 0.85  → (223.9, 85.2, 12.3)   → #E0550C
///   −9  → 52.8 → 53  → 0.552: 0.84 of 0.3 → 0.6   → (253, 151.7, 76.3)   → #FD984C
///   −14 → 28.8 → 29  → 0.302: 0.007 of 0.3 → 0.6  → (253, 207.5, 161.3)  → #FDD0A1
///   −30, −∞ (below lo) → level 0                  → #FFFAF3 (the lightest)
/// Cells are drawn row by row from the bottom, neighbours of one colour along a row merged into
/// one rectangle; the cells here are 1 × 2 (rows twice as tall as columns are wide), so a row's
/// height, a merged run's width and which row is on top are all seen.
#[test]
fn heatmap_cells_take_the_documented_colours_in_place() {
    let grid = Grid::new((0.0, 6.0), (0.0, 4.0), 6, 2);
    let ninf = f32::NEG_INFINITY;
    let lp = array![
        0.0f32, -4.0, -9.0, -14.0, -30.0, ninf, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0
    ];
    let path = out("heatmap_colours.svg");
    plot::heatmap(&path, &Figure::new("colours"), &grid, lp.view()).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let got = cells(&svg);
    let fills: Vec<&str> = got.iter().map(|c| c.4.as_str()).collect();
    assert_eq!(
        fills,
        [
            "#7F2704", "#E0550C", "#FD984C", "#FDD0A1", "#FFFAF3", "#FD984C"
        ],
        "{got:?}"
    );
    // Bottom row: five rectangles side by side, the last two cells (−30 and −∞) merged.
    let (xt, yt) = ticks(&svg, 500.0);
    let (px, py) = (fit(&xt), fit(&yt));
    let close = |a: f64, b: f64| (a - b).abs() <= 2.0;
    let edges = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0];
    for (k, c) in got[..5].iter().enumerate() {
        assert!(
            close(c.0, px(edges[k])) && close(c.0 + c.2, px(edges[k + 1])),
            "bottom row, rectangle {k}: {c:?}"
        );
        assert!(
            close(c.1, py(2.0)) && close(c.1 + c.3, py(0.0)),
            "bottom row: {c:?}"
        );
    }
    // Top row: one rectangle across the grid, on top of the bottom row.
    let top = &got[5];
    assert!(
        close(top.0, px(0.0)) && close(top.0 + top.2, px(6.0)),
        "{top:?}"
    );
    assert!(
        close(top.1, py(4.0)) && close(top.1 + top.3, py(2.0)),
        "{top:?}"
    );

    // 5 nats instead: −4 is level 19.2 → 19 → 0.198 of the way to 0.3 → #FEDEBE, −9 below lo.
    let path = out("heatmap_colours_5.svg");
    plot::heatmap(
        &path,
        &Figure::new("colours").log_range(5.0),
        &grid,
        lp.view(),
    )
    .unwrap();
    let got = cells(&std::fs::read_to_string(&path).unwrap());
    let fills: Vec<&str> = got.iter().map(|c| c.4.as_str()).collect();
    assert_eq!(
        fills,
        ["#7F2704", "#FEDEBE", "#FFFAF3", "#FFFAF3"],
        "{got:?}"
    );

    // A flat density (a uniform square's) is at its maximum everywhere it is positive: the
    // darkest colour there, the lightest outside the support.
    let grid = Grid::new((0.0, 3.0), (0.0, 1.0), 3, 1);
    let lp = array![ninf, -1.5, -1.5];
    let path = out("heatmap_flat.svg");
    plot::heatmap(&path, &Figure::new("flat"), &grid, lp.view()).unwrap();
    let got = cells(&std::fs::read_to_string(&path).unwrap());
    let fills: Vec<&str> = got.iter().map(|c| c.4.as_str()).collect();
    assert_eq!(fills, ["#FFFAF3", "#7F2704"], "{got:?}");
}

/// Neighbouring cells overlap by one or two pixels (1.5, rounded), the later one (to the right, or above) on top, so that
/// a viewer scaling the figure finds no shared edge to blend with the background (a faint seam
/// between cells, seen when the book's figures were rasterised at 500 pixels). The outer edges
/// stay on the frame: the last column and the top row reach no further than the grid. The colour
/// bar's bands overlap likewise. Cells of
/// 1 × 2 units are about 72 × 250 pixels here; edge to edge the overlap would be 0.
#[test]
fn heatmap_cells_overlap_their_later_neighbours_by_a_pixel() {
    let grid = Grid::new((0.0, 6.0), (0.0, 4.0), 6, 2);
    let lp = array![
        0.0f32, -4.0, -9.0, -14.0, -30.0, -2.0, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0
    ];
    let path = out("heatmap_overlap.svg");
    plot::heatmap(&path, &Figure::new("overlap"), &grid, lp.view()).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let got = cells(&svg);
    assert_eq!(
        got.len(),
        7,
        "six cells in the bottom row, one run above: {got:?}"
    );
    let (xt, yt) = ticks(&svg, 500.0);
    let (px, py) = (fit(&xt), fit(&yt));
    let bottom = &got[..6];
    for (k, pair) in bottom.windows(2).enumerate() {
        let right_edge = pair[0].0 + pair[0].2;
        let overlap = right_edge - pair[1].0;
        assert!(
            (1.0..=2.0).contains(&overlap),
            "cells {k} and {}: {pair:?}",
            k + 1
        );
    }
    // The grid's ends are the last ticks, 6 and 4, at whole pixels: the outer edges sit on them.
    let last = &bottom[5];
    assert_eq!(
        last.0 + last.2,
        px(6.0),
        "the last column's right edge: {last:?}"
    );
    let top = &got[6];
    for c in bottom {
        let overlap = top.1 + top.3 - c.1;
        assert!(
            (1.0..=2.0).contains(&overlap),
            "the row above and {c:?}: {top:?}"
        );
    }
    assert_eq!(top.1, py(4.0), "the top row's upper edge: {top:?}");
    // The colour bar's 64 bands, drawn from the bottom up, overlap the same way.
    let bands: Vec<(f64, f64)> = elements(&svg, "rect")
        .iter()
        .filter(|r| num(r, "x") > 500.0 && r["fill"] != "none")
        .map(|r| (num(r, "y"), num(r, "height")))
        .collect();
    assert_eq!(bands.len(), 64, "{bands:?}");
    for (k, pair) in bands.windows(2).enumerate() {
        let overlap = pair[1].0 + pair[1].1 - pair[0].0;
        assert!(
            (1.0..=2.0).contains(&overlap),
            "bands {k} and {}: {pair:?}",
            k + 1
        );
    }
}

/// The colour bar runs from the lightest colour at the bottom to the darkest at the top, beside
/// the tick labels of the values those colours stand for: lo at the bottom, hi at the top.
#[test]
fn heatmap_colour_bar_is_darkest_by_the_largest_value() {
    let grid = Grid::new((0.0, 2.0), (0.0, 1.0), 2, 1);
    let path = out("heatmap_bar.svg");
    plot::heatmap(
        &path,
        &Figure::new("bar"),
        &grid,
        array![0.0f32, -20.0].view(),
    )
    .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let mut bar: Vec<(f64, String)> = elements(&svg, "rect")
        .iter()
        .filter(|r| num(r, "x") >= 510.0)
        .map(|r| (num(r, "y"), r["fill"].clone()))
        .collect();
    assert_eq!(bar.len(), 64);
    bar.sort_by(|a, b| a.0.total_cmp(&b.0));
    let brightness = |hex: &str| {
        (0..3)
            .map(|i| u32::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap())
            .sum::<u32>()
    };
    assert!(
        brightness(&bar[0].1) < brightness(&bar[63].1),
        "top {:?}, bottom {:?}",
        bar[0],
        bar[63]
    );
    // The bar's labels: right of the main plot, right-aligned; "0" (hi) above "-20" (lo).
    let label_y = |want: &str| {
        texts_at(&svg)
            .into_iter()
            .find(|(a, t)| t == want && num(a, "x") > 510.0)
            .map(|(a, _)| num(&a, "y"))
            .unwrap_or_else(|| panic!("no colour-bar label {want}"))
    };
    let (hi, lo) = (label_y("0"), label_y("-20"));
    assert!(hi < lo, "0 at y = {hi}, -20 at y = {lo}");
    let darkest = bar.iter().min_by_key(|r| brightness(&r.1)).unwrap().0;
    assert!(
        (darkest - hi).abs() < (darkest - lo).abs(),
        "the darkest colour at y = {darkest}, nearer -20 than 0"
    );
}

/// The axis descriptions go on their axes: the x label under the plot, upright; the y label
/// beside it, turned 270°; by default "x₁" and "x₂". In the framed figures and in line plots.
#[test]
fn axis_labels_go_on_their_axes() {
    let is_y = |svg: &str, label: &str| -> bool {
        let (a, _) = texts_at(svg)
            .into_iter()
            .find(|(_, t)| t == label)
            .unwrap_or_else(|| panic!("no label {label}"));
        a.get("transform")
            .is_some_and(|t| t.starts_with("rotate(270"))
    };
    let g = Grid::square(0.0, 1.0, 2);
    let lp = array![0.0f32, -1.0, -2.0, -3.0];
    let read = |name: &str| std::fs::read_to_string(out(name)).unwrap();
    plot::heatmap(out("labels_default.svg"), &Figure::new("t"), &g, lp.view()).unwrap();
    let svg = read("labels_default.svg");
    assert!(!is_y(&svg, "x₁") && is_y(&svg, "x₂"));
    let fig = Figure::new("t").labels("across", "up");
    plot::heatmap(out("labels_set.svg"), &fig, &g, lp.view()).unwrap();
    let svg = read("labels_set.svg");
    assert!(!is_y(&svg, "across") && is_y(&svg, "up"));
    let line = [Series::new("s", vec![(0.0, 1.0), (1.0, 2.0)])];
    plot::lines(out("labels_lines.svg"), &fig, &line, false).unwrap();
    let svg = read("labels_lines.svg");
    assert!(!is_y(&svg, "across") && is_y(&svg, "up"));
}

/// Tick labels are short and plain: the [−8, 8] frame's are −8, −6, …, 8 on both axes (no "8.",
/// no "0e0").
#[test]
fn tick_labels_are_plain_numbers() {
    let g = Grid::square(-8.0, 8.0, 4);
    let path = out("ticks.svg");
    plot::quiver(
        &path,
        &Figure::new("t"),
        &g,
        Array2::zeros((16, 2)).view(),
        ArrowScale::Unit,
        None,
    )
    .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let want: Vec<String> = (-4..=4).map(|k| (2 * k).to_string()).collect();
    for axis in ["middle", "end"] {
        let got: Vec<String> = texts_at(&svg)
            .into_iter()
            .filter(|(a, _)| a["text-anchor"] == axis && !a.contains_key("transform"))
            .map(|(_, t)| t)
            .filter(|t| t.parse::<f64>().is_ok())
            .collect();
        assert_eq!(got, want, "{axis}-anchored labels");
    }
}

/// Each series has its own colour, and its legend entry shows that colour.
#[test]
fn series_colours_are_distinct_and_match_the_legend() {
    let series: Vec<Series> = (0..3)
        .map(|k| {
            Series::new(
                format!("s{k}"),
                vec![(0.0, k as f64), (1.0, k as f64 + 0.5)],
            )
        })
        .collect();
    let path = out("series_colours.svg");
    plot::lines(&path, &Figure::new("colours"), &series, false).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    // The curves and then the legend's line glyphs: the polylines two pixels wide.
    let wide: Vec<String> = elements(&svg, "polyline")
        .into_iter()
        .filter(|e| e["stroke-width"] == "2")
        .map(|e| e["stroke"].clone())
        .collect();
    assert_eq!(wide.len(), 6, "{wide:?}");
    assert_eq!(wide[..3], wide[3..], "curves and legend entries");
    assert!(
        wide[0] != wide[1] && wide[1] != wide[2] && wide[0] != wide[2],
        "{wide:?}"
    );
}

/// A logarithmic y axis starts at the decade below the smallest value, so that decade is
/// labelled: values from 0.02 to 5 get the ticks 0.01, 0.1 and 1. Points with y ≤ 0 (and
/// non-finite ones) are dropped as if they were not there: the same SVG, byte for byte.
#[test]
fn log_axis_labels_the_bottom_decade_and_drops_non_positive_points() {
    let pts: Vec<(f64, f64)> = (0..=10)
        .map(|i| (i as f64, 0.02 * 250f64.powf(i as f64 / 10.0)))
        .collect();
    let draw = |name: &str, pts: Vec<(f64, f64)>| {
        let path = out(name);
        plot::lines(&path, &Figure::new("log"), &[Series::new("s", pts)], true).unwrap();
        std::fs::read_to_string(&path).unwrap()
    };
    let svg = draw("log_axis.svg", pts.clone());
    let (_, yt) = ticks(&svg, f64::INFINITY);
    let labels: Vec<f64> = yt.iter().map(|t| t.0).collect();
    assert_eq!(labels, [0.01, 0.1, 1.0], "{yt:?}");
    let mut odd = pts.clone();
    odd.insert(3, (3.5, 0.0));
    odd.insert(6, (5.5, -1.0));
    odd.push((4.0, f64::NAN));
    assert!(
        draw("log_axis_odd.svg", odd) == svg,
        "dropped points changed the figure"
    );
}

/// A linear y axis spans the values with 5 % of their range to spare at either end; the x axis
/// spans them exactly. A single point gets a unit range around it both ways, so it sits in the
/// middle of the plotting area. The area is read from the axis lines, as drawn by plotters: the
/// y axis a vertical polyline at the left, the x axis a horizontal one at the bottom.
#[test]
fn linear_axes_span_the_points_with_a_margin() {
    let area = |svg: &str| {
        let lines = polylines(svg);
        let y_axis = lines
            .iter()
            .find(|(_, p)| p.len() == 2 && p[0].0 == p[1].0 && (p[0].1 - p[1].1).abs() > 100.0)
            .unwrap();
        let x_axis = lines
            .iter()
            .find(|(_, p)| p.len() == 2 && p[0].1 == p[1].1 && (p[0].0 - p[1].0).abs() > 100.0)
            .unwrap();
        (
            (
                x_axis.1[0].0.min(x_axis.1[1].0),
                x_axis.1[0].0.max(x_axis.1[1].0),
            ),
            (
                y_axis.1[0].1.min(y_axis.1[1].1),
                y_axis.1[0].1.max(y_axis.1[1].1),
            ),
        )
    };
    let path = out("linear_margin.svg");
    let s = Series::new("rise", vec![(0.0, 0.0), (10.0, 10.0)]);
    plot::lines(&path, &Figure::new("margin"), &[s], false).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let ((left, right), (top, bottom)) = area(&svg);
    let curve = &polylines(&svg)
        .into_iter()
        .find(|(c, _)| c == "#1F77B4")
        .unwrap()
        .1;
    let (first, last) = (curve[0], curve[curve.len() - 1]);
    let h = bottom - top;
    // y = 0 is 1/22 of the height above the bottom, y = 10 as far below the top (±2 pixels).
    assert!(
        (bottom - first.1 - h / 22.0).abs() <= 2.0,
        "{first:?} in {top}..{bottom}"
    );
    assert!(
        (last.1 - top - h / 22.0).abs() <= 2.0,
        "{last:?} in {top}..{bottom}"
    );
    assert!(
        (first.0 - left).abs() <= 2.0 && (last.0 - right).abs() <= 2.0,
        "{curve:?}"
    );

    let path = out("single_point.svg");
    plot::lines(
        &path,
        &Figure::new("one"),
        &[Series::dots("p", vec![(1.0, 2.0)])],
        false,
    )
    .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let ((left, right), (top, bottom)) = area(&svg);
    let dot = &elements(&svg, "circle")[0];
    let (cx, cy) = (num(dot, "cx"), num(dot, "cy"));
    assert!(
        (cx - (left + right) / 2.0).abs() <= 2.0 && (cy - (top + bottom) / 2.0).abs() <= 2.0,
        "dot at ({cx}, {cy}) in {left}..{right} × {top}..{bottom}"
    );
}

#[test]
fn grid_refuses_empty_ranges_and_zero_counts() {
    for (x, y, nx, ny) in [
        ((1.0, 1.0), (0.0, 1.0), 2, 2),
        ((0.0, 1.0), (2.0, 1.0), 2, 2),
        ((0.0, f64::INFINITY), (0.0, 1.0), 2, 2),
        ((0.0, 1.0), (0.0, 1.0), 0, 2),
        ((0.0, 1.0), (0.0, 1.0), 2, 0),
    ] {
        let made = std::panic::catch_unwind(|| Grid::new(x, y, nx, ny));
        assert!(
            made.is_err(),
            "Grid::new({x:?}, {y:?}, {nx}, {ny}) accepted"
        );
    }
}

/// A legend of eight entries is eight rows tall (154 pixels as plotters draws it, 164 as
/// `legend_size` reckons it): a curve that enters the upper-right corner only below its first
/// rows still rules that corner out. Here a wall rises at x = 9.5 to y = 8, 115 pixels below the
/// top of the plot: inside a box of eight rows, below a box of one row (24 pixels) or one as tall
/// as the legend is wide (about 75). The upper left is free.
#[test]
fn the_legend_box_is_as_tall_as_its_rows() {
    let mut series = vec![
        Series::new("wall", vec![(9.5, 0.0), (9.5, 8.0)]),
        Series::dots("top", vec![(5.0, 10.0)]),
    ];
    series.extend((0..6).map(|k| Series::dots(format!("d{k}"), vec![(0.0, 0.0), (10.0, 0.0)])));
    let path = out("legend_tall.svg");
    plot::lines(&path, &Figure::new("tall"), &series, false).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let legend = elements(&svg, "rect")
        .into_iter()
        .find(|r| r.get("opacity").is_some_and(|o| o == "0.85"))
        .expect("the legend's background");
    let (x, y) = (num(&legend, "x"), num(&legend, "y"));
    assert!(
        x < 300.0 && y < 300.0,
        "legend at ({x}, {y}), not upper left"
    );
}

/// Each path where its points are, in the frame only: a path that leaves the frame is cut and
/// starts again where it comes back, non-finite points cut it too, a path that ends outside has
/// no dot, and one that ends inside has a dot at its last point (2 pixels, as for the scatter).
#[test]
fn paths_are_cut_at_the_frame_and_end_in_a_dot() {
    let grid = Grid::new((-1.0, 3.0), (0.0, 10.0), 4, 4);
    let paths = vec![
        // In, out to the right, back in: two lines, and a dot at (2, 9).
        vec![(0.0, 1.0), (1.0, 2.0), (4.0, 3.0), (2.0, 8.0), (2.0, 9.0)],
        // Starts outside, a NaN in the middle, ends outside: one line of (0, 5) → (1, 6).
        vec![
            (-5.0, 5.0),
            (0.0, 5.0),
            (1.0, 6.0),
            (f64::NAN, 6.0),
            (2.5, 7.0),
            (9.0, 9.0),
        ],
        // Only one point inside: no line, and no dot (it does not end there).
        vec![(0.5, 0.5), (7.0, 7.0)],
    ];
    let path = out("paths_positions.svg");
    plot::paths(&path, &Figure::new("paths"), &paths, &grid, None).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let (xt, yt) = ticks(&svg, f64::INFINITY);
    let (px, py) = (fit(&xt), fit(&yt));
    let near =
        |g: (f64, f64), w: (f64, f64)| (g.0 - px(w.0)).abs() <= 2.0 && (g.1 - py(w.1)).abs() <= 2.0;
    let want: [&[(f64, f64)]; 3] = [
        &[(0.0, 1.0), (1.0, 2.0)],
        &[(2.0, 8.0), (2.0, 9.0)],
        &[(0.0, 5.0), (1.0, 6.0)],
    ];
    // The mesh's lines are polylines too, in black; the paths are blue.
    let lines: Vec<Vec<(f64, f64)>> = polylines(&svg)
        .into_iter()
        .filter(|(stroke, _)| stroke == "#1F50A0")
        .map(|(_, pts)| pts)
        .collect();
    assert_eq!(lines.len(), want.len(), "{lines:?}");
    for (got, want) in lines.iter().zip(want) {
        assert_eq!(got.len(), want.len(), "{got:?} for {want:?}");
        for (&g, &w) in got.iter().zip(want) {
            assert!(near(g, w), "point at {g:?}, want {w:?}");
        }
    }
    let dots: Vec<(f64, f64)> = elements(&svg, "circle")
        .iter()
        .map(|c| (num(c, "cx"), num(c, "cy")))
        .collect();
    assert_eq!(dots.len(), 1, "{dots:?}");
    assert!(near(dots[0], (2.0, 9.0)), "dot at {:?}", dots[0]);
}

/// The frame's edges are inside it, at both ends of both ranges: a path from the lower-left
/// corner to the upper-right one is drawn whole and ends in a dot there, and the scatter keeps a
/// dot at each of the four corners. (The other tests put points on the lower edges only.)
#[test]
fn points_on_every_edge_of_the_frame_are_drawn() {
    let grid = Grid::new((-1.0, 3.0), (0.0, 10.0), 4, 4);
    let path = out("paths_edges.svg");
    let corners = vec![(-1.0, 0.0), (3.0, 0.0), (3.0, 10.0)];
    plot::paths(&path, &Figure::new("edges"), &[corners], &grid, None).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let (xt, yt) = ticks(&svg, f64::INFINITY);
    let (px, py) = (fit(&xt), fit(&yt));
    let near =
        |g: (f64, f64), w: (f64, f64)| (g.0 - px(w.0)).abs() <= 2.0 && (g.1 - py(w.1)).abs() <= 2.0;
    let lines: Vec<Vec<(f64, f64)>> = polylines(&svg)
        .into_iter()
        .filter(|(stroke, _)| stroke == "#1F50A0")
        .map(|(_, pts)| pts)
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].len(), 3, "{lines:?}");
    assert!(near(lines[0][2], (3.0, 10.0)), "{lines:?}");
    let dots = elements(&svg, "circle");
    assert_eq!(dots.len(), 1, "no dot at the upper-right corner");
    assert!(near(
        (num(&dots[0], "cx"), num(&dots[0], "cy")),
        (3.0, 10.0)
    ));

    let samples = array![[-1.0f32, 0.0], [3.0, 0.0], [-1.0, 10.0], [3.0, 10.0]];
    let path = out("scatter_edges.svg");
    plot::scatter(&path, &Figure::new("edges"), samples.view(), &grid, None).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert_eq!(elements(&svg, "circle").len(), 4, "a corner left out");
}
