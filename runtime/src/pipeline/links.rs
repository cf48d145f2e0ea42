//! Connections to systems outside the pipeline (an MQTT broker, webhooks):
//! each keeps its state and counters here, so the viewer, `/stats.json` and
//! `/metrics` show whether events are getting out, without the pipeline
//! knowing anything about MQTT or HTTP.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// One outgoing connection's live state, shared between its worker thread
/// (which updates it) and the stats (which read it). Updates take no lock
/// except [`Link::set_state`], which only runs when the state changes.
#[derive(Debug)]
pub struct Link {
    name: String,
    /// A frame source (an RTSP camera), not an outlet: also counted in
    /// `dla_source_reconnects_total`.
    is_source: bool,
    up: AtomicBool,
    state: Mutex<String>,
    sent: AtomicU64,
    queued: AtomicU64,
    dropped: AtomicU64,
    failures: AtomicU64,
    reconnects: AtomicU64,
}

/// A copy of one [`Link`] (what `/stats.json` shows under `links`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkSnapshot {
    /// E.g. `mqtt 192.168.1.10:1883` or `webhook example.com`.
    pub name: String,
    /// Connected (MQTT) or last delivery succeeded (webhook).
    pub up: bool,
    /// Human-readable state, e.g. `connected` or `broker unreachable: ...`.
    pub state: String,
    /// Messages delivered.
    pub sent: u64,
    /// Messages waiting to be sent.
    pub queued: u64,
    /// Messages dropped because the queue was full or retries ran out.
    pub dropped: u64,
    /// Failed connection or delivery attempts.
    pub failures: u64,
    /// Connections re-established after one was lost.
    pub reconnects: u64,
    /// A frame source rather than an outlet.
    pub source: bool,
}

impl Link {
    /// A link that has not connected yet.
    pub fn new(name: impl Into<String>) -> Link {
        Link {
            name: name.into(),
            is_source: false,
            up: AtomicBool::new(false),
            state: Mutex::new("starting".into()),
            sent: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    /// A frame source's connection (an RTSP camera).
    pub fn source(name: impl Into<String>) -> Link {
        Link {
            is_source: true,
            ..Link::new(name)
        }
    }

    /// A lost connection was re-established.
    pub fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Its name, as shown.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// New state; returns whether it changed (log only then, not per retry).
    pub fn set_state(&self, up: bool, state: &str) -> bool {
        self.up.store(up, Ordering::Relaxed);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *s == state {
            return false;
        }
        state.clone_into(&mut s);
        true
    }

    /// One message delivered.
    pub fn count_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages dropped.
    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// One failed attempt.
    pub fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages now waiting.
    pub fn set_queued(&self, n: usize) {
        self.queued.store(n as u64, Ordering::Relaxed);
    }

    /// A copy of the numbers.
    pub fn snapshot(&self) -> LinkSnapshot {
        LinkSnapshot {
            name: self.name.clone(),
            up: self.is_up(),
            state: self.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            sent: self.sent.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            source: self.is_source,
        }
    }
}

/// A metric family: name, type, help, and the value it reads.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LinkSnapshot) -> u64,
);

/// The links' families in the Prometheus text format, appended to `o`.
pub(crate) fn write_prometheus(o: &mut String, links: &[LinkSnapshot], label: fn(&str) -> String) {
    if links.is_empty() {
        return;
    }
    let families: [Family; 6] = [
        (
            "dla_link_up",
            "gauge",
            "1 while the link is connected (MQTT) or its last delivery succeeded (webhook).",
            |l| u64::from(l.up),
        ),
        (
            "dla_link_messages_sent_total",
            "counter",
            "Messages delivered.",
            |l| l.sent,
        ),
        (
            "dla_link_messages_queued",
            "gauge",
            "Messages waiting to be sent.",
            |l| l.queued,
        ),
        (
            "dla_link_messages_dropped_total",
            "counter",
            "Messages dropped: queue full or retries exhausted.",
            |l| l.dropped,
        ),
        (
            "dla_link_failures_total",
            "counter",
            "Failed connection or delivery attempts.",
            |l| l.failures,
        ),
        (
            "dla_link_reconnects_total",
            "counter",
            "Connections re-established after one was lost.",
            |l| l.reconnects,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for l in links {
            let _ = writeln!(o, "{name}{{link=\"{}\"}} {}", label(&l.name), value(l));
        }
    }
    let sources: Vec<&LinkSnapshot> = links.iter().filter(|l| l.source).collect();
    if !sources.is_empty() {
        let name = "dla_source_reconnects_total";
        let _ = writeln!(
            o,
            "# HELP {name} Times the source reconnected after losing its camera."
        );
        let _ = writeln!(o, "# TYPE {name} counter");
        let reconnects: u64 = sources.iter().map(|l| l.reconnects).sum();
        let _ = writeln!(o, "{name} {reconnects}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_are_reported_once() {
        let link = Link::new("mqtt 127.0.0.1:1883");
        assert!(link.set_state(false, "broker unreachable"));
        assert!(
            !link.set_state(false, "broker unreachable"),
            "a retry is no change"
        );
        assert!(link.set_state(true, "connected"));
        link.count_sent();
        link.count_dropped(2);
        let s = link.snapshot();
        assert!(s.up);
        assert_eq!((s.sent, s.dropped, s.failures), (1, 2, 0));
        let mut o = String::new();
        write_prometheus(&mut o, &[s], |v| v.to_string());
        assert!(
            o.contains("dla_link_up{link=\"mqtt 127.0.0.1:1883\"} 1\n"),
            "{o}"
        );
        assert!(o.contains("dla_link_messages_dropped_total{link=\"mqtt 127.0.0.1:1883\"} 2\n"));
    }
}
