//! Live numbers of a running pipeline: per-stage latency histograms
//! (hdrhistogram, exact percentiles), frame counters, FPS and the class
//! coverage of the latest frame. Stages record under one short lock per
//! frame; readers (web viewer, status line, `/metrics`) take a
//! [`StatsSnapshot`], so they never hold the pipeline up.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::links::{Link, LinkSnapshot};
use crate::timings::{FrameTimings, STAGES};

const MIB: f64 = 1024.0 * 1024.0;

/// Completion times kept for the FPS estimate.
const FPS_WINDOW: usize = 32;

struct Inner {
    hist: Vec<Histogram<u64>>,
    sums_us: [u64; 6],
    captured: u64,
    processed: u64,
    dropped: u64,
    corrupt: u64,
    recent: [Option<Instant>; FPS_WINDOW],
    recent_pos: usize,
    /// First and latest completed frame, for the whole-run rate.
    first_output: Option<Instant>,
    last_output: Option<Instant>,
    coverage: Vec<f32>,
    size: (u32, u32),
    events: std::collections::VecDeque<String>,
    events_total: u64,
    links: Vec<std::sync::Arc<Link>>,
}

/// Recent events kept for the viewer.
const RECENT_EVENTS: usize = 20;

/// Shared counters and histograms of one pipeline.
pub struct Stats {
    source: String,
    model: String,
    engine: String,
    classes: Vec<String>,
    started: Instant,
    inner: Mutex<Inner>,
}

/// One stage's latency summary, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageStats {
    /// Stage name (see [`STAGES`]).
    pub stage: &'static str,
    /// Frames measured.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Total time in this stage, seconds.
    pub sum_s: f64,
}

/// Fraction of the latest frame covered by one class.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassCoverage {
    /// Class name.
    pub class: String,
    /// Fraction of pixels, 0..=1.
    pub fraction: f32,
}

/// A copy of the pipeline's numbers at one moment (what `/stats.json` shows).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsSnapshot {
    /// The source as the user named it.
    pub source: String,
    /// The model's name (empty when not given, see [`Stats::with_engine`]).
    pub model: String,
    /// The engine and where it placed the network, e.g. `ort-cuda (147 nodes on CUDA)`.
    pub engine: String,
    /// Seconds since the pipeline started.
    pub uptime_s: f64,
    /// Frames delivered by the source.
    pub frames_captured: u64,
    /// Frames segmented and delivered to the outputs.
    pub frames_processed: u64,
    /// Stale frames dropped because inference was busy (live sources only).
    pub frames_dropped: u64,
    /// Corrupt frames skipped.
    pub frames_corrupt: u64,
    /// Processed frames per second over the last few seconds.
    pub fps: f64,
    /// Processed frames per second over the whole run (first to latest frame).
    pub average_fps: f64,
    /// Size of the latest frame.
    pub width: u32,
    /// Size of the latest frame.
    pub height: u32,
    /// Per-stage latency.
    pub stages: Vec<StageStats>,
    /// Class coverage of the latest frame, every class of the model.
    pub coverage: Vec<ClassCoverage>,
    /// The most recent events, oldest first ([`Stats::record_event`]).
    pub events: Vec<String>,
    /// Events so far.
    pub events_total: u64,
    /// Resident memory of this process in bytes, where the OS tells it
    /// (Linux `/proc/self/statm`); flat over time when nothing leaks.
    pub rss_bytes: Option<u64>,
    /// Connections out (MQTT broker, webhooks), see [`Stats::add_link`].
    pub links: Vec<LinkSnapshot>,
}

/// Resident set size of this process, from `/proc/self/statm` (Linux).
/// Reads into a stack buffer: the status line calls it a few times a second.
pub fn resident_bytes() -> Option<u64> {
    use std::io::Read as _;
    let mut buf = [0u8; 128];
    let mut file = std::fs::File::open("/proc/self/statm").ok()?;
    let n = file.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it returns -1 for unknown names.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| pages * p)
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl Stats {
    /// Empty stats for a pipeline reading `source` with a model of `classes`.
    pub fn new(source: &str, classes: Vec<String>) -> Stats {
        let hist = STAGES
            .iter()
            .map(|_| {
                // 1 us .. 10 min, 3 significant digits: a fixed 100 KiB or so.
                Histogram::new_with_bounds(1, 600_000_000, 3)
                    .expect("constant, valid histogram bounds")
            })
            .collect();
        Stats {
            source: source.to_string(),
            model: String::new(),
            engine: String::new(),
            started: Instant::now(),
            inner: Mutex::new(Inner {
                hist,
                sums_us: [0; 6],
                captured: 0,
                processed: 0,
                dropped: 0,
                corrupt: 0,
                recent: [None; FPS_WINDOW],
                recent_pos: 0,
                first_output: None,
                last_output: None,
                coverage: vec![0.0; classes.len()],
                size: (0, 0),
                events: std::collections::VecDeque::with_capacity(RECENT_EVENTS),
                events_total: 0,
                links: Vec::new(),
            }),
            classes,
        }
    }

    /// Names the model and the engine running it (e.g. `ort-cuda (147 nodes
    /// on CUDA)`), for the viewer's header, `/stats.json` and `/metrics`.
    pub fn with_engine(mut self, model: &str, engine: &str) -> Stats {
        self.model = model.to_string();
        self.engine = engine.to_string();
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(inner: &mut Inner, stage: usize, d: Duration) {
        let v = us(d).max(1);
        inner.hist[stage].saturating_record(v);
        inner.sums_us[stage] = inner.sums_us[stage].saturating_add(us(d));
    }

    /// A frame came from the source (its capture and decode times).
    pub fn record_capture(&self, capture: Duration, decode: Duration) {
        let mut s = self.lock();
        s.captured += 1;
        Self::record(&mut s, 0, capture);
        Self::record(&mut s, 1, decode);
    }

    /// A stale frame was dropped.
    pub fn record_dropped(&self) {
        self.lock().dropped += 1;
    }

    /// A corrupt frame was skipped.
    pub fn record_corrupt(&self) {
        self.lock().corrupt += 1;
    }

    /// A frame went through inference and the outputs.
    pub fn record_output(&self, t: &FrameTimings, coverage: &[f32], size: (u32, u32)) {
        let mut s = self.lock();
        s.processed += 1;
        for (i, d) in t.as_array().into_iter().enumerate().skip(2) {
            Self::record(&mut s, i, d);
        }
        let pos = s.recent_pos;
        s.recent[pos] = Some(Instant::now());
        s.recent_pos = (pos + 1) % FPS_WINDOW;
        let now = Instant::now();
        s.first_output.get_or_insert(now);
        s.last_output = Some(now);
        let n = s.coverage.len().min(coverage.len());
        s.coverage[..n].copy_from_slice(&coverage[..n]);
        s.size = size;
    }

    /// Something happened that a user watching should see (a rule fired, a
    /// button was pressed): kept among the last few for the viewer, counted.
    pub fn record_event(&self, text: String) {
        let mut s = self.lock();
        if s.events.len() == RECENT_EVENTS {
            s.events.pop_front();
        }
        s.events.push_back(text);
        s.events_total += 1;
    }

    /// Frames processed so far.
    pub fn processed(&self) -> u64 {
        self.lock().processed
    }

    /// A copy of all numbers.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = self.lock();
        let now = Instant::now();
        let recent: Vec<Instant> = s
            .recent
            .iter()
            .flatten()
            .copied()
            .filter(|t| now.duration_since(*t) < Duration::from_secs(5))
            .collect();
        let fps = match (recent.iter().min(), recent.iter().max()) {
            (Some(a), Some(b)) if recent.len() >= 2 && b > a => {
                (recent.len() - 1) as f64 / (*b - *a).as_secs_f64()
            }
            _ => 0.0,
        };
        let ms = |v: u64| v as f64 / 1000.0;
        let stages = STAGES
            .iter()
            .zip(&s.hist)
            .zip(s.sums_us)
            .map(|((&stage, h), sum)| StageStats {
                stage,
                count: h.len(),
                mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
                p50_ms: ms(h.value_at_quantile(0.5)),
                p90_ms: ms(h.value_at_quantile(0.9)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
                sum_s: sum as f64 / 1e6,
            })
            .collect();
        StatsSnapshot {
            source: self.source.clone(),
            model: self.model.clone(),
            engine: self.engine.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            frames_captured: s.captured,
            frames_processed: s.processed,
            frames_dropped: s.dropped,
            frames_corrupt: s.corrupt,
            fps,
            average_fps: match (s.first_output, s.last_output) {
                (Some(a), Some(b)) if s.processed >= 2 && b > a => {
                    (s.processed - 1) as f64 / (b - a).as_secs_f64()
                }
                _ => 0.0,
            },
            width: s.size.0,
            height: s.size.1,
            stages,
            coverage: self
                .classes
                .iter()
                .zip(&s.coverage)
                .map(|(c, &f)| ClassCoverage {
                    class: c.clone(),
                    fraction: f,
                })
                .collect(),
            events: s.events.iter().cloned().collect(),
            events_total: s.events_total,
            rss_bytes: resident_bytes(),
            links: s.links.iter().map(|l| l.snapshot()).collect(),
        }
    }

    /// Shows `link`'s state and counters with these stats from now on.
    pub fn add_link(&self, link: std::sync::Arc<Link>) {
        self.lock().links.push(link);
    }
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl StatsSnapshot {
    /// The stage summary named `stage`.
    pub fn stage(&self, stage: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    /// The numbers in the Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut o = String::with_capacity(4096);
        let family = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
        };
        for (name, help, v) in [
            (
                "dla_frames_captured_total",
                "Frames delivered by the source.",
                self.frames_captured,
            ),
            (
                "dla_frames_processed_total",
                "Frames segmented and delivered to the outputs.",
                self.frames_processed,
            ),
            (
                "dla_frames_dropped_total",
                "Stale frames dropped while inference was busy (live sources).",
                self.frames_dropped,
            ),
            (
                "dla_frames_corrupt_total",
                "Corrupt frames skipped.",
                self.frames_corrupt,
            ),
            (
                "dla_events_total",
                "Rule and button events.",
                self.events_total,
            ),
        ] {
            family(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {v}");
        }
        if !self.engine.is_empty() {
            family(
                &mut o,
                "dla_info",
                "gauge",
                "The running model and engine (always 1).",
            );
            let _ = writeln!(
                o,
                "dla_info{{model=\"{}\",engine=\"{}\"}} 1",
                label(&self.model),
                label(&self.engine)
            );
        }
        family(
            &mut o,
            "dla_fps",
            "gauge",
            "Processed frames per second over the last few seconds.",
        );
        let _ = writeln!(o, "dla_fps {:.3}", self.fps);
        family(
            &mut o,
            "dla_uptime_seconds",
            "gauge",
            "Seconds since the pipeline started.",
        );
        let _ = writeln!(o, "dla_uptime_seconds {:.3}", self.uptime_s);
        family(
            &mut o,
            "dla_stage_latency_seconds",
            "summary",
            "Per-stage latency of each frame.",
        );
        for s in &self.stages {
            for (q, v) in [("0.5", s.p50_ms), ("0.9", s.p90_ms), ("0.99", s.p99_ms)] {
                let _ = writeln!(
                    o,
                    "dla_stage_latency_seconds{{stage=\"{}\",quantile=\"{q}\"}} {}",
                    s.stage,
                    v / 1000.0
                );
            }
            let _ = writeln!(
                o,
                "dla_stage_latency_seconds_sum{{stage=\"{}\"}} {}",
                s.stage, s.sum_s
            );
            let _ = writeln!(
                o,
                "dla_stage_latency_seconds_count{{stage=\"{}\"}} {}",
                s.stage, s.count
            );
        }
        family(
            &mut o,
            "dla_class_coverage_ratio",
            "gauge",
            "Fraction of the latest frame labelled with each class.",
        );
        for c in &self.coverage {
            let _ = writeln!(
                o,
                "dla_class_coverage_ratio{{class=\"{}\"}} {}",
                label(&c.class),
                c.fraction
            );
        }
        if let Some(rss) = self.rss_bytes {
            // The name Prometheus' own process collectors use.
            family(
                &mut o,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
            );
            let _ = writeln!(o, "process_resident_memory_bytes {rss}");
        }
        super::links::write_prometheus(&mut o, &self.links, label);
        o
    }

    /// One line for a terminal: FPS, inference latency, counters.
    pub fn status_line(&self) -> String {
        let infer = self.stage("infer");
        let (p50, p99) = infer.map_or((0.0, 0.0), |s| (s.p50_ms, s.p99_ms));
        let total: f64 = self.stages.iter().map(|s| s.p50_ms).sum();
        let mut line = format!(
            "{}  {:.1} fps  infer {:.0} ms (p99 {:.0})  frame {:.0} ms  processed {}  dropped {}  corrupt {}",
            self.source,
            self.fps,
            p50,
            p99,
            total,
            self.frames_processed,
            self.frames_dropped,
            self.frames_corrupt
        );
        if let Some(rss) = self.rss_bytes {
            let _ = write!(line, "  RSS {:.0} MiB", rss as f64 / MIB);
        }
        line
    }

    /// Frames per second that inference alone would allow (1 / mean infer
    /// time over the run), to compare with [`StatsSnapshot::average_fps`]
    /// (the same span; `fps` is only the last few seconds): when the two are close,
    /// the network is the bottleneck and the rest of the pipeline keeps up.
    pub fn inference_fps(&self) -> Option<f64> {
        let infer = self.stage("infer")?;
        (infer.count > 0 && infer.mean_ms > 0.0).then(|| 1000.0 / infer.mean_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn histograms_give_exact_percentiles_and_counters_add_up() {
        let stats = Stats::new("demo", vec!["road".into(), "sky \"blue\"".into()]);
        for i in 1..=100u64 {
            stats.record_capture(ms(1), ms(2));
            let t = FrameTimings {
                infer: ms(i),
                ..Default::default()
            };
            stats.record_output(&t, &[0.25, 0.75], (64, 32));
        }
        stats.record_dropped();
        stats.record_corrupt();
        stats.record_corrupt();
        let s = stats.snapshot();
        assert_eq!(
            (
                s.frames_captured,
                s.frames_processed,
                s.frames_dropped,
                s.frames_corrupt
            ),
            (100, 100, 1, 2)
        );
        let infer = s.stage("infer").unwrap();
        assert_eq!(infer.count, 100);
        assert!((infer.p50_ms - 50.0).abs() < 0.1, "{infer:?}");
        assert!((infer.p99_ms - 99.0).abs() < 0.1, "{infer:?}");
        assert!((infer.sum_s - 5.05).abs() < 1e-6);
        assert!(s.fps > 0.0 && s.average_fps > 0.0);
        assert_eq!((s.width, s.height), (64, 32));
        assert_eq!(s.coverage[1].fraction, 0.75);
        assert!(s.status_line().contains("processed 100"));
        // Mean infer 50.5 ms: inference alone would allow 19.8 fps.
        assert!((s.inference_fps().unwrap() - 1000.0 / 50.5).abs() < 0.01);
    }

    #[test]
    fn resident_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = resident_bytes().unwrap();
            // A test binary: more than 1 MiB, less than the whole machine.
            assert!((1 << 20..1 << 40).contains(&rss), "{rss}");
            assert!(Stats::new("x", vec![]).snapshot().rss_bytes.is_some());
        }
    }

    /// Every sample line is `name{labels} value` with a float value, and every
    /// metric name was declared by a TYPE line before it.
    #[test]
    fn prometheus_text_is_well_formed() {
        let stats = Stats::new("demo", vec!["road".into(), "sky \"blue\"".into()])
            .with_engine("dla-tiny-seg", "ort-cuda (147 nodes on CUDA)");
        stats.record_output(&FrameTimings::default(), &[1.0, 0.0], (4, 4));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.model, "dla-tiny-seg");
        let text = snapshot.to_prometheus();
        assert!(text.contains(
            "dla_info{model=\"dla-tiny-seg\",engine=\"ort-cuda (147 nodes on CUDA)\"} 1"
        ));
        let mut declared = Vec::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                declared.push(parts.next().unwrap().to_string());
                assert!(matches!(
                    parts.next(),
                    Some("counter" | "gauge" | "summary")
                ));
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
            let name = series.split('{').next().unwrap();
            let family = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| declared.iter().any(|d| d == f))
                .unwrap_or(name);
            assert!(declared.iter().any(|d| d == family), "undeclared {line}");
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                }
            }
            samples += 1;
        }
        assert!(text.contains("dla_frames_processed_total 1\n"));
        assert!(text.contains("dla_stage_latency_seconds_count{stage=\"infer\"} 1\n"));
        assert!(text.contains("class=\"sky \\\"blue\\\"\""));
        let rss = usize::from(cfg!(target_os = "linux"));
        // 5 counters, dla_info, fps and uptime, 6 stages x 5, 2 classes.
        assert_eq!(samples, 5 + 1 + 2 + 6 * 5 + 2 + rss);
        if cfg!(target_os = "linux") {
            assert!(text.contains("\nprocess_resident_memory_bytes "));
        }
    }
}
