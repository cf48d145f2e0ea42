//! The rule engine as a pipeline sink: every processed frame goes through the
//! rules, the pins follow, and each event is logged, shown in the viewer and,
//! with JSON output on, written to stdout as its own JSON line
//! (`{"event":"triggered","rule":"door",...}`) between the frame lines.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dla_runtime::pipeline::Stats;
use dla_runtime::sink::{Output, Sink};
use embedded_hal::digital::{InputPin, OutputPin};

use crate::rules::{Event, EventKind, RuleEngine};

/// Runs a [`RuleEngine`] on the pipeline's output thread.
pub struct RulesSink<O: OutputPin + Send, I: InputPin + Send> {
    engine: RuleEngine<O, I>,
    names: Vec<String>,
    started: Instant,
    stats: Arc<Stats>,
    json: bool,
    snapshot_dir: Option<PathBuf>,
}

impl<O: OutputPin + Send, I: InputPin + Send> RulesSink<O, I> {
    /// `names[i]` names rule `i` in events.
    pub fn new(
        engine: RuleEngine<O, I>,
        names: Vec<String>,
        stats: Arc<Stats>,
        json: bool,
        snapshot_dir: Option<PathBuf>,
    ) -> Self {
        RulesSink {
            engine,
            names,
            started: Instant::now(),
            stats,
            json,
            snapshot_dir,
        }
    }

    fn report(&self, e: &Event, out: &Output<'_>) -> dla_runtime::Result<()> {
        let rule = e.rule.and_then(|i| self.names.get(i)).map(String::as_str);
        let text = match (e.kind, rule) {
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
        let f = &out.frame;
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::File::create(&path))
            .map_err(|e| fail(format!("{}: {e}", path.display())))
            .and_then(|file| {
                image::codecs::jpeg::JpegEncoder::new_with_quality(
                    std::io::BufWriter::new(file),
                    90,
                )
                .encode(
                    out.overlay,
                    f.width,
                    f.height,
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(|e| fail(format!("{}: {e}", path.display())))
            })?;
        log::warn!("snapshot saved to {}", path.display());
        Ok(())
    }
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
