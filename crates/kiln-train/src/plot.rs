//! Training curves of a run as PNG files, drawn from the records of its `metrics.jsonl`.
//!
//! This file decides what is drawn (which series on which chart, titles, axis ranges and labels,
//! the legend); `plotters` draws it. Text is set in DejaVu Sans, embedded by the `dejavu` crate,
//! so drawing looks up no system font and builds without fontconfig or freetype.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let text = std::fs::read_to_string("runs/quickstart/metrics.jsonl")?;
//! let records: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
//! let written = kiln_train::plot::write_curves(&records, std::path::Path::new("runs/quickstart"))?;
//! println!("wrote {written:?}");
//! # Ok(())
//! # }
//! ```

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use plotters::coord::Shift;
use plotters::data::float::FloatPrettyPrinter;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

/// Size of every plot, in pixels.
const WIDTH: u32 = 640;
const HEIGHT: u32 = 400;

/// Series colours, in the order series are listed (matplotlib's tab10). Saturated and mutually
/// distinct, and none of them is black, white or the grid grey, so a series' pixels can be told
/// apart from the frame and the anti-aliased text.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),  // blue
    RGBColor(255, 127, 14),  // orange
    RGBColor(44, 160, 44),   // green
    RGBColor(214, 39, 40),   // red
    RGBColor(148, 103, 189), // purple
    RGBColor(140, 86, 75),   // brown
    RGBColor(227, 119, 194), // pink
    RGBColor(23, 190, 207),  // cyan
];
const GRID: RGBColor = RGBColor(228, 228, 228);

/// Eval metrics that are fractions in `[0, 1]`, plotted in percent on `accuracy.png`.
const ACCURACY_KEYS: [&str; 7] = ["top1", "top5", "top1_ema", "top5_ema", "mIoU", "aAcc", "mAcc"];

/// Draws `loss.png` (train loss per step, and eval loss per step as a second series with
/// markers; EMA eval loss too when the records have it), `accuracy.png` (every eval metric that is
/// a fraction: top1, top5, top1_ema, top5_ema, mIoU, aAcc, mAcc — those present — in percent, per
/// step) and `lr.png` (lr per step) into `dir`, creating `dir` if needed.
///
/// Each file is written to `<name>.partial` then renamed, so a reader never sees half a PNG.
/// Skips a plot that would have no points; returns the paths written, in that order. Values that
/// are missing, `null`, NaN or infinite are skipped, as are records without a numeric `step`.
pub fn write_curves(records: &[Value], dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, chart) in charts(records) {
        if chart.series.is_empty() {
            continue;
        }
        if written.is_empty() {
            fs::create_dir_all(dir)?;
        }
        let path = dir.join(name);
        write_png_atomically(&render(&chart)?.0, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// One line on a plot: finite `(step, value)` points sorted by step.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    /// Eval series are sparse, so each point also gets a round marker.
    markers: bool,
}

impl Series {
    /// Drops non-finite points and sorts by step (stably, so a resumed run that logged a step
    /// twice keeps both, in log order) so lines never run backwards.
    fn new(name: &str, points: impl IntoIterator<Item = (f64, f64)>, markers: bool) -> Self {
        let mut points: Vec<(f64, f64)> = points.into_iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Series { name: name.to_string(), points, markers }
    }
}

/// A titled set of non-empty series sharing one pair of axes.
#[derive(Debug, Clone)]
struct Chart {
    title: &'static str,
    series: Vec<Series>,
}

impl Chart {
    fn new(title: &'static str, series: impl IntoIterator<Item = Series>) -> Self {
        Chart { title, series: series.into_iter().filter(|s| !s.points.is_empty()).collect() }
    }
}

/// `(step, key × scale)` of every record of `kind` that has both as numbers.
fn extract(records: &[Value], kind: &str, key: &str, scale: f64) -> impl Iterator<Item = (f64, f64)> {
    records.iter().filter(move |r| r.get("kind").and_then(Value::as_str) == Some(kind)).filter_map(move |r| {
        let step = r.get("step").and_then(Value::as_f64)?;
        let value = r.get(key).and_then(Value::as_f64)?;
        Some((step, value * scale))
    })
}

/// The three charts with their file names; a chart may come out with no series.
fn charts(records: &[Value]) -> Vec<(&'static str, Chart)> {
    let loss = Chart::new(
        "loss",
        [
            Series::new("train", extract(records, "train", "loss", 1.0), false),
            Series::new("eval", extract(records, "eval", "loss", 1.0), true),
            Series::new("eval (ema)", extract(records, "eval", "loss_ema", 1.0), true),
        ],
    );
    let accuracy = Chart::new("accuracy (%)", ACCURACY_KEYS.iter().map(|key| Series::new(key, extract(records, "eval", key, 100.0), true)));
    let lr = Chart::new("learning rate", [Series::new("lr", extract(records, "train", "lr", 1.0), false)]);
    vec![("loss.png", loss), ("accuracy.png", accuracy), ("lr.png", lr)]
}

/// Encodes to `<path>.partial` and renames it over `path`: the rename is atomic on one file
/// system, so a dashboard polling the run directory never reads a truncated PNG.
fn write_png_atomically(img: &RgbImage, path: &Path) -> io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = encode_png(img, &partial).and_then(|()| fs::rename(&partial, path));
    if result.is_err() {
        // best effort: the original error is the one worth reporting
        let _ = fs::remove_file(&partial);
    }
    result
}

fn encode_png(img: &RgbImage, path: &Path) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    PngEncoder::new(&mut out).write_image(img.as_raw(), img.width(), img.height(), ExtendedColorType::Rgb8).map_err(io::Error::other)?;
    // into_inner flushes, and reports a failed flush instead of dropping it silently
    out.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Drawing

/// The family name plotters' own defaults ask for, so any text it sets finds the embedded font.
const FONT: &str = "sans-serif";
const TITLE_SIZE: f64 = 20.0;
const LABEL_SIZE: f64 = 13.0;
/// Height of the legend row between the title and the plot.
const LEGEND_HEIGHT: u32 = 22;
/// Length of a legend entry's line swatch, and the space between entries.
const SWATCH: i32 = 20;
const LEGEND_GAP: i32 = 18;
const LINE_WIDTH: u32 = 2;
const MARKER_RADIUS: u32 = 3;
const TICK_LENGTH: u32 = 4;

/// Registers DejaVu Sans (Bitstream Vera licence, DejaVu changes public domain; shipped in the
/// `dejavu` crate) as [`FONT`] with plotters' `ab_glyph` renderer, once per process. A
/// proportional face: plotters 0.3.7's ab_glyph path ignores side bearings, which leaves gaps
/// around the narrow glyphs of a monospace one ("1. 5").
fn register_embedded_font() -> io::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if registered { Ok(()) } else { Err(io::Error::other("the embedded DejaVu Sans font could not be parsed")) }
}

fn colour(series: usize) -> RGBColor {
    PALETTE[series % PALETTE.len()]
}

/// The plot area inside the axes: its x and y pixel ranges.
type PlotArea = (Range<u32>, Range<u32>);

type DrawError = Box<dyn std::error::Error + Send + Sync>;

/// Draws a chart; also returns where the plot area ended up, for tests.
fn render(chart: &Chart) -> io::Result<(RgbImage, PlotArea)> {
    register_embedded_font()?;
    let mut pixels = vec![0; WIDTH as usize * HEIGHT as usize * 3];
    let area = draw(chart, &mut pixels).map_err(|e| io::Error::other(format!("drawing the {} chart: {e}", chart.title)))?;
    let img = RgbImage::from_raw(WIDTH, HEIGHT, pixels).ok_or_else(|| io::Error::other("chart buffer of the wrong size"))?;
    Ok((img, area))
}

/// Title on top, the legend row under it, then the plot: x is the optimiser step, y the values.
fn draw(chart: &Chart, pixels: &mut [u8]) -> Result<PlotArea, DrawError> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (legend, body) = root.titled(chart.title, (FONT, TITLE_SIZE))?.split_vertically(LEGEND_HEIGHT);
    draw_legend(&legend, &chart.series)?;

    let (x_range, y_range) = axis_ranges(chart);
    let y_span = y_range.end - y_range.start;
    // learning rates read better as 2e-4 than as 0.0002, and one axis never mixes the two
    let scientific = y_range.start.abs().max(y_range.end.abs()) < 1e-2;
    let y_label = |v: &f64| tick_label(*v, y_span, scientific);
    let mut plot = ChartBuilder::on(&body)
        .margin_right(24)
        .margin_bottom(4)
        .x_label_area_size(38)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range)?;
    plot.configure_mesh()
        .x_labels(8)
        .y_labels(6)
        .x_desc("step")
        .set_all_tick_mark_size(TICK_LENGTH)
        .y_label_formatter(&y_label)
        .label_style((FONT, LABEL_SIZE))
        .axis_desc_style((FONT, LABEL_SIZE))
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (i, series) in chart.series.iter().enumerate() {
        // a lone point has no line, so it gets a marker whatever the series
        let marker = if series.markers || series.points.len() == 1 { MARKER_RADIUS } else { 0 };
        let points = series.points.iter().map(|&(step, y)| (step.round() as i64, y));
        plot.draw_series(LineSeries::new(points, colour(i).filled().stroke_width(LINE_WIDTH)).point_size(marker))?;
    }
    let (x, y) = plot.plotting_area().get_pixel_range();
    root.present()?;
    let px = |r: Range<i32>| r.start.max(0) as u32..r.end.max(0) as u32;
    Ok((px(x), px(y)))
}

/// One centred row of legend entries: a line swatch (with a marker for eval series, as on the
/// plot) and the series name. Every chart's series fit: all seven accuracy keys take ~520 px.
fn draw_legend(area: &DrawingArea<BitMapBackend<'_>, Shift>, series: &[Series]) -> Result<(), DrawError> {
    let font = TextStyle::from((FONT, LABEL_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut widths = Vec::with_capacity(series.len());
    for s in series {
        widths.push(SWATCH + 4 + area.estimate_text_size(&s.name, &font)?.0 as i32);
    }
    let total = widths.iter().sum::<i32>() + LEGEND_GAP * (widths.len() as i32 - 1);
    let (width, height) = area.dim_in_pixel();
    let (mut x, y) = ((width as i32 - total) / 2, height as i32 / 2);
    for (i, (s, entry_width)) in series.iter().zip(widths).enumerate() {
        let style = colour(i).filled().stroke_width(LINE_WIDTH);
        area.draw(&PathElement::new(vec![(x, y), (x + SWATCH, y)], style))?;
        if s.markers {
            area.draw(&Circle::new((x + SWATCH / 2, y), MARKER_RADIUS, style))?;
        }
        area.draw(&Text::new(s.name.as_str(), (x + SWATCH + 4, y), font.clone()))?;
        x += entry_width + LEGEND_GAP;
    }
    Ok(())
}

/// The axes' ranges: the data's extent plus a margin, so no curve runs along an edge of the plot.
/// A lone step or a constant value is widened so the axis still gets ticks, and steps stay at
/// or above zero when the data does.
fn axis_ranges(chart: &Chart) -> (Range<i64>, Range<f64>) {
    let points = || chart.series.iter().flat_map(|s| s.points.iter().copied());
    let extent =
        |values: &mut dyn Iterator<Item = f64>| values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (x_lo, x_hi) = extent(&mut points().map(|p| p.0));
    let (y_lo, y_hi) = extent(&mut points().map(|p| p.1));
    if x_lo > x_hi {
        return (0..1, 0.0..1.0);
    }
    let x_pad = ((x_hi - x_lo) * 0.03).max(2.0);
    let x_start = if x_lo >= 0.0 { (x_lo - x_pad).max(0.0) } else { x_lo - x_pad };
    let x = x_start.floor() as i64..(x_hi + x_pad).ceil() as i64;
    let y_span = y_hi - y_lo;
    let y_pad = if y_span > 1e-9 * y_lo.abs().max(y_hi.abs()) {
        0.05 * y_span
    } else if y_hi != 0.0 {
        0.1 * y_hi.abs()
    } else {
        1.0
    };
    (x, y_lo - y_pad..y_hi + y_pad)
}

/// A y tick label: the shortest plain decimal ("0.25") or, on a `scientific` axis, mantissa and
/// exponent ("1.5e-4"). A tick within a billionth of the axis `span` of zero reads "0", never
/// "-0" or "1e-20".
fn tick_label(v: f64, span: f64, scientific: bool) -> String {
    if v.abs() <= span * 1e-9 {
        return "0".to_string();
    }
    if !scientific {
        return FloatPrettyPrinter { allow_scientific: false, min_decimal: 0, max_decimal: 6 }.print(v);
    }
    // Rust rounds the mantissa and carries into the exponent ("9.9999999e-5" gives "1.000e-4")
    let text = format!("{v:.3e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    format!("{}e{exponent}", mantissa.trim_end_matches('0').trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use serde_json::json;

    /// A fresh, empty directory under the system temp dir, unique to this test.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-plot-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Two epochs of a classification run, with EMA metrics on the evals.
    fn synthetic_records() -> Vec<Value> {
        let mut records = Vec::new();
        for epoch in 0..2u32 {
            for i in 1..=9u32 {
                let step = epoch * 450 + i * 50;
                let t = f64::from(step) / 900.0;
                records.push(json!({
                    "kind": "train", "epoch": epoch, "step": step, "loss": 2.3 * (-2.0 * t).exp(),
                    "lr": 2e-4 * (1.0 - t), "images_per_s": 120.5, "time": 1.0,
                }));
            }
            let step = (epoch + 1) * 450;
            records.push(json!({
                "kind": "eval", "epoch": epoch, "step": step, "top1": 0.6 + 0.2 * f64::from(epoch),
                "top5": 0.9 + 0.05 * f64::from(epoch), "loss": 1.0 - 0.3 * f64::from(epoch),
                "top1_ema": 0.55 + 0.2 * f64::from(epoch), "top5_ema": 0.88, "loss_ema": 1.1, "time": 2.0,
            }));
        }
        records
    }

    fn rgb(c: RGBColor) -> Rgb<u8> {
        Rgb([c.0, c.1, c.2])
    }

    fn count(img: &RgbImage, colour: RGBColor, region: impl Fn(u32, u32) -> bool) -> usize {
        img.enumerate_pixels().filter(|&(x, y, p)| *p == rgb(colour) && region(x, y)).count()
    }

    /// The most pixels of one colour a legend entry draws: a swatch `SWATCH + 1` long and at
    /// most three rows thick, and a marker in its `(2r + 1)²` box.
    const LEGEND_PIXELS: usize = (SWATCH as usize + 1) * 3 + (2 * MARKER_RADIUS as usize + 1).pow(2);

    #[test]
    fn writes_three_decodable_pngs_with_every_series_drawn() {
        let dir = scratch_dir("three");
        let written = write_curves(&synthetic_records(), &dir).expect("write_curves");
        let names: Vec<_> = written.iter().map(|p| p.file_name().and_then(|n| n.to_str()).unwrap_or("")).collect();
        assert_eq!(names, ["loss.png", "accuracy.png", "lr.png"]);
        // series count per file: train + eval + eval (ema); top1, top5, top1_ema, top5_ema; lr
        for (path, series) in written.iter().zip([3, 4, 1]) {
            assert!(path.starts_with(&dir));
            let img = image::open(path).expect("decodes as an image").to_rgb8();
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT), "{}", path.display());
            assert_eq!(*img.get_pixel(0, 0), rgb(WHITE), "white background");
            for (i, &colour) in PALETTE.iter().enumerate() {
                // more pixels than the legend alone draws means the series itself was drawn
                let n = count(&img, colour, |_, _| true);
                if i < series {
                    assert!(n > LEGEND_PIXELS, "{}: series {i} has only {n} pixels", path.display());
                } else {
                    assert_eq!(n, 0, "{}: colour {i} used with {series} series", path.display());
                }
            }
        }
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("read dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "partial"))
            .collect();
        assert!(leftovers.is_empty(), "left {leftovers:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn lines_span_the_plot_area() {
        let (_, chart) = charts(&synthetic_records()).swap_remove(0);
        let (img, (xs, ys)) = render(&chart).expect("render");
        let (l, r, t, b) = (xs.start, xs.end - 1, ys.start, ys.end - 1);
        let mid = (l + r) / 2;
        let inside_left = |x: u32, y: u32| x > l && x < mid && y > t && y < b;
        let inside_right = |x: u32, y: u32| x >= mid && x < r && y > t && y < b;
        for (i, colour) in PALETTE.iter().take(2).enumerate() {
            assert!(count(&img, *colour, inside_left) > 20, "series {i} missing on the left");
            assert!(count(&img, *colour, inside_right) > 20, "series {i} missing on the right");
        }
        // the first train point (step 50, the highest loss) lies near the top-left of the frame
        let near_top_left = |x: u32, y: u32| x > l && x < l + 60 && y > t && y < t + (b - t) / 4;
        assert!(count(&img, PALETTE[0], near_top_left) > 0);
    }

    #[test]
    fn title_tick_labels_and_legend_text_are_drawn() {
        let (_, chart) = charts(&synthetic_records()).swap_remove(0);
        let (img, (xs, ys)) = render(&chart).expect("render");
        // anti-aliased black text on white: count the clearly dark pixels of a region
        let dark = |region: &dyn Fn(u32, u32) -> bool| {
            img.enumerate_pixels().filter(|&(x, y, p)| region(x, y) && p.0.iter().all(|&c| c < 96)).count()
        };
        let title_bottom = ys.start.saturating_sub(LEGEND_HEIGHT + 4);
        assert!(dark(&|x, y| y < title_bottom && x > WIDTH / 2 - 40 && x < WIDTH / 2 + 40) > 30, "no title");
        assert!(dark(&|_, y| y >= title_bottom && y < ys.start) > 30, "no legend names");
        // clear of the tick marks, so only text counts
        let margin = TICK_LENGTH + 2;
        assert!(dark(&|x, y| x + margin < xs.start && ys.contains(&y)) > 60, "no y tick labels");
        assert!(dark(&|x, y| y > ys.end + margin && xs.contains(&x)) > 60, "no x tick labels or 'step'");
        // the plot area itself holds the series, not a blank or a black box
        let white = img.pixels().filter(|p| **p == rgb(WHITE)).count();
        let total = (WIDTH * HEIGHT) as usize;
        assert!(white > total / 2 && white < total - 2000, "{white} of {total} pixels white");
    }

    #[test]
    fn empty_input_writes_nothing() {
        let dir = scratch_dir("empty");
        assert!(write_curves(&[], &dir).expect("empty").is_empty());
        assert!(!dir.exists(), "no directory created for nothing");
        // records without usable points are as good as none
        let useless = [json!({"kind": "train", "loss": 1.0}), json!({"kind": "eval", "step": 3, "loss": null}), json!(7)];
        assert!(write_curves(&useless, &dir).expect("useless").is_empty());
        assert!(!dir.exists());
    }

    #[test]
    fn skips_only_the_plots_without_points() {
        let dir = scratch_dir("seg");
        let records = [
            json!({"kind": "eval", "epoch": 0, "step": 100, "mIoU": 0.41, "aAcc": 0.85, "loss": 0.9}),
            json!({"kind": "eval", "epoch": 1, "step": 200, "mIoU": 0.47, "aAcc": 0.88, "loss": 0.8}),
        ];
        let (_, accuracy) = charts(&records).swap_remove(1);
        let names: Vec<&str> = accuracy.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["mIoU", "aAcc"]);
        assert_eq!(accuracy.series[0].points, [(100.0, 41.0), (200.0, 47.0)]);
        let written = write_curves(&records, &dir).expect("write");
        assert_eq!(written, [dir.join("loss.png"), dir.join("accuracy.png")], "no lr.png without train records");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn degenerate_series_still_render() {
        let single = Chart::new("lr", [Series::new("lr", [(7.0, 3e-4)], false)]);
        let constant = Chart::new("loss", [Series::new("train", (0..10).map(|i| (f64::from(i), 0.5)), false)]);
        let with_nan =
            Series::new("train", [(0.0, 1.0), (1.0, f64::NAN), (f64::INFINITY, 2.0), (2.0, f64::NEG_INFINITY), (3.0, 0.5)], false);
        assert_eq!(with_nan.points, [(0.0, 1.0), (3.0, 0.5)]);
        for chart in [single, constant, Chart::new("nan", [with_nan])] {
            let (img, (xs, ys)) = render(&chart).expect("render");
            // inside the plot area, so the legend's swatch does not count; a lone point's marker
            // alone has about 30 pixels
            let inside = |x: u32, y: u32| xs.start < x && x + 1 < xs.end && ys.start < y && y + 1 < ys.end;
            assert!(count(&img, PALETTE[0], inside) > 20, "{}: series not drawn", chart.title);
        }
        let all_bad = Chart::new("bad", [Series::new("x", [(f64::NAN, 1.0), (1.0, f64::INFINITY)], true)]);
        assert!(all_bad.series.is_empty());
    }

    #[test]
    fn axes_cover_the_data_with_a_margin() {
        let ranges = |points: &[(f64, f64)]| axis_ranges(&Chart::new("t", [Series::new("s", points.iter().copied(), false)]));
        // a 3% margin (at least two steps) on x, 5% on y
        let (x, y) = ranges(&[(100.0, 0.3), (1100.0, 2.3)]);
        assert_eq!(x, 70..1130);
        assert!((y.start - 0.2).abs() < 1e-12 && (y.end - 2.4).abs() < 1e-12, "{y:?}");
        // steps never go below zero when the data does not
        assert_eq!(ranges(&[(0.0, 1.0), (50.0, 2.0)]).0, 0..52);
        assert_eq!(ranges(&[(-10.0, 1.0), (10.0, 2.0)]).0, -12..12);
        // a single step and a constant value are widened, so the axes still have a span
        let (x, y) = ranges(&[(7.0, 3e-4)]);
        assert_eq!(x, 5..9);
        assert!((y.start - 2.7e-4).abs() < 1e-12 && (y.end - 3.3e-4).abs() < 1e-12, "{y:?}");
        assert_eq!(ranges(&[(1.0, 0.0), (2.0, 0.0)]).1, -1.0..1.0);
        assert_eq!(axis_ranges(&Chart { title: "empty", series: Vec::new() }), (0..1, 0.0..1.0));
    }

    #[test]
    fn tick_labels_are_compact() {
        let labels = |ticks: &[f64], span: f64, scientific: bool| -> Vec<String> {
            ticks.iter().map(|&v| tick_label(v, span, scientific)).collect()
        };
        assert_eq!(labels(&[0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0], 1.0, false), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(labels(&[0.0, 5e-5, 1e-4, 1.5000000000000001e-4, 2e-4], 2e-4, true), ["0", "5e-5", "1e-4", "1.5e-4", "2e-4"]);
        assert_eq!(labels(&[2e-3, 4e-3, 9.9999999e-3], 1e-2, true), ["2e-3", "4e-3", "1e-2"]);
        assert_eq!(labels(&[-1.0, -0.5, -1e-17, 0.5], 2.0, false), ["-1", "-0.5", "0", "0.5"]);
        assert_eq!(labels(&[60.0, 72.5, 1500000.0], 100.0, false), ["60", "72.5", "1500000"]);
    }
}
