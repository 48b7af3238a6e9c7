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
