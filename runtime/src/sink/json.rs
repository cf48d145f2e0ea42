//! JSON lines for other programs: one object per processed frame, flushed
//! as it is written, e.g.
//!
//! ```text
//! {"frame":1,"timestamp":1767225600.123,"source":"demo","origin":null,"width":1024,"height":512,
//!  "latency_ms":{"capture":9.1,"decode":0.0,"pre":1.2,"infer":110.3,"post":3.4,"render":4.0,"total":128.0},
//!  "coverage":{"road":0.41,"building":0.36}}
//! ```
//!
//! (one line in reality). Coverage lists the classes present in the frame.
//! Frames from an RTSP camera that sends RTCP sender reports also carry
//! `"camera_time"`, when the camera took the picture by its own clock.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{Output, Sink};
use crate::error::{Error, Result};

/// Writes one JSON object per frame to a writer (usually stdout).
pub struct JsonLinesSink<W: Write + Send> {
    out: W,
    source: String,
}

impl<W: Write + Send> JsonLinesSink<W> {
    /// JSON lines about frames from `source`, written to `out`.
    pub fn new(out: W, source: &str) -> JsonLinesSink<W> {
        JsonLinesSink {
            out,
            source: source.to_string(),
        }
    }
}

#[derive(Serialize)]
struct Latency {
    capture: f64,
    decode: f64,
    pre: f64,
    infer: f64,
    post: f64,
    render: f64,
    total: f64,
}

struct Coverage<'a>(&'a Output<'a>);

impl Serialize for Coverage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let out = self.0;
        let mut map = s.serialize_map(None)?;
        for c in out.classes {
            let f = out.coverage.get(c.id as usize).copied().unwrap_or(0.0);
            if f > 0.0 {
                map.serialize_entry(&c.name, &((f * 1e4).round() / 1e4))?;
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Line<'a> {
    frame: u64,
    timestamp: f64,
    source: &'a str,
    origin: Option<&'a str>,
    width: u32,
    height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    camera_time: Option<f64>,
    latency_ms: Latency,
    coverage: Coverage<'a>,
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl<W: Write + Send> Sink for JsonLinesSink<W> {
    fn name(&self) -> String {
        "JSON lines".into()
    }

    fn write(&mut self, out: &Output<'_>) -> Result<()> {
        let t = out.timings;
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let line = Line {
            frame: out.index,
            timestamp: unix_seconds(out.frame.timestamp),
            source: &self.source,
            origin: (!out.frame.origin.is_empty()).then_some(out.frame.origin.as_str()),
            width: out.frame.width,
            height: out.frame.height,
            camera_time: out.frame.camera_time.map(unix_seconds),
            latency_ms: Latency {
                capture: ms(t.capture),
                decode: ms(t.decode),
                pre: ms(t.pre),
                infer: ms(t.infer),
                post: ms(t.post),
                render: ms(t.render),
                total: ms(t.total()),
            },
            coverage: Coverage(out),
        };
        let fail = |reason: String| Error::Sink {
            sink: "JSON lines".into(),
            reason,
        };
        serde_json::to_writer(&mut self.out, &line).map_err(|e| fail(e.to_string()))?;
        self.out
            .write_all(b"\n")
            .and_then(|()| self.out.flush())
            .map_err(|e| fail(e.to_string()))
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::Sink {
            sink: "JSON lines".into(),
            reason: e.to_string(),
        })
    }
}
