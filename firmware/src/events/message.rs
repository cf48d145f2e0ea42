//! What goes out: one JSON body per event, the same on MQTT and webhooks.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

/// One message for the links; cheap to clone (the bodies are shared).
#[derive(Debug, Clone)]
pub enum Message {
    /// A rule or button event.
    Event(Arc<EventBody>),
    /// Per-class coverage of the whole frame.
    Coverage(Arc<CoverageBody>),
    /// The overlay when a rule triggered; links encode it on their own thread.
    Snapshot(Arc<SnapshotFrame>),
}

/// The overlay of the frame on which a rule triggered, RGB8.
#[derive(Debug)]
pub struct SnapshotFrame {
    /// Pixels, row by row.
    pub rgb: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Message {
    /// The kind as named in `[[webhooks]] events`: the event's name, or
    /// `coverage` / `snapshot`.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Event(e) => e.event,
            Message::Coverage(_) => "coverage",
            Message::Snapshot(_) => "snapshot-image",
        }
    }
}

/// A rule event (`triggered`, `released`) or a button event (`armed`,
/// `disarmed`, `snapshot`), as JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventBody {
    /// `triggered`, `released`, `armed`, `disarmed` or `snapshot`.
    pub event: &'static str,
    /// The device name (`[mqtt] device`, default the host name).
    pub device: String,
    /// The rule's name, for rule events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The class the rule watches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The rule's region, [x0, y0, x1, y1] in fractions of the frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<[f32; 4]>,
    /// Fraction of the region covered by the class on that frame, 0..1.
    pub coverage: f32,
    /// Frame number (1-based, processed frames).
    pub frame: u64,
    /// Seconds since the pipeline started.
    pub seconds: f64,
    /// Wall-clock time of the event, RFC 3339 UTC.
    pub time: String,
    /// Index of the rule in the configuration (for per-rule state topics).
    #[serde(skip)]
    pub rule_index: Option<usize>,
}

/// Per-class coverage of one whole frame, as JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CoverageBody {
    /// The device name.
    pub device: String,
    /// Frame number.
    pub frame: u64,
    /// Wall-clock time, RFC 3339 UTC.
    pub time: String,
    /// Percent of the frame per class name, every class of the model.
    pub classes: BTreeMap<String, f32>,
}

/// Now, as RFC 3339 UTC with milliseconds (`2026-12-06T11:39:11.123Z`).
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Millisecond)
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_flat_json_without_its_index() {
        let body = EventBody {
            event: "triggered",
            device: "driveway".into(),
            rule: Some("car on the drive".into()),
            class: Some("car".into()),
            region: Some([0.0, 0.5, 1.0, 1.0]),
            coverage: 0.25,
            frame: 12,
            seconds: 1.5,
            time: "2026-12-06T11:39:11.123Z".into(),
            rule_index: Some(0),
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["rule"], "car on the drive");
        assert_eq!(v["region"][1], 0.5);
        assert!(v.get("rule_index").is_none());
        assert!(now_rfc3339().ends_with('Z'));
    }
}
