//! The rule engine as a pipeline sink: every processed frame goes through the
//! rules, the pins follow, and each event is logged, shown in the viewer,
//! offered to the MQTT and webhook links (`crate::events`) and, with JSON
//! output on, written to stdout as its own JSON line
//! (`{"event":"triggered","rule":"door",...}`) between the frame lines.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dla_runtime::pipeline::Stats;
use dla_runtime::sink::{Output, Sink};
use embedded_hal::digital::{InputPin, OutputPin};

use crate::events::{now_rfc3339, EventBody, Message, Outlets, SnapshotFrame};
use crate::rules::{Event, EventKind, RuleEngine};

/// What events say about a rule.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    /// Its name.
    pub name: String,
    /// The class it watches.
    pub class: String,
    /// Its region, [x0, y0, x1, y1].
    pub region: [f32; 4],
}

/// Runs a [`RuleEngine`] on the pipeline's output thread.
pub struct RulesSink<O: OutputPin + Send, I: InputPin + Send> {
    engine: RuleEngine<O, I>,
    rules: Vec<RuleInfo>,
    started: Instant,
    stats: Arc<Stats>,
    json: bool,
    snapshot_dir: Option<PathBuf>,
    outlets: Option<(Arc<Outlets>, String)>,
    /// When the links last got a snapshot (at most one per [`SNAPSHOT_EVERY`]).
    last_snapshot: Option<Instant>,
}

/// Least time between two trigger snapshots for the links: a rule that
/// flaps should not send a picture per flap.
const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl<O: OutputPin + Send, I: InputPin + Send> RulesSink<O, I> {
    /// `rules[i]` describes rule `i` in events.
    pub fn new(
        engine: RuleEngine<O, I>,
        rules: Vec<RuleInfo>,
        stats: Arc<Stats>,
        json: bool,
        snapshot_dir: Option<PathBuf>,
    ) -> Self {
        RulesSink {
            engine,
            rules,
            started: Instant::now(),
            stats,
            json,
            snapshot_dir,
            outlets: None,
            last_snapshot: None,
        }
    }

    /// Also offers every event to `outlets`, naming the board `device`.
    pub fn with_outlets(mut self, outlets: Arc<Outlets>, device: String) -> Self {
        if !outlets.is_empty() {
            self.outlets = Some((outlets, device));
        }
        self
    }

    /// Hands the event (and, on a trigger, a snapshot if a link wants one)
    /// to the links; queues only, never waits for a network.
    fn offer(&mut self, e: &Event, out: &Output<'_>) {
        let Some((outlets, device)) = &self.outlets else {
            return;
        };
        let rule = e.rule.and_then(|i| self.rules.get(i));
        outlets.offer(&Message::Event(Arc::new(EventBody {
            event: e.kind.as_str(),
            device: device.clone(),
            rule: rule.map(|r| r.name.clone()),
            class: rule.map(|r| r.class.clone()),
            region: rule.map(|r| r.region),
            coverage: e.coverage,
            frame: e.frame,
            seconds: e.at.as_secs_f64(),
            time: now_rfc3339(),
            rule_index: e.rule,
        })));
        let due = self
            .last_snapshot
            .is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY);
        if e.kind == EventKind::Triggered && outlets.snapshots && due {
            // A copy only: the JPEG is encoded on the link's thread.
            outlets.offer(&Message::Snapshot(Arc::new(SnapshotFrame {
                rgb: out.overlay().to_vec(),
                width: out.frame.width,
                height: out.frame.height,
            })));
            self.last_snapshot = Some(Instant::now());
        }
    }

    fn report(&mut self, e: &Event, out: &Output<'_>) -> dla_runtime::Result<()> {
        let rule = e
            .rule
            .and_then(|i| self.rules.get(i))
            .map(|r| r.name.clone());
        let text = match (e.kind, &rule) {
            (EventKind::Triggered | EventKind::Released, Some(name)) => format!(
                "frame {}: rule {name:?} {} ({:.1} % covered)",
                e.frame,
                e.kind.as_str(),
                100.0 * e.coverage
            ),
            _ => format!("frame {}: {}", e.frame, e.kind.as_str()),
        };
        log::warn!("{text}");
        self.stats.record_event(text);
        self.offer(e, out);
        if e.kind == EventKind::Snapshot {
            if let Some(dir) = &self.snapshot_dir {
                self.save_snapshot(dir, out)?;
            }
        }
        if self.json {
            let line = serde_json::json!({
                "event": e.kind.as_str(),
                "rule": rule,
                "frame": e.frame,
                "seconds": e.at.as_secs_f64(),
                "coverage": e.coverage,
            });
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .map_err(|e| fail(format!("writing an event to stdout: {e}")))?;
        }
        Ok(())
    }

    fn save_snapshot(&self, dir: &std::path::Path, out: &Output<'_>) -> dla_runtime::Result<()> {
        let path = dir.join(format!("snapshot-{:06}.jpg", out.index));
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::File::create(&path))
            .map_err(|e| fail(format!("{}: {e}", path.display())))
            .and_then(|file| {
                encode_jpeg(out, std::io::BufWriter::new(file))
                    .map_err(|e| fail(format!("{}: {e}", path.display())))
            })?;
        log::warn!("snapshot saved to {}", path.display());
        Ok(())
    }
}

/// The overlay as a JPEG (quality 90) written to `w`.
fn encode_jpeg<W: Write>(out: &Output<'_>, mut w: W) -> Result<W, image::ImageError> {
    let f = &out.frame;
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 90).encode(
        out.overlay(),
        f.width,
        f.height,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(w)
}

fn fail(reason: String) -> dla_runtime::Error {
    dla_runtime::Error::Sink {
        sink: "rules".into(),
        reason,
    }
}

impl<O: OutputPin + Send, I: InputPin + Send> Sink for RulesSink<O, I> {
    fn name(&self) -> String {
        "rules".into()
    }

    fn write(&mut self, out: &Output<'_>) -> dla_runtime::Result<()> {
        let (w, h) = (out.frame.width as usize, out.frame.height as usize);
        self.engine
            .on_frame(out.index, out.labels, w, h, self.started.elapsed())
            .map_err(|e| fail(e.to_string()))?;
        while let Some(event) = self.engine.next_event() {
            self.report(&event, out)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> dla_runtime::Result<()> {
        if self.engine.events_lost() > 0 {
            log::warn!("{} rule events were dropped", self.engine.events_lost());
        }
        self.engine.shutdown().map_err(|e| fail(e.to_string()))
    }
}
