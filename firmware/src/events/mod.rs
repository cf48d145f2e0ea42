//! Events out to home and fleet systems: rule events, class coverage and
//! snapshots, as JSON over MQTT (with Home Assistant discovery) and to
//! webhooks signed with HMAC-SHA256.
//!
//! The pipeline's output thread only *offers* a message: a short lock and a
//! push onto each link's bounded queue. Every link has its own thread that
//! connects, retries with back-off and, when its queue is full, drops the
//! oldest message and counts it, so a broker that is away or a webhook that
//! hangs never stalls the pipeline. Link states and counters show in the
//! viewer, `/stats.json` and `/metrics` (`dla_link_*`).

pub mod config;
mod coverage;
mod discovery;
mod mailbox;
pub mod message;
pub mod mqtt;
mod tls;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use dla_runtime::pipeline::{Link, Stats};
use dla_runtime::sink::Sink;

pub use coverage::CoverageSink;
pub use discovery::{DeviceInfo, RuleEntity, BINARY_SENSOR_CLASSES};
pub use message::{now_rfc3339, EventBody, Message, SnapshotFrame};

use config::{MqttSettings, WebhookSettings};

/// A link that takes messages: the MQTT client or one webhook.
pub trait Outlet: Send + Sync {
    /// Queues `message` if this link sends that kind; never blocks.
    fn offer(&self, message: &Message);
    /// Sends what is queued (for at most `within`), says goodbye and stops.
    fn close(&mut self, within: Duration);
}

/// Every configured link; closed (queues flushed, MQTT `offline`) when the
/// last holder drops it, i.e. after the pipeline stopped.
#[derive(Default)]
pub struct Outlets {
    links: Vec<Box<dyn Outlet>>,
    /// Whether any link wants a snapshot JPEG when a rule triggers.
    pub snapshots: bool,
}

impl Outlets {
    /// Adds a link.
    pub fn push(&mut self, outlet: Box<dyn Outlet>) {
        self.links.push(outlet);
    }

    /// No links configured.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Offers `message` to every link.
    pub fn offer(&self, message: &Message) {
        for link in &self.links {
            link.offer(message);
        }
    }
}

impl Drop for Outlets {
    fn drop(&mut self) {
        for link in &mut self.links {
            link.close(Duration::from_secs(3));
        }
    }
}

/// What the links are told about this board and its rules.
pub struct Announce {
    /// The configured rules, in order.
    pub rules: Vec<RuleEntity>,
    /// Model and engine, for the Home Assistant device.
    pub device: DeviceInfo,
}

/// Starts every configured link (each shows in `stats`) and returns them
/// with the coverage sink they need, if any. Nothing here waits for a
/// network: an unreachable broker or receiver is retried in the background.
pub fn start(
    mqtt: Option<&MqttSettings>,
    webhooks: &[WebhookSettings],
    announce: Announce,
    stats: &Stats,
) -> anyhow::Result<Started> {
    let mut outlets = Outlets::default();
    let mut coverage_every = None;
    let mut device = config::host_name();
    if let Some(m) = mqtt {
        let link = Arc::new(Link::new(format!("mqtt {}", m.broker)));
        stats.add_link(link.clone());
        let outlet = mqtt::MqttOutlet::start(m, announce.rules, announce.device, link)
            .map_err(|e| anyhow::anyhow!("mqtt: {e}"))?;
        outlets.push(Box::new(outlet));
        outlets.snapshots |= m.snapshot;
        coverage_every = m.coverage_every;
        device.clone_from(&m.device);
    }
    for (i, w) in webhooks.iter().enumerate() {
        let link = Arc::new(Link::new(format!("webhook {}", w.shown)));
        stats.add_link(link.clone());
        let outlet = webhook::WebhookOutlet::start(w, link)
            .map_err(|e| anyhow::anyhow!("webhooks[{i}]: {e}"))?;
        outlets.push(Box::new(outlet));
        if w.events.iter().any(|e| e == "coverage") && coverage_every.is_none() {
            coverage_every = Some(Duration::from_secs(10));
        }
    }
    let outlets = Arc::new(outlets);
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let (Some(every), false) = (coverage_every, outlets.is_empty()) {
        sinks.push(Box::new(CoverageSink::new(outlets.clone(), device, every)));
    }
    Ok(Started { outlets, sinks })
}

/// The running links and the sinks that feed them.
pub struct Started {
    /// For the rules sink.
    pub outlets: Arc<Outlets>,
    /// The coverage sink, when a link wants coverage.
    pub sinks: Vec<Box<dyn Sink>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
