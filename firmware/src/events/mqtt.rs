//! The MQTT link: events (QoS 1) on `PREFIX/DEVICE/events`, a retained
//! `ON`/`OFF` state per rule, per-class coverage, snapshots, a retained
//! availability topic with a last will, and Home Assistant discovery.
//!
//! Two threads: rumqttc's connection loop (connects, reconnects with
//! back-off, logs once per state change) and a publisher that takes
//! messages from the [`Mailbox`] only while connected. Messages raised while
//! the broker is away wait in the mailbox (bounded; the oldest dropped and
//! counted) and go out after the reconnect, in order. rumqttc resends QoS 1
//! messages that were in flight when a connection broke if the broker kept
//! the session (`clean_session = false`; mosquitto with `persistence true`
//! keeps it across its own restarts too).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use dla_runtime::pipeline::Link;
use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet,
    QoS, TlsConfiguration, Transport,
};

use super::config::MqttSettings;
use super::discovery::{self, DeviceInfo, RuleEntity, Topics};
use super::mailbox::{Mailbox, Popped};
use super::message::Message;
use super::{lock, Outlet};

/// Back-off between connection attempts: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// Keep-alive: a broker notices a board that vanished after 1.5x this.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// State shared by the outlet, the connection loop and the publisher.
struct Shared {
    mailbox: Mailbox<Message>,
    link: Arc<Link>,
    connected: AtomicBool,
    /// Counts connections, so the publisher notices every (re)connect.
    generation: AtomicU64,
    /// Home Assistant came back: publish discovery and states again.
    rediscover: AtomicBool,
    /// Discovery configs left by an earlier configuration, to be removed.
    stale: Mutex<Vec<String>>,
    /// The publisher has stopped: no more reconnecting.
    finished: AtomicBool,
}

/// The MQTT link; see the module documentation.
pub struct MqttOutlet {
    shared: Arc<Shared>,
    snapshots: bool,
    done: Mutex<Option<mpsc::Receiver<()>>>,
}

impl MqttOutlet {
    /// Starts connecting to the broker in the background and returns at once:
    /// an unreachable broker is retried, never an error here. `rules` are the
    /// configured rules in order (for state topics and discovery).
    pub fn start(
        settings: &MqttSettings,
        rules: Vec<RuleEntity>,
        device: DeviceInfo,
        link: Arc<Link>,
    ) -> Result<MqttOutlet, String> {
        let options = options(settings)?;
        let (client, connection) = Client::new(options, 64);
        let shared = Arc::new(Shared {
            mailbox: Mailbox::new(settings.queue),
            link,
            connected: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            rediscover: AtomicBool::new(false),
            stale: Mutex::new(Vec::new()),
            finished: AtomicBool::new(false),
        });
        let publisher = Publisher::new(settings, rules, device, client, shared.clone());
        let ours: HashSet<String> = publisher.configs.iter().map(|(t, _)| t.clone()).collect();
        let watch = Watch {
            ha_status: settings.discovery.as_ref().map(|p| format!("{p}/status")),
            config_prefix: settings.discovery.clone(),
            node: settings.node(),
            ours,
        };
        let name = settings.broker.to_string();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("mqtt-connection".into())
            .spawn(move || connection_loop(connection, &s, &watch, &name))
            .map_err(|e| format!("starting the MQTT thread: {e}"))?;
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("mqtt-publish".into())
            .spawn(move || {
                publisher.run();
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("starting the MQTT thread: {e}"))?;
        Ok(MqttOutlet {
            shared,
            snapshots: settings.snapshot,
            done: Mutex::new(Some(done)),
        })
    }
}

impl Outlet for MqttOutlet {
    fn offer(&self, message: &Message) {
        if matches!(message, Message::Snapshot(_)) && !self.snapshots {
            return;
        }
        let dropped = self.shared.mailbox.push(message.clone());
        if dropped > 0 {
            self.shared.link.count_dropped(dropped);
        }
        self.shared.link.set_queued(self.shared.mailbox.len());
    }

    fn close(&mut self, within: Duration) {
        self.shared.mailbox.close();
        if let Some(done) = lock(&self.done).take() {
            if done.recv_timeout(within).is_err() {
                log::warn!(
                    "mqtt: {} message(s) not sent before shutdown",
                    self.shared.mailbox.len()
                );
            }
        }
    }
}

/// rumqttc's options: client ID, login, last will, TLS, packet sizes.
fn options(settings: &MqttSettings) -> Result<MqttOptions, String> {
    let b = &settings.broker;
    let mut o = MqttOptions::new(format!("dla-edge-{}", settings.node()), &b.host, b.port);
    o.set_keep_alive(KEEP_ALIVE)
        // QoS 1 messages in flight survive a reconnect when the broker kept the session.
        .set_clean_session(false)
        .set_last_will(LastWill::new(
            Topics::new(settings).availability,
            "offline",
            QoS::AtLeastOnce,
            true,
        ))
        // Snapshots are JPEGs of a few hundred KiB; incoming are small configs.
        .set_max_packet_size(256 * 1024, 8 * 1024 * 1024);
    if let Some((user, password)) = &settings.login {
        o.set_credentials(user, password);
    }
    if b.tls {
        let tls = super::tls::client_config(settings.ca_file.as_deref())?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    Ok(o)
}

/// What the connection loop watches for among incoming messages.
struct Watch {
    ha_status: Option<String>,
    config_prefix: Option<String>,
    node: String,
    ours: HashSet<String>,
}

impl Watch {
    /// A retained discovery config of this node that the current
    /// configuration does not publish (a rule that was removed).
    fn is_stale(&self, topic: &str, retained: bool, payload: &[u8]) -> bool {
        let Some(prefix) = &self.config_prefix else {
            return false;
        };
        let parts: Vec<&str> = topic.split('/').collect();
        retained
            && !payload.is_empty()
            && topic.starts_with(prefix.as_str())
            && parts.len() >= 4
            && parts[parts.len() - 3] == self.node
            && parts[parts.len() - 1] == "config"
            && !self.ours.contains(topic)
    }
}

/// Drives rumqttc's event loop until the publisher disconnects or every
/// client handle is gone.
fn connection_loop(
    mut connection: rumqttc::Connection,
    shared: &Shared,
    watch: &Watch,
    name: &str,
) {
    let mut backoff = BACKOFF.0;
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = BACKOFF.0;
                shared.connected.store(true, Ordering::SeqCst);
                shared.generation.fetch_add(1, Ordering::SeqCst);
                if shared.link.set_state(true, "connected") {
                    log::warn!("mqtt: connected to {name}");
                }
                shared.mailbox.wake();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if watch.ha_status.as_deref() == Some(p.topic.as_str())
                    && &p.payload[..] == b"online"
                {
                    shared.rediscover.store(true, Ordering::SeqCst);
                    shared.mailbox.wake();
                } else if watch.is_stale(&p.topic, p.retain, &p.payload) {
                    lock(&shared.stale).push(p.topic.clone());
                    shared.mailbox.wake();
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                shared.connected.store(false, Ordering::SeqCst);
                if shared.finished.load(Ordering::Relaxed) {
                    break;
                }
                shared.link.count_failure();
                let state = describe(&e);
                if shared.link.set_state(false, &state) {
                    log::warn!(
                        "mqtt: {name}: {state}; retrying with back-off (up to {} s)",
                        BACKOFF.1.as_secs()
                    );
                }
                sleep_unless_closing(shared, backoff);
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
    shared.connected.store(false, Ordering::SeqCst);
}

fn sleep_unless_closing(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !shared.finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}

/// A connection error in words a user can act on.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => "the broker refused the login (bad user name or password, or not authorised): \
              check mqtt.username and mqtt.password_file"
            .into(),
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?})")
        }
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "broker unreachable (connection refused: is it running, on this port?)".into()
        }
        ConnectionError::Io(io) => format!("connection lost or unreachable ({io})"),
        ConnectionError::NetworkTimeout => "broker unreachable (timed out)".into(),
        ConnectionError::Tls(t) => format!("TLS failed ({t})"),
        other => other.to_string(),
    }
}

/// The publisher thread's state: everything it publishes on (re)connect.
struct Publisher {
    client: Client,
    shared: Arc<Shared>,
    topics: Topics,
    rules: Vec<(RuleEntity, String, String)>,
    /// Each rule's state as last published (all released at start).
    active: Vec<bool>,
    configs: Vec<(String, serde_json::Value)>,
    subscriptions: Vec<String>,
    /// Reused for snapshot JPEGs.
    jpeg: Vec<u8>,
}

impl Publisher {
    fn new(
        settings: &MqttSettings,
        rules: Vec<RuleEntity>,
        device: DeviceInfo,
        client: Client,
        shared: Arc<Shared>,
    ) -> Publisher {
        let (configs, subscriptions) = match &settings.discovery {
            Some(prefix) => (
                discovery::configs(settings, prefix, &rules, &device),
                vec![
                    discovery::own_configs_filter(prefix, settings),
                    format!("{prefix}/status"),
                ],
            ),
            None => (Vec::new(), Vec::new()),
        };
        let active = vec![false; rules.len()];
        let rules = rules
            .into_iter()
            .map(|r| {
                let state = Topics::rule_state(settings, &r);
                let attributes = Topics::rule_attributes(settings, &r);
                (r, state, attributes)
            })
            .collect();
        Publisher {
            client,
            shared,
            topics: Topics::new(settings),
            rules,
            active,
            configs,
            subscriptions,
            jpeg: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut seen = 0;
        let mut deadline = None;
        loop {
            let connected = self.shared.connected.load(Ordering::SeqCst);
            if connected {
                let generation = self.shared.generation.load(Ordering::SeqCst);
                if generation != seen {
                    seen = generation;
                    self.on_connect();
                } else if self.shared.rediscover.swap(false, Ordering::SeqCst) {
                    self.announce();
                }
                let stale = std::mem::take(&mut *lock(&self.shared.stale));
                for topic in stale {
                    log::warn!("mqtt: removing {topic} (no longer in the configuration)");
                    self.send(&topic, QoS::AtLeastOnce, true, Vec::new());
                }
            }
            let shared = self.shared.clone();
            let mailbox = &shared.mailbox;
            if mailbox.is_closed() {
                // A broker that is away gets until the deadline to come back.
                let deadline =
                    *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
                if mailbox.len() == 0 || Instant::now() >= deadline {
                    break;
                }
            }
            if !connected {
                mailbox.idle(Duration::from_millis(250));
                continue;
            }
            if let Popped::Item(message) = mailbox.pop(Duration::from_millis(250)) {
                self.publish(&message);
            }
            self.shared.link.set_queued(mailbox.len());
        }
        self.shared.finished.store(true, Ordering::Relaxed);
        if self.shared.connected.load(Ordering::SeqCst) {
            let topic = self.topics.availability.clone();
            self.send(&topic, QoS::AtLeastOnce, true, b"offline".to_vec());
            let _ = self.client.disconnect();
        }
    }

    /// Hands one publish to rumqttc (it waits only when rumqttc's own
    /// channel is full, on this thread, never the pipeline's).
    fn send(&self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>) {
        match self.client.publish(topic, qos, retain, payload) {
            Ok(()) => self.shared.link.count_sent(),
            Err(e) => {
                self.shared.link.count_failure();
                log::debug!("mqtt: publishing to {topic}: {e}");
            }
        }
    }

    /// Availability, subscriptions, discovery and rule states.
    fn on_connect(&mut self) {
        let topic = self.topics.availability.clone();
        self.send(&topic, QoS::AtLeastOnce, true, b"online".to_vec());
        for filter in &self.subscriptions {
            if let Err(e) = self.client.subscribe(filter.as_str(), QoS::AtLeastOnce) {
                log::debug!("mqtt: subscribing to {filter}: {e}");
            }
        }
        self.announce();
    }

    /// Discovery configs and every rule's current state, retained.
    fn announce(&mut self) {
        for (topic, config) in &self.configs {
            self.send(
                topic,
                QoS::AtLeastOnce,
                true,
                config.to_string().into_bytes(),
            );
        }
        for (i, (_, state, _)) in self.rules.iter().enumerate() {
            let v = if self.active[i] { "ON" } else { "OFF" };
            self.send(state, QoS::AtLeastOnce, true, v.as_bytes().to_vec());
        }
    }

    fn publish(&mut self, message: &Message) {
        match message {
            Message::Event(e) => {
                let json = serde_json::to_vec(&**e).unwrap_or_default();
                self.send(&self.topics.events, QoS::AtLeastOnce, false, json.clone());
                let on = match e.event {
                    "triggered" => true,
                    "released" => false,
                    _ => return,
                };
                if let Some((i, (_, state, attributes))) =
                    e.rule_index.and_then(|i| self.rules.get(i).map(|r| (i, r)))
                {
                    self.active[i] = on;
                    let v = if on { "ON" } else { "OFF" };
                    self.send(state, QoS::AtLeastOnce, true, v.as_bytes().to_vec());
                    self.send(attributes, QoS::AtLeastOnce, true, json);
                }
            }
            Message::Coverage(c) => {
                let json = serde_json::to_vec(&**c).unwrap_or_default();
                self.send(&self.topics.coverage, QoS::AtMostOnce, true, json);
            }
            Message::Snapshot(frame) => {
                let mut jpeg = std::mem::take(&mut self.jpeg);
                match dla_runtime::sink::encode_jpeg(
                    &mut jpeg,
                    &frame.rgb,
                    frame.width,
                    frame.height,
                    85,
                ) {
                    Ok(()) => self.send(&self.topics.snapshot, QoS::AtMostOnce, true, jpeg.clone()),
                    Err(e) => log::warn!("mqtt: snapshot: {e}"),
                }
                self.jpeg = jpeg;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_nodes_leftover_configs_are_stale() {
        let watch = Watch {
            ha_status: Some("homeassistant/status".into()),
            config_prefix: Some("homeassistant".into()),
            node: "pi".into(),
            ours: HashSet::from(["homeassistant/binary_sensor/pi/road/config".to_string()]),
        };
        let old = "homeassistant/binary_sensor/pi/cars/config";
        assert!(watch.is_stale(old, true, b"{}"));
        assert!(
            !watch.is_stale(old, false, b"{}"),
            "a live message, not a leftover"
        );
        assert!(!watch.is_stale(old, true, b""), "already removed");
        assert!(!watch.is_stale("homeassistant/binary_sensor/pi/road/config", true, b"{}"));
        assert!(!watch.is_stale("homeassistant/binary_sensor/other/cars/config", true, b"{}"));
    }

    #[test]
    fn refused_logins_are_named() {
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        assert!(describe(&e).contains("bad user name or password"));
    }
}
