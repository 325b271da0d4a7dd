//! Training curves of a run as PNG files, drawn from the records of its `metrics.jsonl`.
//!
//! Everything is drawn by hand (lines, markers, and text in an embedded 5x7 bitmap font) so the
//! plots need nothing beyond the `image` crate's PNG encoder: no font files, no plotting library.
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
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};
use serde_json::Value;

/// Size of every plot, in pixels.
const WIDTH: u32 = 640;
const HEIGHT: u32 = 400;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([228, 228, 228]);

/// Series colours, in the order series are listed. Saturated and mutually distinct, and none of
/// them is black, white or the grid grey, so a series' pixels can be told apart from the frame.
const PALETTE: [Rgb<u8>; 8] = [
    Rgb([31, 119, 180]),  // blue
    Rgb([255, 127, 14]),  // orange
    Rgb([44, 160, 44]),   // green
    Rgb([214, 39, 40]),   // red
    Rgb([148, 103, 189]), // purple
    Rgb([140, 86, 75]),   // brown
    Rgb([227, 119, 194]), // pink
    Rgb([23, 190, 207]),  // cyan
];

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
        write_png_atomically(&render(&chart).0, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// One line on a plot: finite `(step, value)` points sorted by step.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    /// Eval series are sparse, so each point also gets a square marker.
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
// Axes and ticks

/// Widens an empty or single-value range so it can be divided into ticks; steps (`integer`)
/// stay at or above zero when the data does.
fn padded_range(lo: f64, hi: f64, integer: bool) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) || lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo > f64::EPSILON * lo.abs().max(hi.abs()) {
        return (lo, hi);
    }
    let v = lo;
    if integer {
        if (0.0..2.0).contains(&v) { (0.0, 4.0) } else { (v - 2.0, v + 2.0) }
    } else {
        let pad = if v == 0.0 { 1.0 } else { v.abs() * 0.1 };
        (v - pad, v + pad)
    }
}

/// Tick values covering `[lo, hi]`: multiples of the smallest step in 1, 2, 5 × 10^k that
/// needs at most six ticks, with the axis widened to the enclosing ticks (so the data never
/// touches an unlabelled edge) and, rarely, by one more step so there are at least four.
/// `integer` keeps the step at 1 or more, for optimiser steps. Returns the ticks and the step.
fn nice_ticks(lo: f64, hi: f64, integer: bool) -> (Vec<f64>, f64) {
    let (lo, hi) = padded_range(lo, hi, integer);
    let span = hi - lo;
    if !span.is_finite() || span <= 0.0 {
        return (vec![lo, hi], span);
    }
    // quotients are compared with a little slack so 1.0 / 0.2 = 5.000000000000001 counts as 5
    const SLACK: f64 = 1e-7;
    let first_exp = (span / 6.0).log10().floor() as i32 - 1;
    for i in 0..60 {
        let step = [1.0, 2.0, 5.0][i % 3] * 10f64.powi(first_exp + (i / 3) as i32);
        if integer && step < 1.0 {
            continue;
        }
        let mut first = (lo / step + SLACK).floor() as i64;
        let mut last = (hi / step - SLACK).ceil() as i64;
        if last - first > 5 {
            continue;
        }
        while last - first < 3 {
            // grow downwards unless that would take a non-negative axis below zero
            if first > 0 || lo < 0.0 {
                first -= 1;
            } else {
                last += 1;
            }
        }
        // `+ 0.0` turns -0.0 into 0.0, so no "-0" label
        let ticks = (first..=last).map(|k| k as f64 * step + 0.0).collect();
        return (ticks, step);
    }
    (vec![lo, hi], span)
}

/// Labels for `ticks` spaced `step` apart: each the shortest decimal ("0.002") or scientific
/// ("2e-3") text that reads back within a millionth of a step. The whole axis uses one style,
/// the one with the shorter longest label; whole numbers stay plain up to six digits, and
/// `integer` axes (steps) are always plain.
fn format_ticks(ticks: &[f64], step: f64, integer: bool) -> Vec<String> {
    let tolerance = step.abs() * 1e-6;
    let shortest = |v: f64, scientific: bool| -> String {
        if v.abs() <= tolerance {
            return "0".to_string();
        }
        let text = |d: usize| if scientific { format!("{v:.d$e}") } else { format!("{v:.d$}") };
        (0..=15).map(text).find(|s| s.parse::<f64>().is_ok_and(|p| (p - v).abs() <= tolerance)).unwrap_or_else(|| text(15))
    };
    let longest = |labels: &[String]| labels.iter().map(|s| s.len()).max().unwrap_or(0);
    let plain: Vec<String> = ticks.iter().map(|&v| shortest(v, false)).collect();
    if integer || (plain.iter().all(|s| !s.contains('.')) && longest(&plain) <= 6) {
        return plain;
    }
    let scientific: Vec<String> = ticks.iter().map(|&v| shortest(v, true)).collect();
    if longest(&scientific) < longest(&plain) { scientific } else { plain }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// The plot area inside the axes, in pixels (inclusive edges).
#[derive(Debug, Clone, Copy)]
struct Frame {
    left: i64,
    right: i64,
    top: i64,
    bottom: i64,
}

const MARGIN: i64 = 10;
const TICK_LEN: i64 = 4;
const TITLE_Y: i64 = 6;
const TITLE_SCALE: i64 = 2;
const LEGEND_Y: i64 = 30;
const LEGEND_ROW: i64 = 13;
const SWATCH: i64 = 18;
const LEGEND_GAP: i64 = 16;
const LINE_WIDTH: i64 = 2;
const MARKER_HALF: i64 = 2;

/// Draws a chart; also returns where the plot area ended up, for tests.
fn render(chart: &Chart) -> (RgbImage, Frame) {
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    let points = || chart.series.iter().flat_map(|s| s.points.iter().copied());
    let range =
        |values: &mut dyn Iterator<Item = f64>| values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (x_lo, x_hi) = range(&mut points().map(|p| p.0));
    let (y_lo, y_hi) = range(&mut points().map(|p| p.1));
    let (x_ticks, x_step) = nice_ticks(x_lo, x_hi, true);
    let (y_ticks, y_step) = nice_ticks(y_lo, y_hi, false);
    let x_labels = format_ticks(&x_ticks, x_step, true);
    let y_labels = format_ticks(&y_ticks, y_step, false);

    // the y labels decide the left margin, the legend's row count the top one
    let y_label_width = y_labels.iter().map(|s| text_width(s, 1)).max().unwrap_or(0);
    let left = MARGIN + y_label_width + TICK_LEN + 4;
    let right = i64::from(WIDTH) - 24;
    let rows = legend_rows(&chart.series, right - left);
    let frame = Frame { left, right, top: LEGEND_Y + rows.len() as i64 * LEGEND_ROW + 6, bottom: i64::from(HEIGHT) - 38 };

    let (x_min, x_max) = (x_ticks[0], x_ticks[x_ticks.len() - 1]);
    let (y_min, y_max) = (y_ticks[0], y_ticks[y_ticks.len() - 1]);
    // clamped, so even a degenerate axis cannot send a line off towards i64::MAX
    let to_px = |x: f64| {
        let t = (x - x_min) / (x_max - x_min);
        (frame.left as f64 + t * (frame.right - frame.left) as f64).round().clamp(0.0, f64::from(WIDTH)) as i64
    };
    let to_py = |y: f64| {
        let t = (y - y_min) / (y_max - y_min);
        (frame.bottom as f64 - t * (frame.bottom - frame.top) as f64).round().clamp(0.0, f64::from(HEIGHT)) as i64
    };

    // grid and tick labels first, so data is drawn over them
    for (&v, label) in x_ticks.iter().zip(&x_labels) {
        let x = to_px(v);
        canvas.line((x, frame.top), (x, frame.bottom), GRID, 1);
        canvas.line((x, frame.bottom), (x, frame.bottom + TICK_LEN), BLACK, 1);
        canvas.text(x - text_width(label, 1) / 2, frame.bottom + TICK_LEN + 4, label, 1, BLACK);
    }
    for (&v, label) in y_ticks.iter().zip(&y_labels) {
        let y = to_py(v);
        canvas.line((frame.left, y), (frame.right, y), GRID, 1);
        canvas.line((frame.left - TICK_LEN, y), (frame.left, y), BLACK, 1);
        canvas.text(frame.left - TICK_LEN - 4 - text_width(label, 1), y - GLYPH_H / 2, label, 1, BLACK);
    }
    canvas.rect_outline(frame, BLACK);

    for (i, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pixels: Vec<(i64, i64)> = series.points.iter().map(|&(x, y)| (to_px(x), to_py(y))).collect();
        for pair in pixels.windows(2) {
            canvas.line(pair[0], pair[1], colour, LINE_WIDTH);
        }
        // a lone point has no line, so it gets a marker whatever the series
        if series.markers || pixels.len() == 1 {
            for &p in &pixels {
                canvas.marker(p, colour);
            }
        }
    }

    // legend rows centred above the plot
    for (r, row) in rows.iter().enumerate() {
        let width: i64 = row.iter().map(|&i| legend_entry_width(&chart.series[i])).sum::<i64>() + LEGEND_GAP * (row.len() as i64 - 1);
        let mut x = (frame.left + frame.right) / 2 - width / 2;
        let y = LEGEND_Y + r as i64 * LEGEND_ROW;
        for &i in row {
            let series = &chart.series[i];
            let colour = PALETTE[i % PALETTE.len()];
            let mid = y + GLYPH_H / 2;
            canvas.line((x, mid), (x + SWATCH - 1, mid), colour, LINE_WIDTH);
            if series.markers {
                canvas.marker((x + SWATCH / 2, mid), colour);
            }
            canvas.text(x + SWATCH + 4, y, &series.name, 1, BLACK);
            x += legend_entry_width(series) + LEGEND_GAP;
        }
    }

    let title_x = i64::from(WIDTH) / 2 - text_width(chart.title, TITLE_SCALE) / 2;
    canvas.text(title_x, TITLE_Y, chart.title, TITLE_SCALE, BLACK);
    canvas.text((frame.left + frame.right) / 2 - text_width("step", 1) / 2, i64::from(HEIGHT) - 16, "step", 1, BLACK);
    (canvas.img, frame)
}

fn legend_entry_width(series: &Series) -> i64 {
    SWATCH + 4 + text_width(&series.name, 1)
}

/// Greedily packs legend entries (series indices) into rows no wider than `width`.
fn legend_rows(series: &[Series], width: i64) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut used = 0;
    for (i, s) in series.iter().enumerate() {
        let w = legend_entry_width(s);
        match rows.last_mut() {
            Some(row) if used + LEGEND_GAP + w <= width => {
                row.push(i);
                used += LEGEND_GAP + w;
            }
            _ => {
                rows.push(vec![i]);
                used = w;
            }
        }
    }
    rows
}

/// An RGB image with drawing primitives that silently clip at the edges.
struct Canvas {
    img: RgbImage,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        Canvas { img: RgbImage::from_pixel(width, height, WHITE) }
    }

    fn set(&mut self, x: i64, y: i64, colour: Rgb<u8>) {
        if let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y))
            && x < self.img.width()
            && y < self.img.height()
        {
            self.img.put_pixel(x, y, colour);
        }
    }

    fn fill(&mut self, x: i64, y: i64, w: i64, h: i64, colour: Rgb<u8>) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, colour);
            }
        }
    }

    /// Bresenham's line, each point stamped as a `width`-pixel square for thickness.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: Rgb<u8>, width: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.fill(x, y, width, width, colour);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn marker(&mut self, (x, y): (i64, i64), colour: Rgb<u8>) {
        let side = 2 * MARKER_HALF + 1;
        self.fill(x - MARKER_HALF, y - MARKER_HALF, side, side, colour);
    }

    fn rect_outline(&mut self, f: Frame, colour: Rgb<u8>) {
        self.line((f.left, f.top), (f.right, f.top), colour, 1);
        self.line((f.left, f.bottom), (f.right, f.bottom), colour, 1);
        self.line((f.left, f.top), (f.left, f.bottom), colour, 1);
        self.line((f.right, f.top), (f.right, f.bottom), colour, 1);
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel as a `scale`-sided square.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, colour: Rgb<u8>) {
        for (i, c) in text.chars().enumerate() {
            let origin = x + i as i64 * GLYPH_ADVANCE * scale;
            let top = y + if DESCENDERS.contains(c) { 2 * scale } else { 0 };
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                        self.fill(origin + col * scale, top + row as i64 * scale, scale, scale, colour);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Font

const GLYPH_W: i64 = 5;
const GLYPH_H: i64 = 7;
/// Glyph width plus one column of spacing.
const GLYPH_ADVANCE: i64 = GLYPH_W + 1;
/// Letters whose tails hang below the baseline. Squeezing them into seven rows made `p` read as
/// `P` and `g` as `9`, so their glyphs start at the x-height and are drawn two rows down.
const DESCENDERS: &str = "gpqy";

/// Width in pixels of `text` drawn at `scale`, from the first lit column to the last possible
/// one (no trailing spacing column).
fn text_width(text: &str, scale: i64) -> i64 {
    let n = text.chars().count() as i64;
    if n == 0 { 0 } else { (n * GLYPH_ADVANCE - 1) * scale }
}

/// The glyph for `c`; characters outside the table are drawn as `?`.
fn glyph(c: char) -> &'static [u8; 7] {
    FONT.iter().find(|(g, _)| *g == c).or_else(|| FONT.iter().find(|(g, _)| *g == '?')).map_or(&FONT[0].1, |(_, rows)| rows)
}

/// A 5x7 bitmap font: seven rows per glyph, top first, bit 4 the leftmost column. The
/// [`DESCENDERS`] are drawn two rows lower, so text occupies 9 rows from its top.
#[rustfmt::skip]
const FONT: [(char, [u8; 7]); 73] = [
    (' ', [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000]),
    ('0', [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110]),
    ('1', [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
    ('2', [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111]),
    ('3', [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110]),
    ('4', [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010]),
    ('5', [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110]),
    ('6', [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110]),
    ('7', [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000]),
    ('8', [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110]),
    ('9', [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100]),
    ('A', [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001]),
    ('B', [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110]),
    ('C', [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110]),
    ('D', [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100]),
    ('E', [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111]),
    ('F', [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000]),
    ('G', [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111]),
    ('H', [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001]),
    ('I', [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
    ('J', [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100]),
    ('K', [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001]),
    ('L', [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111]),
    ('M', [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001]),
    ('N', [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001]),
    ('O', [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110]),
    ('P', [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000]),
    ('Q', [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101]),
    ('R', [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001]),
    ('S', [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110]),
    ('T', [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100]),
    ('U', [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110]),
    ('V', [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100]),
    ('W', [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010]),
    ('X', [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001]),
    ('Y', [0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100]),
    ('Z', [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111]),
    ('a', [0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111]),
    ('b', [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110]),
    ('c', [0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110]),
    ('d', [0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111]),
    ('e', [0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110]),
    ('f', [0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000]),
    ('g', [0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110]),
    ('h', [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001]),
    ('i', [0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110]),
    ('j', [0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b10010, 0b01100]),
    ('k', [0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010]),
    ('l', [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
    ('m', [0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001]),
    ('n', [0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001]),
    ('o', [0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110]),
    ('p', [0b11110, 0b10001, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000]),
    ('q', [0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001]),
    ('r', [0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000]),
    ('s', [0b00000, 0b00000, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110]),
    ('t', [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110]),
    ('u', [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101]),
    ('v', [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100]),
    ('w', [0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010]),
    ('x', [0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001]),
    ('y', [0b10001, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110]),
    ('z', [0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111]),
    ('.', [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100]),
    ('-', [0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000]),
    ('+', [0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000]),
    ('%', [0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011]),
    ('(', [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010]),
    (')', [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000]),
    ('_', [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111]),
    (':', [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000]),
    ('/', [0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000]),
    ('?', [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100]),
];

#[cfg(test)]
mod tests {
    use super::*;
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

    fn count(img: &RgbImage, colour: Rgb<u8>, region: impl Fn(u32, u32) -> bool) -> usize {
        img.enumerate_pixels().filter(|&(x, y, p)| *p == colour && region(x, y)).count()
    }

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
            assert_eq!(*img.get_pixel(0, 0), WHITE, "white background");
            for (i, &colour) in PALETTE.iter().enumerate() {
                // the legend alone draws at most 18 x 2 + 5 x 5 = 61 pixels of a colour, so
                // more than that means the series itself was drawn
                let n = count(&img, colour, |_, _| true);
                if i < series {
                    assert!(n > 61, "{}: series {i} has only {n} pixels", path.display());
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
        let (img, frame) = render(&chart);
        let (l, r, t, b) = (frame.left as u32, frame.right as u32, frame.top as u32, frame.bottom as u32);
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
            let (img, _) = render(&chart);
            assert!(count(&img, PALETTE[0], |_, _| true) > 61, "{}: series not drawn", chart.title);
        }
        let all_bad = Chart::new("bad", [Series::new("x", [(f64::NAN, 1.0), (1.0, f64::INFINITY)], true)]);
        assert!(all_bad.series.is_empty());
    }

    #[test]
    fn glyphs_render_at_the_expected_width() {
        let mut canvas = Canvas::new(100, 30);
        canvas.text(10, 5, "HH", 1, BLACK);
        let lit: Vec<(u32, u32)> = canvas.img.enumerate_pixels().filter(|(_, _, p)| **p == BLACK).map(|(x, y, _)| (x, y)).collect();
        assert!(!lit.is_empty());
        let xs = lit.iter().map(|p| p.0);
        let ys = lit.iter().map(|p| p.1);
        let width = i64::from(xs.clone().max().unwrap_or(0) - xs.min().unwrap_or(0) + 1);
        let height = ys.clone().max().unwrap_or(0) - ys.min().unwrap_or(0) + 1;
        // H lights its first and last columns, so the lit width is the full text width
        assert_eq!(width, text_width("HH", 1));
        assert_eq!(width, 11);
        assert_eq!(height, 7);
        // each H has 7 + 7 + 3 lit pixels
        assert_eq!(lit.len(), 34);
        assert_eq!(text_width("loss", 2), 46);
        assert_eq!(text_width("", 1), 0);
    }

    #[test]
    fn font_covers_the_charset_once_and_fits_five_columns() {
        let charset = ('0'..='9').chain('a'..='z').chain('A'..='Z').chain(".-+%()_:/ ?".chars());
        for c in charset {
            let found = FONT.iter().filter(|(g, _)| *g == c).count();
            assert_eq!(found, 1, "glyph {c:?} defined {found} times");
        }
        assert!(FONT.iter().all(|(_, rows)| rows.iter().all(|&r| r < 1 << GLYPH_W)));
        // every glyph but space draws something, and no two glyphs look the same
        assert!(FONT.iter().filter(|(c, _)| *c != ' ').all(|(_, rows)| rows.iter().any(|&r| r != 0)));
        for (i, a) in FONT.iter().enumerate() {
            for b in &FONT[i + 1..] {
                assert_ne!(a.1, b.1, "{:?} and {:?} are identical", a.0, b.0);
            }
        }
        assert_eq!(glyph('€'), glyph('?'));
    }

    fn assert_ticks(lo: f64, hi: f64, integer: bool, expected: &[f64]) {
        let (ticks, _) = nice_ticks(lo, hi, integer);
        assert_eq!(ticks.len(), expected.len(), "{lo}..{hi}: {ticks:?}");
        for (t, e) in ticks.iter().zip(expected) {
            assert!((t - e).abs() < 1e-9 * e.abs().max(1e-12), "{lo}..{hi}: {ticks:?}, want {expected:?}");
        }
    }

    #[test]
    fn nice_ticks_for_typical_ranges() {
        assert_ticks(0.0, 1.0, false, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_ticks(0.3, 2.3, false, &[0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_ticks(0.0, 468.0, true, &[0.0, 100.0, 200.0, 300.0, 400.0, 500.0]);
        assert_ticks(60.0, 95.0, false, &[60.0, 70.0, 80.0, 90.0, 100.0]);
        assert_ticks(1e-4, 2e-4, false, &[1e-4, 1.2e-4, 1.4e-4, 1.6e-4, 1.8e-4, 2e-4]);
        assert_ticks(-3.0, 3.0, false, &[-4.0, -2.0, 0.0, 2.0, 4.0]);
        // three ticks would do, but a fourth is added below (not under zero)
        assert_ticks(5.0, 15.0, false, &[0.0, 5.0, 10.0, 15.0]);
        // steps never get fractional ticks; a single step is padded
        assert_ticks(0.0, 2.0, true, &[0.0, 1.0, 2.0, 3.0]);
        assert_ticks(50.0, 50.0, true, &[48.0, 49.0, 50.0, 51.0, 52.0]);
        // a constant value is padded by 10%
        assert_ticks(0.5, 0.5, false, &[0.4, 0.45, 0.5, 0.55]);
    }

    #[test]
    fn nice_ticks_always_four_to_six_covering_the_data() {
        // a deterministic spread of ranges over many magnitudes and offsets
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..5000 {
            let scale = 10f64.powf(next() * 16.0 - 8.0);
            let lo = (next() - 0.3) * scale * 10.0;
            let hi = lo + next() * scale;
            for integer in [false, true] {
                let (ticks, step) = nice_ticks(lo, hi, integer);
                assert!((4..=6).contains(&ticks.len()), "{lo}..{hi} ({integer}): {ticks:?}");
                let (first, last) = (ticks[0], ticks[ticks.len() - 1]);
                let slack = step * 1e-6;
                assert!(first <= lo + slack && last >= hi - slack, "{lo}..{hi}: {ticks:?}");
                let mantissa = step / 10f64.powf(step.log10().floor());
                assert!([1.0, 2.0, 5.0, 10.0].iter().any(|m| (mantissa - m).abs() < 1e-9), "step {step}");
                assert!(!integer || step >= 1.0);
            }
        }
    }

    #[test]
    fn tick_labels_are_compact() {
        let labels = |lo, hi, integer| {
            let (ticks, step) = nice_ticks(lo, hi, integer);
            format_ticks(&ticks, step, integer)
        };
        assert_eq!(labels(0.0, 1.0, false), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(labels(0.0, 2e-4, false), ["0", "5e-5", "1e-4", "1.5e-4", "2e-4"]);
        assert_eq!(labels(0.0, 0.01, false), ["0", "2e-3", "4e-3", "6e-3", "8e-3", "1e-2"]);
        assert_eq!(labels(0.0, 468.0, true), ["0", "100", "200", "300", "400", "500"]);
        assert_eq!(labels(0.0, 2.0e6, true), ["0", "500000", "1000000", "1500000", "2000000"]);
        assert_eq!(labels(-1.0, 1.0, false), ["-1", "-0.5", "0", "0.5", "1"]);
    }
}
