//! The loss curve as a PNG (plotters' bitmap backend).
//!
//! plotters draws text through system fonts, which a bare CI machine may not have; the few labels here
//! use a built-in 3×5 pixel font instead, so drawing never depends on the machine.

use std::path::Path;

use plotters::prelude::*;

/// Draws the training loss per step (faint), its moving average (solid), and validation losses
/// (red, with dots) into a PNG at `path`.
pub fn loss_curve(path: &Path, train: &[(f64, f64)], val: &[(f64, f64)]) -> anyhow::Result<()> {
    let finite = |p: &&(f64, f64)| p.1.is_finite();
    let points: Vec<(f64, f64)> = train.iter().chain(val).filter(finite).copied().collect();
    if points.is_empty() {
        return Ok(());
    }
    let (w, h) = (900u32, 500u32);
    let (left, right, top, bottom) = (80i32, 20i32, 40i32, 40i32);
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let (lo, hi) = ((lo - pad).max(0.0), hi + pad);

    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("cannot draw the loss curve: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let area = root.margin(top as u32, bottom as u32, left as u32, right as u32);
    let mut chart = ChartBuilder::on(&area)
        .build_cartesian_2d(0f64..max_x, lo..hi)
        .map_err(err)?;
    let grey = RGBColor(220, 220, 220);
    for i in 0..=4 {
        let y = lo + (hi - lo) * f64::from(i) / 4.0;
        chart
            .draw_series(LineSeries::new([(0.0, y), (max_x, y)], grey))
            .map_err(err)?;
    }
    let faint = RGBColor(160, 190, 230);
    let train: Vec<(f64, f64)> = train.iter().filter(finite).copied().collect();
    chart
        .draw_series(LineSeries::new(train.iter().copied(), faint))
        .map_err(err)?;
    let window = (train.len() / 50).max(1);
    let smooth: Vec<(f64, f64)> = (0..train.len())
        .map(|i| {
            let from = i.saturating_sub(window - 1);
            let slice = &train[from..=i];
            (
                train[i].0,
                slice.iter().map(|p| p.1).sum::<f64>() / slice.len() as f64,
            )
        })
        .collect();
    let blue = RGBColor(30, 90, 200);
    chart
        .draw_series(LineSeries::new(smooth, blue.stroke_width(2)))
        .map_err(err)?;
    let red = RGBColor(210, 40, 40);
    let val: Vec<(f64, f64)> = val.iter().filter(finite).copied().collect();
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(val.iter().copied(), red.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(val.iter().map(|&p| Circle::new(p, 3, red.filled())))
            .map_err(err)?;
    }

    // Axes and labels in pixel coordinates of the whole image.
    let (x0, y0, x1, y1) = (left, top, w as i32 - right, h as i32 - bottom);
    let black = RGBColor(0, 0, 0);
    for (a, b) in [((x0, y1), (x1, y1)), ((x0, y0), (x0, y1))] {
        root.draw(&PathElement::new(vec![a, b], black))
            .map_err(err)?;
    }
    let scale = 2;
    let text = |s: &str, x: i32, y: i32, color: RGBColor| -> anyhow::Result<()> {
        for (dx, dy) in pixels(s) {
            let px = x + dx * scale;
            let py = y + dy * scale;
            root.draw(&Rectangle::new(
                [(px, py), (px + scale - 1, py + scale - 1)],
                color.filled(),
            ))
            .map_err(err)?;
        }
        Ok(())
    };
    for i in 0..=4 {
        let v = lo + (hi - lo) * f64::from(i) / 4.0;
        let py = y1 - (y1 - y0) * i / 4;
        let label = format!("{v:.3}");
        text(&label, x0 - 8 - width(&label) * scale, py - 5, black)?;
    }
    text("0", x0, y1 + 8, black)?;
    let steps = format!("{}", max_x.round() as u64);
    text(&steps, x1 - width(&steps) * scale, y1 + 8, black)?;
    text("STEP", (x0 + x1) / 2 - 8, y1 + 8, black)?;
    text("TRAIN LOSS", x0 + 10, 12, blue)?;
    if !val.is_empty() {
        text("VAL LOSS", x0 + 10 + 13 * 4 * scale, 12, red)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// 3×5 glyphs, one row per string, `#` for a set pixel.
fn glyph(c: char) -> [&'static str; 5] {
    match c {
        '0' | 'O' => ["###", "#.#", "#.#", "#.#", "###"],
        '1' => [".#.", "##.", ".#.", ".#.", "###"],
        '2' => ["###", "..#", "###", "#..", "###"],
        '3' => ["###", "..#", "###", "..#", "###"],
        '4' => ["#.#", "#.#", "###", "..#", "..#"],
        '5' | 'S' => ["###", "#..", "###", "..#", "###"],
        '6' => ["###", "#..", "###", "#.#", "###"],
        '7' => ["###", "..#", "..#", ".#.", ".#."],
        '8' => ["###", "#.#", "###", "#.#", "###"],
        '9' => ["###", "#.#", "###", "..#", "###"],
        '.' => ["...", "...", "...", "...", ".#."],
        '-' => ["...", "...", "###", "...", "..."],
        'A' => [".#.", "#.#", "###", "#.#", "#.#"],
        'E' | 'e' => ["###", "#..", "###", "#..", "###"],
        'I' => ["###", ".#.", ".#.", ".#.", "###"],
        'L' => ["#..", "#..", "#..", "#..", "###"],
        'N' => ["#.#", "###", "###", "###", "#.#"],
        'P' => ["###", "#.#", "###", "#..", "#.."],
        'R' => ["##.", "#.#", "##.", "#.#", "#.#"],
        'T' => ["###", ".#.", ".#.", ".#.", ".#."],
        'V' => ["#.#", "#.#", "#.#", "#.#", ".#."],
        _ => ["...", "...", "...", "...", "..."],
    }
}

/// Width of `s` in font pixels (3 per glyph and 1 between).
fn width(s: &str) -> i32 {
    (s.chars().count() as i32 * 4 - 1).max(0)
}

/// The set pixels of `s`, as offsets in font pixels.
fn pixels(s: &str) -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for (i, c) in s.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for (col, b) in bits.chars().enumerate() {
                if b == '#' {
                    out.push((i as i32 * 4 + col as i32, row as i32));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_without_fonts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let train: Vec<(f64, f64)> = (1..=40)
            .map(|i| (f64::from(i), 3.0 / f64::from(i)))
            .collect();
        loss_curve(&path, &train, &[(20.0, 0.5), (40.0, 0.3)]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
