//! A small SVG chart writer: points and lines on a linear x axis and a linear or log y axis,
//! with ticks, grid and a legend. Enough for the scale harness's plots without a plotting crate
//! (plotters with only its SVG backend measured 14 s and 5 crates to build on 2 busy cores;
//! this is ~250 lines and builds with the harness).

use std::fmt::Write;

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 600.0;
const LEFT: f64 = 80.0;
/// Room for the legend, right of the plot.
const RIGHT: f64 = 330.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 56.0;

/// Colours that stay apart on white (Okabe-Ito), one per series in turn.
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// Small dots, drawn faintly (every sample).
    Dots,
    /// Larger markers (a few samples that matter, e.g. xl at checkpoints).
    Markers,
    Line,
    Dashed,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
    /// Listed in the legend (a tool's dots and its median line share one entry).
    pub in_legend: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub y_log: bool,
    pub series: Vec<Series>,
}

/// The y axis' range and how values map onto it.
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Scale {
    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }
}

/// Ticks 1, 2 or 5 times a power of ten apart, about `want` of them over [lo, hi].
fn linear_ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / want.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

/// 1, 2, 5 times each power of ten inside [lo, hi] (only the powers when the range is wide).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = (hi / lo).log10();
    let mults: &[f64] = if decades > 4.0 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut out = Vec::new();
    let mut p = 10f64.powf(lo.log10().floor());
    while p <= hi {
        for m in mults {
            let v = p * m;
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
        p *= 10.0;
    }
    out
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1.0 && v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    /// The chart as an SVG document. Points that cannot be drawn (non-finite, or not positive
    /// on a log axis) are left out.
    pub fn render(&self) -> String {
        let drawable =
            |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!self.y_log || y > 0.0);
        let all: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(drawable)
            .collect();
        let (mut x_lo, mut x_hi) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.0), b.max(p.0))
            });
        let (mut y_lo, mut y_hi) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.1), b.max(p.1))
            });
        if all.is_empty() {
            (x_lo, x_hi, y_lo, y_hi) = (0.0, 1.0, 1.0, 10.0);
        }
        x_lo = x_lo.min(0.0);
        if x_hi <= x_lo {
            x_hi = x_lo + 1.0;
        }
        if self.y_log {
            // Whole decades, so the axis reads 1, 10, 100 ...
            y_lo = 10f64.powf(y_lo.log10().floor());
            y_hi = 10f64.powf(y_hi.log10().ceil());
            if y_hi <= y_lo {
                y_hi = y_lo * 10.0;
            }
        } else {
            y_lo = y_lo.min(0.0);
            y_hi = if y_hi <= y_lo {
                y_lo + 1.0
            } else {
                y_hi * 1.05
            };
        }
        let y = Scale {
            lo: y_lo,
            hi: y_hi,
            log: self.y_log,
        };
        let pw = WIDTH - LEFT - RIGHT;
        let ph = HEIGHT - TOP - BOTTOM;
        let px = |v: f64| LEFT + (v - x_lo) / (x_hi - x_lo) * pw;
        let py = |v: f64| TOP + ph - y.frac(v) * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        // grid and ticks
        for t in linear_ticks(x_lo, x_hi, 10) {
            let x = px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                label(t)
            );
        }
        let y_ticks = if self.y_log {
            log_ticks(y_lo, y_hi)
        } else {
            linear_ticks(y_lo, y_hi, 8)
        };
        for t in y_ticks {
            let yy = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                yy + 4.0,
                label(t)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 14.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        // series
        for series in &self.series {
            let pts: Vec<(f64, f64)> = series
                .points
                .iter()
                .copied()
                .filter(drawable)
                .map(|(a, b)| (px(a), py(b)))
                .collect();
            match series.style {
                Style::Dots | Style::Markers => {
                    let (r, op) = if series.style == Style::Dots {
                        (1.6, 0.35)
                    } else {
                        (4.0, 0.9)
                    };
                    let _ = write!(s, r#"<g fill="{}" fill-opacity="{op}">"#, series.color);
                    for (a, b) in pts {
                        let _ = write!(s, r#"<circle cx="{a:.1}" cy="{b:.1}" r="{r}"/>"#);
                    }
                    let _ = writeln!(s, "</g>");
                }
                Style::Line | Style::Dashed => {
                    if pts.is_empty() {
                        continue;
                    }
                    let dash = if series.style == Style::Dashed {
                        r#" stroke-dasharray="6 4""#
                    } else {
                        ""
                    };
                    let path: Vec<String> =
                        pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
                    let _ = writeln!(
                        s,
                        r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
                        series.color,
                        path.join(" ")
                    );
                }
            }
        }
        // legend, right of the plot
        let mut ly = TOP + 12.0;
        for series in self.series.iter().filter(|s| s.in_legend) {
            let lx = LEFT + pw + 14.0;
            match series.style {
                Style::Dots | Style::Markers => {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/>"#,
                        lx + 10.0,
                        ly - 4.0,
                        series.color
                    );
                }
                Style::Line | Style::Dashed => {
                    let dash = if series.style == Style::Dashed {
                        r#" stroke-dasharray="6 4""#
                    } else {
                        ""
                    };
                    let _ = write!(
                        s,
                        r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
                        ly - 4.0,
                        lx + 20.0,
                        ly - 4.0,
                        series.color
                    );
                }
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
                lx + 28.0,
                escape(&series.name)
            );
            ly += 17.0;
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round_and_cover_the_range() {
        assert_eq!(
            linear_ticks(0.0, 1000.0, 10),
            (0..=10).map(|i| i as f64 * 100.0).collect::<Vec<_>>()
        );
        assert_eq!(linear_ticks(0.0, 7.0, 4), vec![0.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn log_ticks_mark_decades_and_their_halves_and_fifths() {
        assert_eq!(
            log_ticks(1.0, 100.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(
            log_ticks(1.0, 1e6),
            vec![1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]
        );
    }

    fn chart(y_log: bool, points: Vec<(f64, f64)>) -> Chart {
        Chart {
            title: "a <title> & more".into(),
            x_label: "running guests".into(),
            y_label: "ms".into(),
            y_log,
            series: vec![Series {
                name: "chaos".into(),
                color: PALETTE[0].into(),
                style: Style::Dots,
                points,
                in_legend: true,
            }],
        }
    }

    #[test]
    fn renders_points_legend_and_escaped_text() {
        let svg = chart(
            true,
            vec![(0.0, 1.5), (10.0, 150.0), (20.0, -1.0), (30.0, f64::NAN)],
        )
        .render();
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;title&gt; &amp; more"));
        // the two drawable points and the legend marker; the negative and NaN ones are dropped
        assert_eq!(svg.matches("<circle").count(), 3);
        // log axis from the decade below the least value to the decade above the largest
        assert!(svg.contains(">1</text>") && svg.contains(">1000</text>"));
    }

    #[test]
    fn an_empty_chart_still_renders() {
        let svg = chart(false, vec![]).render();
        assert!(svg.contains("</svg>"));
    }

    #[test]
    fn points_land_inside_the_plot_area() {
        let svg = chart(false, vec![(0.0, 0.0), (100.0, 50.0)]).render();
        for c in svg.split("<circle").skip(1) {
            let num = |key: &str| -> f64 {
                let at = c.find(key).expect("attribute") + key.len() + 2;
                c[at..]
                    .split('"')
                    .next()
                    .expect("value")
                    .parse()
                    .expect("number")
            };
            let (x, y) = (num("cx"), num("cy"));
            assert!((LEFT - 1.0..=WIDTH).contains(&x), "x {x}");
            assert!(
                (0.0..=TOP + (HEIGHT - TOP - BOTTOM) + 1.0).contains(&y),
                "y {y}"
            );
        }
    }
}
