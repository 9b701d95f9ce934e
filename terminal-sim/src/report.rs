//! The load report as a person reads it: one self-contained HTML page — title, the run's
//! parameters, a summary table, the outcome by request kind and response code — with the plots
//! inline as SVG (plotters' SVG backend): throughput per second (sent, approved, declined,
//! errors, timeouts), latency p50 and p99 per second, and the latency percentile distribution.
//! The same SVGs are written beside the page for whoever wants them alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::load::Report;
use crate::{Error, Result};

/// Where the page and the plots go for the JSON report at `json`: the same name with `.html`,
/// and `-throughput.svg`, `-latency.svg`, `-distribution.svg`.
pub fn paths(json: &Path) -> (PathBuf, [PathBuf; 3]) {
    let stem = json.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "report".into());
    let dir = json.parent().map(Path::to_path_buf).unwrap_or_default();
    (
        dir.join(format!("{stem}.html")),
        [
            dir.join(format!("{stem}-throughput.svg")),
            dir.join(format!("{stem}-latency.svg")),
            dir.join(format!("{stem}-distribution.svg")),
        ],
    )
}

/// A plotted series: its name, colour, and the value it takes from each second.
type Series = (&'static str, RGBColor, fn(&crate::load::Second) -> u64);

const W: u32 = 960;
const H: u32 = 380;

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::invalid("plot", e.to_string())
}

/// One chart of per-second lines over the run.
struct Lines<'a> {
    caption: &'a str,
    y_desc: &'a str,
    ymax: f64,
    legend: SeriesLabelPosition,
    /// y = what the series takes from a second, divided by this (µs → ms: 1000).
    scale: f64,
    /// Only the seconds with an answer (a percentile of nothing is not a zero).
    answered_only: bool,
}

fn lines_svg(r: &Report, c: Lines<'_>, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let xmax = r.timeline.last().map(|s| s.t + 1).unwrap_or(1).max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(c.caption, ("sans-serif", 20))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, 0f64..c.ymax)
            .map_err(plot_err)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc("seconds since start (by intended send time)")
            .y_desc(c.y_desc)
            .light_line_style(RGBColor(235, 235, 235));
        let whole = |v: &f64| format!("{v:.0}");
        if c.scale == 1.0 {
            mesh.y_label_formatter(&whole);
        }
        mesh.draw().map_err(plot_err)?;
        for &(name, color, f) in series {
            // Each second's value is drawn over that second ([t, t+1)).
            let pts: Vec<(f64, f64)> = r
                .timeline
                .iter()
                .filter(|s| !c.answered_only || s.approved + s.declined > 0)
                .map(|s| (s.t as f64 + 0.5, f(s) as f64 / c.scale))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(c.legend)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Throughput per second of the run: sent, approved, declined, errors, timeouts.
pub fn throughput_svg(r: &Report) -> Result<String> {
    let ymax = r.timeline.iter().map(|s| s.sent.max(s.approved + s.declined)).max().unwrap_or(1).max(1)
        as f64
        * 1.15;
    let series: [Series; 5] = [
        ("sent", RGBColor(90, 90, 90), |s| s.sent),
        ("approved", RGBColor(30, 140, 60), |s| s.approved),
        ("declined", RGBColor(230, 140, 20), |s| s.declined),
        ("errors", RGBColor(200, 30, 30), |s| s.errors),
        ("timeouts", RGBColor(120, 40, 160), |s| s.timeouts),
    ];
    let c = Lines {
        caption: "Throughput per second",
        y_desc: "requests / s",
        ymax,
        legend: SeriesLabelPosition::LowerRight,
        scale: 1.0,
        answered_only: false,
    };
    lines_svg(r, c, &series)
}

/// Latency p50 and p99 per second (ms), from each request's intended send time.
pub fn latency_svg(r: &Report) -> Result<String> {
    let ymax = r.timeline.iter().map(|s| s.p99_us).max().unwrap_or(1).max(1) as f64 / 1000.0 * 1.15;
    let series: [Series; 2] =
        [("p50", RGBColor(30, 100, 200), |s| s.p50_us), ("p99", RGBColor(200, 30, 30), |s| s.p99_us)];
    let c = Lines {
        caption: "Latency per second (p50, p99)",
        y_desc: "latency (ms)",
        ymax,
        legend: SeriesLabelPosition::UpperRight,
        scale: 1000.0,
        answered_only: true,
    };
    lines_svg(r, c, &series)
}

/// The x position of percentile `p` on the distribution chart: the number of nines,
/// −log10(1 − p/100), so that the tail gets as much room as the body.
fn nines(p: f64) -> f64 {
    let q = (1.0 - p / 100.0).max(1e-6);
    -q.log10()
}

/// The latency percentile distribution (ms) over the whole run.
pub fn distribution_svg(r: &Report) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let ymax = r.percentiles.iter().map(|p| p.us).max().unwrap_or(1).max(1) as f64 / 1000.0 * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency by percentile (whole run)", ("sans-serif", 20))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..6.0, 0f64..ymax)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(7)
            .x_label_formatter(&|x| {
                let p = (1.0 - 10f64.powf(-x)) * 100.0;
                let s = format!("{p:.4}");
                format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
            })
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        let pts: Vec<(f64, f64)> = r
            .percentiles
            .iter()
            .filter(|p| p.percentile < 100.0)
            .map(|p| (nines(p.percentile), p.us as f64 / 1000.0))
            .collect();
        let color = RGBColor(30, 100, 200);
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2))).map_err(plot_err)?;
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// The page: `params` are the run's parameters as (name, value), shown as given.
pub fn html(r: &Report, title: &str, params: &[(&str, String)], svgs: &[String; 3]) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\n\
         body{{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1000px;color:#222}}\n\
         h1{{font-size:1.6em;margin-bottom:.2em}} h2{{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}}\n\
         table{{border-collapse:collapse;margin:.5em 0}} td,th{{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}}\n\
         td.n{{text-align:right;font-variant-numeric:tabular-nums}} .ok{{color:#1e8c3c}} .bad{{color:#c81e1e}}\n\
         .cards{{display:flex;gap:1em;flex-wrap:wrap}} .card{{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}}\n\
         .card b{{display:block;font-size:1.4em}} figure{{margin:1em 0}} svg{{max-width:100%;height:auto}}\n\
         </style></head><body>\n<h1>{t}</h1>\n",
        t = esc(title)
    );
    let accounted = r.approved + r.declined + r.errors + r.timeouts == r.sent;
    let _ = writeln!(
        h,
        "<div class=\"cards\">\
         <div class=\"card\">achieved<b>{:.0}/s</b>of {} offered</div>\
         <div class=\"card\">p50<b>{}</b>p99 {}</div>\
         <div class=\"card\">answered<b>{}</b>of {} sent</div>\
         <div class=\"card\">errors + timeouts<b class=\"{}\">{}</b>unmatched {}</div></div>",
        r.achieved_tps,
        r.offered_tps,
        ms(r.latency_us.p50),
        ms(r.latency_us.p99),
        r.approved + r.declined,
        r.sent,
        if r.errors + r.timeouts == 0 { "ok" } else { "bad" },
        r.errors + r.timeouts,
        r.unmatched
    );
    h.push_str("<h2>Run</h2>\n<table>\n");
    for (k, v) in params {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    h.push_str("</table>\n<h2>Summary</h2>\n<table>\n");
    let rows: [(&str, String); 14] = [
        ("sent", r.sent.to_string()),
        ("approved", r.approved.to_string()),
        ("declined", r.declined.to_string()),
        ("errors", r.errors.to_string()),
        ("timeouts", r.timeouts.to_string()),
        ("unmatched", r.unmatched.to_string()),
        ("duration (send phase)", format!("{:.1} s", r.duration_s)),
        ("offered rate", format!("{} /s", r.offered_tps)),
        ("achieved rate", format!("{:.1} /s", r.achieved_tps)),
        ("latency p50 / p90", format!("{} / {}", ms(r.latency_us.p50), ms(r.latency_us.p90))),
        ("latency p99 / p99.9", format!("{} / {}", ms(r.latency_us.p99), ms(r.latency_us.p999))),
        ("latency max", ms(r.latency_us.max)),
        (
            "send lag p50 / p99 / max (the generator's, included above)",
            format!("{} / {} / {}", ms(r.send_lag_us.p50), ms(r.send_lag_us.p99), ms(r.send_lag_us.max)),
        ),
        (
            "accounting",
            if accounted {
                "approved + declined + errors + timeouts = sent".to_string()
            } else {
                "MISMATCH: outcomes do not add up to sent".to_string()
            },
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{k}</th><td class=\"n\">{}</td></tr>", esc(&v));
    }
    if let Some(us) = r.generator_cpu_us_per_request {
        let _ = writeln!(h, "<tr><th>generator CPU per request</th><td class=\"n\">{us:.2} µs</td></tr>");
    }
    h.push_str("</table>\n");
    if !r.by_kind.is_empty() {
        h.push_str(
            "<h2>By request kind</h2>\n<table><tr><th>kind</th><th>sent</th><th>approved</th><th>declined</th>\
             <th>errors</th><th>timeouts</th><th>response codes</th></tr>\n",
        );
        for (k, t) in &r.by_kind {
            let codes: Vec<String> = t.response_codes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(k),
                t.sent,
                t.approved,
                t.declined,
                t.errors,
                t.timeouts,
                esc(&codes.join(", "))
            );
        }
        h.push_str("</table>\n");
    }
    for (caption, svg) in [
        ("Throughput: requests by the second they were meant to be sent, and how they ended.", &svgs[0]),
        ("Latency from the intended send time (open loop: a stall shows here, not hidden).", &svgs[1]),
        (
            "The whole run's latency distribution; the x axis stretches the tail (each tick one more nine).",
            &svgs[2],
        ),
    ] {
        let _ = write!(
            h,
            "<figure>\n{}\n<figcaption>{}</figcaption></figure>\n",
            strip_xml_decl(svg),
            esc(caption)
        );
    }
    h.push_str("<h2>Latency percentiles</h2>\n<table><tr><th>percentile</th><th>latency</th></tr>\n");
    for p in &r.percentiles {
        let _ =
            writeln!(h, "<tr><td class=\"n\">{}%</td><td class=\"n\">{}</td></tr>", p.percentile, ms(p.us));
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

fn strip_xml_decl(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

/// Writes the page and the three SVGs beside the JSON report `json`; returns the page's path.
pub fn write(r: &Report, json: &Path, title: &str, params: &[(&str, String)]) -> Result<PathBuf> {
    let (page, svg_paths) = paths(json);
    let svgs = [throughput_svg(r)?, latency_svg(r)?, distribution_svg(r)?];
    for (p, s) in svg_paths.iter().zip(svgs.iter()) {
        std::fs::write(p, s).map_err(|source| Error::Write { path: p.clone(), source })?;
    }
    std::fs::write(&page, html(r, title, params, &svgs))
        .map_err(|source| Error::Write { path: page.clone(), source })?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Latency, PercentilePoint, Second};

    #[test]
    fn page_has_the_three_plots_and_the_summary() {
        let r = Report {
            sent: 10,
            approved: 7,
            declined: 3,
            offered_tps: 5,
            achieved_tps: 5.0,
            duration_s: 2.0,
            timeline: vec![
                Second {
                    t: 0,
                    sent: 5,
                    approved: 4,
                    declined: 1,
                    p50_us: 800,
                    p99_us: 2000,
                    ..Second::default()
                },
                Second {
                    t: 1,
                    sent: 5,
                    approved: 3,
                    declined: 2,
                    p50_us: 900,
                    p99_us: 2500,
                    ..Second::default()
                },
            ],
            percentiles: vec![
                PercentilePoint { percentile: 50.0, us: 850 },
                PercentilePoint { percentile: 99.0, us: 2400 },
            ],
            generator_cpu_us_per_request: Some(4.25),
            send_lag_us: Latency { p50: 450, p99: 980, max: 1_500, ..Latency::default() },
            ..Report::default()
        };
        let svgs = [throughput_svg(&r).unwrap(), latency_svg(&r).unwrap(), distribution_svg(&r).unwrap()];
        for s in &svgs {
            assert!(s.contains("<svg") && s.contains("<polyline"), "{s}");
        }
        let page = html(&r, "Load <test>", &[("rate", "5 /s".into())], &svgs);
        assert!(page.contains("Load &lt;test&gt;"));
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("Throughput per second") && page.contains("approved + declined"));
        assert!(page.contains("<tr><th>generator CPU per request</th><td class=\"n\">4.25 µs</td></tr>"));
        assert!(
            page.contains("included above)</th><td class=\"n\">0.45 ms / 0.98 ms / 1.50 ms</td>"),
            "{page}"
        );
        let unmeasured = Report { generator_cpu_us_per_request: None, ..r.clone() };
        assert!(!html(&unmeasured, "Load", &[], &svgs).contains("generator CPU"));
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
    }
}
