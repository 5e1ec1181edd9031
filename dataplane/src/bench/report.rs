//! What a bench run measured, how it is summarised (median and min–max of
//! interleaved repetitions, ratios to sendfile from the same run), and how it
//! is shown: a terminal table, JSON (schema in the README) and an SVG chart.

use std::fmt::Write as _;

use serde::Serialize;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub schema: u32,
    /// Seconds since the Unix epoch when the run started.
    pub started_at: u64,
    pub kernel: String,
    pub cpus: usize,
    /// Where it ran: "lab" (two namespaces and a veth pair) or the interfaces given.
    pub network: String,
    pub mtu: u32,
    pub volume_bytes: u64,
    pub repetitions: usize,
    pub latency_samples: usize,
    pub cells: Vec<Cell>,
    pub ratios: Vec<Ratio>,
}

/// One mode × direction × batch size.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub mode: String,
    pub direction: String,
    pub batch_bytes: usize,
    /// What was actually obtained, e.g. "tcp sendfile" or
    /// "afxdp driver-mode copy-bind need_wakeup queue 0 frame 4096".
    pub obtained: String,
    pub runs: Vec<Run>,
    pub gbit_per_s: Stat,
    pub batches_per_s: Stat,
    pub cpu_seconds_per_gb: Stat,
    /// Single-batch request→completion latency at low load (fetch only).
    pub latency_us: Option<Latency>,
    /// Every transfer of this cell was verified (CRC and offsets of every batch).
    pub verified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub bytes: u64,
    pub batches: u64,
    pub seconds: f64,
    pub gbit_per_s: f64,
    pub batches_per_s: f64,
    /// Busy CPU-seconds of the whole machine during the transfer.
    pub cpu_seconds: f64,
    pub cpu_seconds_per_gb: f64,
    pub verified: bool,
    /// Path-specific figures: XDP statistics, retransmissions.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Stat {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Stat {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stat {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    pub samples: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// Percentiles in microseconds from a histogram of nanoseconds.
    pub fn from_nanos(h: &hdrhistogram::Histogram<u64>) -> Latency {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            samples: h.len(),
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }

    pub fn histogram() -> hdrhistogram::Histogram<u64> {
        // 1 ns .. 100 s at 3 significant digits.
        hdrhistogram::Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
    }
}

/// A mode against sendfile, same direction and batch size, same run.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub mode: String,
    pub direction: String,
    pub batch_bytes: usize,
    /// Median throughput / sendfile's median throughput.
    pub throughput: f64,
    pub batches_per_s: f64,
    /// CPU-seconds per GB / sendfile's (lower is better).
    pub cpu_per_gb: f64,
    /// p99 latency / sendfile's p99 (lower is better).
    pub p99_latency: Option<f64>,
}

impl Cell {
    pub fn summarise(&mut self) {
        self.gbit_per_s = Stat::of(self.runs.iter().map(|r| r.gbit_per_s));
        self.batches_per_s = Stat::of(self.runs.iter().map(|r| r.batches_per_s));
        self.cpu_seconds_per_gb = Stat::of(self.runs.iter().map(|r| r.cpu_seconds_per_gb));
        self.verified = !self.runs.is_empty() && self.runs.iter().all(|r| r.verified);
    }
}

pub fn ratios(cells: &[Cell]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for cell in cells.iter().filter(|c| c.mode != "sendfile") {
        let Some(base) = cells.iter().find(|b| {
            b.mode == "sendfile"
                && b.direction == cell.direction
                && b.batch_bytes == cell.batch_bytes
        }) else {
            continue;
        };
        let p99 = match (cell.latency_us, base.latency_us) {
            (Some(a), Some(b)) if b.p99 > 0.0 => Some(a.p99 / b.p99),
            _ => None,
        };
        out.push(Ratio {
            mode: cell.mode.clone(),
            direction: cell.direction.clone(),
            batch_bytes: cell.batch_bytes,
            throughput: cell.gbit_per_s.median / base.gbit_per_s.median,
            batches_per_s: cell.batches_per_s.median / base.batches_per_s.median,
            cpu_per_gb: cell.cpu_seconds_per_gb.median / base.cpu_seconds_per_gb.median,
            p99_latency: p99,
        });
    }
    out
}

pub fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// The facts of an "obtained" description that fit a table column:
/// "server XDP native, copy bind, 3520 B frames; client ...".
fn short_obtained(obtained: &str) -> String {
    if !obtained.contains("AF_XDP") {
        return obtained.to_owned();
    }
    let facts = |side: &str| {
        let mode = if side.contains("XDP native") {
            "native"
        } else if side.contains("XDP skb") {
            "skb"
        } else {
            "?"
        };
        let bind = if side.contains("zero-copy bind") {
            "zero-copy"
        } else {
            "copy"
        };
        let frame = side
            .split("frames sent up to ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap_or("?");
        format!("XDP {mode}, {bind} bind, {frame} B frames")
    };
    obtained
        .split("; client ")
        .map(facts)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The terminal table: one row per cell, ratios to sendfile beside it.
pub fn table(report: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:<9} {:>8}  {:>21}  {:>10}  {:>8}  {:>25}  {:>17}  obtained",
        "dir",
        "mode",
        "batch",
        "Gbit/s med [min-max]",
        "batches/s",
        "CPU-s/GB",
        "latency p50/p99/p999 us",
        "vs sendfile"
    );
    for cell in &report.cells {
        let ratio = report.ratios.iter().find(|r| {
            r.mode == cell.mode
                && r.direction == cell.direction
                && r.batch_bytes == cell.batch_bytes
        });
        let vs = match ratio {
            Some(r) => format!(
                "{:.2}x tput{}",
                r.throughput,
                r.p99_latency
                    .map(|p| format!(" {p:.2}x p99"))
                    .unwrap_or_default()
            ),
            None if cell.mode == "sendfile" => "baseline".into(),
            None => "-".into(),
        };
        let latency = cell
            .latency_us
            .map(|l| format!("{:.0}/{:.0}/{:.0}", l.p50, l.p99, l.p999))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<8} {:<9} {:>8}  {:>6.2} [{:>5.2}-{:>5.2}]  {:>10.0}  {:>8.2}  {:>25}  {:>17}  {}{}",
            cell.direction,
            cell.mode,
            human_bytes(cell.batch_bytes),
            cell.gbit_per_s.median,
            cell.gbit_per_s.min,
            cell.gbit_per_s.max,
            cell.batches_per_s.median,
            cell.cpu_seconds_per_gb.median,
            latency,
            vs,
            short_obtained(&cell.obtained),
            if cell.verified { "" } else { "  UNVERIFIED" }
        );
    }
    s
}

const COLORS: [(&str, &str); 3] = [
    ("copy", "#9e9e9e"),
    ("sendfile", "#1f77b4"),
    ("afxdp", "#d62728"),
];

fn color(mode: &str) -> &'static str {
    COLORS
        .iter()
        .find(|(m, _)| *m == mode)
        .map_or("#2ca02c", |(_, c)| c)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A chart panel: title, cells, (bar, whisker low, whisker high) of a cell, unit.
type Panel<'a> = (
    String,
    Vec<&'a Cell>,
    fn(&Cell) -> Option<(f64, f64, f64)>,
    &'static str,
);

/// Grouped bars: one panel per direction for throughput, one for p99
/// latency; bars per mode within each batch size, whiskers for min–max.
pub fn svg(report: &BenchReport) -> String {
    let mut panels: Vec<Panel<'_>> = Vec::new();
    let directions: Vec<String> = {
        let mut d: Vec<String> = report.cells.iter().map(|c| c.direction.clone()).collect();
        d.dedup();
        d.sort();
        d.dedup();
        d
    };
    for dir in &directions {
        let cells: Vec<&Cell> = report
            .cells
            .iter()
            .filter(|c| &c.direction == dir)
            .collect();
        panels.push((
            format!("{dir}: throughput (Gbit/s, median, whiskers min-max)"),
            cells,
            |c| Some((c.gbit_per_s.median, c.gbit_per_s.min, c.gbit_per_s.max)),
            "Gbit/s",
        ));
    }
    let latency_cells: Vec<&Cell> = report
        .cells
        .iter()
        .filter(|c| c.latency_us.is_some())
        .collect();
    if !latency_cells.is_empty() {
        panels.push((
            "single-batch fetch latency p99 (us; whisker to p999)".into(),
            latency_cells,
            |c| c.latency_us.map(|l| (l.p99, l.p50, l.p999)),
            "us",
        ));
    }
    let (w, ph) = (760.0, 260.0);
    let h = 60.0 + ph * panels.len() as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="20" y="22" font-size="15" font-weight="bold">dataplane bench</text><text x="172" y="22">{} — kernel {}, {} CPUs, MTU {}</text>"#,
        escape(&report.network),
        escape(&report.kernel),
        report.cpus,
        report.mtu
    );
    let mut lx = 20.0;
    for (mode, c) in COLORS {
        if report.cells.iter().any(|cell| cell.mode == mode) {
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="34" width="12" height="12" fill="{c}"/><text x="{}" y="45">{mode}</text>"#,
                lx + 16.0
            );
            lx += 90.0;
        }
    }
    for (i, (title, cells, value, unit)) in panels.iter().enumerate() {
        let top = 60.0 + ph * i as f64;
        let (left, bottom) = (70.0, top + ph - 40.0);
        let plot_h = ph - 70.0;
        let _ = writeln!(
            s,
            r#"<text x="{left}" y="{}" font-weight="bold">{}</text>"#,
            top + 14.0,
            escape(title)
        );
        let max = cells
            .iter()
            .filter_map(|c| value(c))
            .map(|(_, _, hi)| hi)
            .fold(0.0f64, f64::max);
        let max = if max > 0.0 && max.is_finite() {
            max * 1.1
        } else {
            1.0
        };
        for t in 0..=4 {
            let v = max * t as f64 / 4.0;
            let y = bottom - plot_h * t as f64 / 4.0;
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
                w - 20.0,
                left - 6.0,
                y + 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})">{unit}</text>"#,
            bottom - plot_h / 2.0,
            bottom - plot_h / 2.0
        );
        let mut sizes: Vec<usize> = cells.iter().map(|c| c.batch_bytes).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let group_w = (w - left - 30.0) / sizes.len().max(1) as f64;
        for (g, size) in sizes.iter().enumerate() {
            let in_group: Vec<&&Cell> = cells.iter().filter(|c| c.batch_bytes == *size).collect();
            let bar_w = (group_w * 0.8) / in_group.len().max(1) as f64;
            let gx = left + group_w * g as f64 + group_w * 0.1;
            for (b, cell) in in_group.iter().enumerate() {
                let Some((v, lo, hi)) = value(cell) else {
                    continue;
                };
                if !v.is_finite() {
                    continue;
                }
                let x = gx + bar_w * b as f64;
                let bh = plot_h * v / max;
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{} {} {}: {v:.2} {unit}</title></rect>"#,
                    bottom - bh,
                    bar_w * 0.9,
                    color(&cell.mode),
                    cell.mode,
                    cell.direction,
                    human_bytes(cell.batch_bytes)
                );
                let cx = x + bar_w * 0.45;
                let (ylo, yhi) = (bottom - plot_h * lo / max, bottom - plot_h * hi / max);
                let _ = writeln!(
                    s,
                    r#"<line x1="{cx:.1}" y1="{ylo:.1}" x2="{cx:.1}" y2="{yhi:.1}" stroke="black"/>"#
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{v:.1}</text>"#,
                    yhi - 3.0
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} batches</text>"#,
                gx + group_w * 0.4,
                bottom + 16.0,
                human_bytes(*size)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(mode: &str, batch: usize, gbps: &[f64], p99: f64) -> Cell {
        let mut c = Cell {
            mode: mode.into(),
            direction: "fetch".into(),
            batch_bytes: batch,
            obtained: format!("tcp {mode}"),
            runs: gbps
                .iter()
                .map(|&g| Run {
                    bytes: 1,
                    batches: 1,
                    seconds: 1.0,
                    gbit_per_s: g,
                    batches_per_s: g * 100.0,
                    cpu_seconds: 1.0,
                    cpu_seconds_per_gb: 10.0 / g,
                    verified: true,
                    details: serde_json::Value::Null,
                })
                .collect(),
            gbit_per_s: Stat::of([]),
            batches_per_s: Stat::of([]),
            cpu_seconds_per_gb: Stat::of([]),
            latency_us: Some(Latency {
                samples: 10,
                p50: p99 / 2.0,
                p99,
                p999: p99 * 2.0,
                max: p99 * 3.0,
            }),
            verified: false,
        };
        c.summarise();
        c
    }

    #[test]
    fn median_and_range() {
        assert_eq!(
            Stat::of([3.0, 1.0, 2.0]),
            Stat {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Stat::of([4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(Stat::of([]).median.is_nan());
    }

    #[test]
    fn ratios_are_against_sendfile_of_the_same_size() {
        let cells = vec![
            cell("sendfile", 1024, &[2.0, 4.0, 3.0], 100.0),
            cell("copy", 1024, &[1.5], 200.0),
            cell("sendfile", 4096, &[10.0], 50.0),
            cell("afxdp", 4096, &[5.0], 25.0),
        ];
        let r = ratios(&cells);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].mode.as_str(), r[0].throughput), ("copy", 0.5));
        assert_eq!(r[0].p99_latency, Some(2.0));
        assert_eq!(
            (r[1].mode.as_str(), r[1].throughput, r[1].p99_latency),
            ("afxdp", 0.5, Some(0.5))
        );
        assert!(cells.iter().all(|c| c.verified));
    }

    #[test]
    fn table_and_svg_show_every_cell() {
        let cells = vec![
            cell("sendfile", 1024, &[3.0], 100.0),
            cell("afxdp", 1024, &[6.0], 40.0),
        ];
        let report = BenchReport {
            schema: SCHEMA_VERSION,
            started_at: 0,
            kernel: "6.18".into(),
            cpus: 2,
            network: "lab".into(),
            mtu: 1500,
            volume_bytes: 1 << 20,
            repetitions: 1,
            latency_samples: 10,
            ratios: ratios(&cells),
            cells,
        };
        let t = table(&report);
        assert!(t.contains("2.00x tput 0.40x p99"), "{t}");
        assert!(t.contains("baseline"));
        let svg = svg(&report);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            2 /* legend */ + 2 /* throughput */ + 2 /* latency */
        );
    }
}
