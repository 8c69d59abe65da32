//! Line charts as PNG files, drawn pixel by pixel (axes, ticks, labels in a built-in 5x7 font,
//! a legend), so a recipe's curves can be looked at without a plotting stack. A figure stacks
//! panels vertically; each panel has its own y range and any number of series.

use super::glyphs::{glyph, GLYPH_HEIGHT, GLYPH_WIDTH};
use std::path::Path;

pub type Rgb = [u8; 3];

pub const BLUE: Rgb = [31, 119, 180];
pub const ORANGE: Rgb = [255, 127, 14];
pub const GREEN: Rgb = [44, 160, 44];
pub const RED: Rgb = [214, 39, 40];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const WHITE: Rgb = [255, 255, 255];

/// One curve: (x, y) points in x order; non-finite points are skipped.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: Rgb,
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub series: Vec<Series>,
    /// Fixed y range; `None` fits the data (and includes 0).
    pub y_range: Option<(f64, f64)>,
}

/// An RGB image being drawn on.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            pixels: WHITE.repeat(width * height),
        }
    }

    fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let at = (y as usize * self.width + x as usize) * 3;
            self.pixels[at..at + 3].copy_from_slice(&color);
        }
    }

    /// A line `thickness` pixels wide (Bresenham, with a square pen).
    fn line(&mut self, from: (i64, i64), to: (i64, i64), color: Rgb, thickness: i64) {
        let (mut x, mut y) = from;
        let (dx, dy) = ((to.0 - x).abs(), -(to.1 - y).abs());
        let (sx, sy) = (if x < to.0 { 1 } else { -1 }, if y < to.1 { 1 } else { -1 });
        let mut err = dx + dy;
        let reach = thickness / 2;
        loop {
            for ox in -reach..=reach {
                for oy in -reach..=reach {
                    self.set(x + ox, y + oy, color);
                }
            }
            if (x, y) == to {
                break;
            }
            let doubled = 2 * err;
            if doubled >= dy {
                err += dy;
                x += sx;
            }
            if doubled <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn fill(&mut self, x: i64, y: i64, width: i64, height: i64, color: Rgb) {
        for py in y..y + height {
            for px in x..x + width {
                self.set(px, py, color);
            }
        }
    }

    /// `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, color: Rgb) {
        for (index, c) in text.chars().enumerate() {
            let Some(rows) = glyph(c) else { continue };
            let left = x + index as i64 * (GLYPH_WIDTH as i64 + 1) * scale;
            for (row, bits) in rows.iter().enumerate() {
                for (column, bit) in bits.chars().enumerate() {
                    if bit == '#' {
                        self.fill(
                            left + column as i64 * scale,
                            y + row as i64 * scale,
                            scale,
                            scale,
                            color,
                        );
                    }
                }
            }
        }
    }

    fn text_width(text: &str, scale: i64) -> i64 {
        text.chars().count() as i64 * (GLYPH_WIDTH as i64 + 1) * scale
    }
}

/// A short label for a tick value.
fn tick_label(value: f64, step: f64) -> String {
    if step >= 1.0 && value.fract() == 0.0 {
        format!("{value:.0}")
    } else if step >= 0.1 {
        format!("{value:.1}")
    } else if step >= 0.01 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// About `count` round tick values covering [low, high].
fn ticks(low: f64, high: f64, count: usize) -> (Vec<f64>, f64) {
    let span = (high - low).max(1e-12);
    let raw = span / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (low / step).ceil() * step;
    let values = (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|v| *v <= high + step * 1e-9)
        .collect();
    (values, step)
}

fn data_range(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    let points = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x_low, mut x_high, mut y_low, mut y_high) = (f64::MAX, f64::MIN, 0.0_f64, f64::MIN);
    for (x, y) in points {
        x_low = x_low.min(*x);
        x_high = x_high.max(*x);
        y_low = y_low.min(*y);
        y_high = y_high.max(*y);
    }
    if x_low > x_high {
        (x_low, x_high) = (0.0, 1.0);
    }
    if x_high <= x_low {
        x_high = x_low + 1.0;
    }
    if y_high <= y_low {
        y_high = y_low + 1.0;
    }
    let (y_low, y_high) = panel
        .y_range
        .unwrap_or((y_low, y_high + (y_high - y_low) * 0.05));
    ((x_low, x_high), (y_low, y_high))
}

fn draw_panel(canvas: &mut Canvas, panel: &Panel, top: i64, height: i64) {
    let (left, right) = (80_i64, canvas.width as i64 - 30);
    let (plot_top, plot_bottom) = (top + 40, top + height - 50);
    let ((x_low, x_high), (y_low, y_high)) = data_range(panel);
    let to_x = |x: f64| left + ((x - x_low) / (x_high - x_low) * (right - left) as f64) as i64;
    let to_y = |y: f64| {
        let clamped = y.clamp(y_low, y_high);
        plot_bottom
            - ((clamped - y_low) / (y_high - y_low) * (plot_bottom - plot_top) as f64) as i64
    };
    canvas.text(left, top + 12, &panel.title, 2, BLACK);
    let (y_ticks, y_step) = ticks(y_low, y_high, 5);
    for value in y_ticks {
        let y = to_y(value);
        canvas.line((left, y), (right, y), GRID, 1);
        let label = tick_label(value, y_step);
        let width = Canvas::text_width(&label, 2);
        canvas.text(left - 8 - width, y - GLYPH_HEIGHT as i64, &label, 2, BLACK);
    }
    let (x_ticks, x_step) = ticks(x_low, x_high, 8);
    for value in x_ticks {
        let x = to_x(value);
        canvas.line((x, plot_bottom), (x, plot_bottom + 5), BLACK, 1);
        let label = tick_label(value, x_step);
        let width = Canvas::text_width(&label, 2);
        canvas.text(x - width / 2, plot_bottom + 10, &label, 2, BLACK);
    }
    canvas.line((left, plot_top), (left, plot_bottom), BLACK, 1);
    canvas.line((left, plot_bottom), (right, plot_bottom), BLACK, 1);
    let label_width = Canvas::text_width(&panel.x_label, 2);
    canvas.text(
        (left + right - label_width) / 2,
        plot_bottom + 30,
        &panel.x_label,
        2,
        BLACK,
    );
    for series in &panel.series {
        let points: Vec<(i64, i64)> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (to_x(*x), to_y(*y)))
            .collect();
        for pair in points.windows(2) {
            canvas.line(pair[0], pair[1], series.color, 2);
        }
        if let [only] = points.as_slice() {
            canvas.fill(only.0 - 2, only.1 - 2, 5, 5, series.color);
        }
    }
    // Legend, top right inside the plot.
    let mut y = plot_top + 8;
    let widest = panel
        .series
        .iter()
        .map(|series| Canvas::text_width(&series.name, 2))
        .max()
        .unwrap_or(0);
    for series in &panel.series {
        let x = right - widest - 40;
        canvas.fill(x, y + 5, 24, 4, series.color);
        canvas.text(x + 30, y, &series.name, 2, BLACK);
        y += 22;
    }
}

/// Draws `panels` one above the other, each `panel_height` pixels, and writes a PNG.
pub fn write_png(
    path: &Path,
    panels: &[Panel],
    width: usize,
    panel_height: usize,
) -> std::io::Result<()> {
    let png = render_png(panels, width, panel_height)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, png)
}

/// The PNG bytes of `panels` (see `write_png`).
pub fn render_png(panels: &[Panel], width: usize, panel_height: usize) -> std::io::Result<Vec<u8>> {
    if panels.is_empty() || width < 200 || panel_height < 150 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a figure needs at least one panel, 200 pixels of width and 150 of panel height ({} panels, {width}x{panel_height} given)",
                panels.len()
            ),
        ));
    }
    let mut canvas = Canvas::new(width, panel_height * panels.len());
    for (index, panel) in panels.iter().enumerate() {
        draw_panel(
            &mut canvas,
            panel,
            (index * panel_height) as i64,
            panel_height as i64,
        );
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, canvas.width as u32, canvas.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&canvas.pixels)
            .map_err(std::io::Error::other)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        (info, buffer)
    }

    #[test]
    fn a_rising_curve_is_drawn_where_it_should_be() {
        let panel = Panel {
            title: "Reward".into(),
            x_label: "step".into(),
            series: vec![Series {
                name: "mean reward".into(),
                color: BLUE,
                points: (0..=10).map(|i| (i as f64, i as f64 / 10.0)).collect(),
            }],
            y_range: Some((0.0, 1.0)),
        };
        let bytes = render_png(&[panel.clone(), panel], 640, 300).unwrap();
        let (info, pixels) = decode(&bytes);
        assert_eq!((info.width, info.height), (640, 600));
        let at = |x: usize, y: usize| {
            let i = (y * 640 + x) * 3;
            [pixels[i], pixels[i + 1], pixels[i + 2]]
        };
        // The plot spans x 80..610 and y 40..250 in the first panel: the curve's start is at the
        // bottom left and its end at the top right, its middle in the middle.
        let near = |x: i64, y: i64| {
            (-3..=3).any(|dx| (-3..=3).any(|dy| at((x + dx) as usize, (y + dy) as usize) == BLUE))
        };
        assert!(near(80, 250) && near(610, 40) && near(345, 145));
        assert!(!near(345, 60), "nothing blue far from the line");
        let blue = pixels.chunks_exact(3).filter(|p| *p == BLUE).count();
        assert!(
            blue > 2 * 600,
            "two panels of a thick line and legend: {blue}"
        );
    }

    #[test]
    fn ticks_are_round_and_bad_figures_are_refused() {
        let (values, step) = ticks(0.0, 1.0, 5);
        assert_eq!(step, 0.2);
        assert_eq!(values.len(), 6);
        assert_eq!(tick_label(0.4, step), "0.4");
        assert!(render_png(&[], 640, 300).is_err());
        let empty = Panel::default();
        assert!(
            render_png(&[empty], 640, 300).is_ok(),
            "no data still draws axes"
        );
    }
}
