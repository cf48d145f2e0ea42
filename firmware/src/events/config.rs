//! `[mqtt]` and `[[webhooks]]` in the service configuration (and
//! `stream --mqtt`): the serde sections and their checks, every error naming
//! its key. Secrets come from files, so they show in neither `ps`, the
//! config file nor logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::parse_duration;

/// `[mqtt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// mqtt://host[:1883] or mqtts://host[:8883].
    pub url: String,
    /// User name at the broker.
    pub username: Option<String>,
    /// A file holding the password (one line).
    pub password_file: Option<PathBuf>,
    /// The password itself (prefer `password_file`: the config is often world-readable).
    pub password: Option<String>,
    /// PEM CA certificate(s) for mqtts://; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// This board's name in topics and Home Assistant; default: the host name.
    pub device: Option<String>,
    /// First topic level: PREFIX/DEVICE/events, .../availability, ...
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Publish Home Assistant discovery configs.
    #[serde(default)]
    pub discovery: bool,
    /// Home Assistant's discovery prefix.
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
    /// How often to publish per-class coverage, e.g. "10s"; "0" for never.
    #[serde(default = "default_coverage_every")]
    pub coverage_every: String,
    /// Classes that get a Home Assistant coverage sensor; default: the
    /// classes the rules watch, or every class when there are no rules.
    pub coverage_classes: Option<Vec<String>>,
    /// Publish the overlay as JPEG (retained) when a rule triggers.
    #[serde(default)]
    pub snapshot: bool,
    /// Messages kept while the broker is away; older ones are dropped.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_prefix() -> String {
    "dla-edge".into()
}

fn default_discovery_prefix() -> String {
    "homeassistant".into()
}

fn default_coverage_every() -> String {
    "10s".into()
}

fn default_queue() -> usize {
    1000
}

/// `[[webhooks]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// http:// or https:// URL to POST to.
    pub url: String,
    /// Which messages: triggered, released, armed, disarmed, snapshot, coverage.
    #[serde(default = "default_webhook_events")]
    pub events: Vec<String>,
    /// A file with the HMAC-SHA256 key for the `X-DLA-Signature-256` header.
    pub secret_file: Option<PathBuf>,
    /// The key itself (prefer `secret_file`).
    pub secret: Option<String>,
    /// Per attempt, e.g. "5s".
    #[serde(default = "default_webhook_timeout")]
    pub timeout: String,
    /// Attempts after the first failed one (back-off 1 s, 2 s, 4 s, ... 30 s).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Messages kept while the receiver is failing; older ones are dropped.
    #[serde(default = "default_webhook_queue")]
    pub queue: usize,
}

fn default_webhook_events() -> Vec<String> {
    vec!["triggered".into(), "released".into()]
}

fn default_webhook_timeout() -> String {
    "5s".into()
}

fn default_retries() -> u32 {
    5
}

fn default_webhook_queue() -> usize {
    100
}

/// What a webhook may subscribe to.
pub const WEBHOOK_EVENTS: [&str; 6] = [
    "triggered",
    "released",
    "armed",
    "disarmed",
    "snapshot",
    "coverage",
];

/// Where the broker is.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// mqtts://
    pub tls: bool,
}

impl BrokerAddress {
    /// Parses `mqtt://host[:port]` / `mqtts://host[:port]` (IPv6 in brackets).
    /// Credentials in the URL are refused: they would show in `ps` and logs.
    pub fn parse(url: &str) -> Result<BrokerAddress, String> {
        let expected = "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]";
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(format!("{url:?}: {expected}"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(format!(
                "{url:?}: no credentials in the URL (they would show in logs); \
                 use username and password_file (stream: --mqtt-login FILE)"
            ));
        }
        if rest.contains('/') || rest.contains('?') {
            return Err(format!("{url:?}: no path or query; {expected}"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in an IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host; {expected}"));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{url:?}: {p:?} is not a port (1-65535)"))?,
        };
        Ok(BrokerAddress {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Reads a one-line secret (password, token, key) from `file`.
pub fn read_secret(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("{}: the first line is empty", file.display()));
    }
    Ok(line.to_string())
}

/// One of a password given inline or in a file, not both.
fn secret(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("{key}: give {key} or {key}_file, not both")),
        (Some(v), None) if v.is_empty() => Err(format!("{key}: empty")),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(f)) => read_secret(f)
            .map(Some)
            .map_err(|e| format!("{key}_file: {e}")),
        (None, None) => Ok(None),
    }
}

/// A name safe in MQTT topics and Home Assistant IDs: lower case letters,
/// digits, `_` and `-`; everything else becomes `_`.
pub fn slug(name: &str) -> String {
    let s: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// This machine's host name (the default device name).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dla-edge".into())
}

/// `[mqtt]`, checked.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// The broker.
    pub broker: BrokerAddress,
    /// User name and password.
    pub login: Option<(String, String)>,
    /// CA file for mqtts://.
    pub ca_file: Option<PathBuf>,
    /// Device name (as given) and its slug for topics and IDs.
    pub device: String,
    /// `topic_prefix`.
    pub topic_prefix: String,
    /// Discovery prefix, when discovery is on.
    pub discovery: Option<String>,
    /// Coverage period, when on.
    pub coverage_every: Option<Duration>,
    /// Class names with a coverage sensor.
    pub coverage_classes: Vec<String>,
    /// JPEG on trigger.
    pub snapshot: bool,
    /// Queue length.
    pub queue: usize,
}

impl MqttSettings {
    /// The device's slug: the topic level and Home Assistant node ID.
    pub fn node(&self) -> String {
        slug(&self.device)
    }

    /// `PREFIX/DEVICE`, the root of this device's topics.
    pub fn base_topic(&self) -> String {
        format!("{}/{}", self.topic_prefix, self.node())
    }
}

impl MqttSection {
    /// Checks the section; `classes` are the model's class names and
    /// `rule_classes` the classes the rules watch. All errors at once.
    pub fn check(
        &self,
        classes: &[&str],
        rule_classes: &[&str],
    ) -> Result<MqttSettings, Vec<String>> {
        let mut errors = Vec::new();
        let broker = BrokerAddress::parse(&self.url)
            .map_err(|e| errors.push(format!("mqtt.url: {e}")))
            .ok();
        let password = secret(&self.password, &self.password_file, "mqtt.password")
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let login = match (&self.username, password) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u.clone(), p)),
            (Some(u), None) if !u.is_empty() => Some((u.clone(), String::new())),
            (Some(_), _) => {
                errors.push("mqtt.username: empty".into());
                None
            }
            (None, Some(_)) => {
                errors.push("mqtt.password: given without mqtt.username".into());
                None
            }
            (None, None) => None,
        };
        if let Some(ca) = &self.ca_file {
            if broker.as_ref().is_some_and(|b| !b.tls) {
                errors.push("mqtt.ca_file: only used with mqtts:// URLs".into());
            } else if let Err(e) = super::tls::read_ca_file(ca) {
                errors.push(format!("mqtt.ca_file: {e}"));
            }
        }
        let device = self.device.clone().unwrap_or_else(host_name);
        if device.trim().is_empty() {
            errors.push("mqtt.device: empty".into());
        }
        for (key, topic) in [
            ("mqtt.topic_prefix", &self.topic_prefix),
            ("mqtt.discovery_prefix", &self.discovery_prefix),
        ] {
            if topic.is_empty() || topic.contains(['+', '#']) || topic.starts_with('/') {
                errors.push(format!(
                    "{key}: {topic:?} is not a topic prefix (not empty, no + or #, no leading /)"
                ));
            }
        }
        let coverage_every = match parse_duration(&self.coverage_every) {
            Ok(d) if d.is_zero() => None,
            Ok(d) if d < Duration::from_millis(100) => {
                errors.push("mqtt.coverage_every: at least 100ms (or 0 for never)".into());
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("mqtt.coverage_every: {e}"));
                None
            }
        };
        let coverage_classes = match &self.coverage_classes {
            Some(list) => {
                for c in list {
                    if !classes.contains(&c.as_str()) {
                        errors.push(format!(
                            "mqtt.coverage_classes: {c:?} is not a class of the model (classes: {})",
                            classes.join(", ")
                        ));
                    }
                }
                list.clone()
            }
            None if rule_classes.is_empty() => classes.iter().map(|c| c.to_string()).collect(),
            None => {
                let mut v: Vec<String> = Vec::new();
                for c in rule_classes {
                    if !v.iter().any(|x| x == c) {
                        v.push(c.to_string());
                    }
                }
                v
            }
        };
        if self.queue == 0 {
            errors.push("mqtt.queue: must be 1 or more".into());
        }
        match broker {
            Some(broker) if errors.is_empty() => Ok(MqttSettings {
                broker,
                login,
                ca_file: self.ca_file.clone(),
                device,
                topic_prefix: self.topic_prefix.clone(),
                discovery: self.discovery.then(|| self.discovery_prefix.clone()),
                coverage_every,
                coverage_classes,
                snapshot: self.snapshot,
                queue: self.queue,
            }),
            _ => Err(errors),
        }
    }
}

/// One `[[webhooks]]`, checked.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Where to POST.
    pub url: String,
    /// The URL without credentials, path or query, for logs and stats.
    pub shown: String,
    /// Message kinds sent.
    pub events: Vec<String>,
    /// HMAC key.
    pub secret: Option<Vec<u8>>,
    /// Per attempt.
    pub timeout: Duration,
    /// Retries after the first failure.
    pub retries: u32,
    /// Queue length.
    pub queue: usize,
}

impl WebhookSection {
    /// Checks `[[webhooks]]` entry `i`; all errors at once.
    pub fn check(&self, i: usize) -> Result<WebhookSettings, Vec<String>> {
        let key = |f: &str| format!("webhooks[{i}].{f}");
        let mut errors = Vec::new();
        let shown = match shown_url(&self.url) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{}: {e}", key("url")));
                String::new()
            }
        };
        if self.events.is_empty() {
            errors.push(format!(
                "{}: empty; name at least one of {}",
                key("events"),
                WEBHOOK_EVENTS.join(", ")
            ));
        }
        for e in &self.events {
            if !WEBHOOK_EVENTS.contains(&e.as_str()) {
                errors.push(format!(
                    "{}: {e:?} is not one of {}",
                    key("events"),
                    WEBHOOK_EVENTS.join(", ")
                ));
            }
        }
        let secret = secret(&self.secret, &self.secret_file, &key("secret"))
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let timeout = match parse_duration(&self.timeout) {
            Ok(d) if d >= Duration::from_millis(100) => d,
            Ok(_) => {
                errors.push(format!("{}: at least 100ms", key("timeout")));
                Duration::ZERO
            }
            Err(e) => {
                errors.push(format!("{}: {e}", key("timeout")));
                Duration::ZERO
            }
        };
        if self.queue == 0 {
            errors.push(format!("{}: must be 1 or more", key("queue")));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(WebhookSettings {
            url: self.url.clone(),
            shown,
            events: self.events.clone(),
            secret: secret.map(String::into_bytes),
            timeout,
            retries: self.retries,
            queue: self.queue,
        })
    }
}

/// `scheme://host[:port]` of an http(s) URL, or why it is not one.
fn shown_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| *s == "http" || *s == "https")
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = BrokerAddress::parse("mqtt://192.168.1.10").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("192.168.1.10", 1883, false)
        );
        let b = BrokerAddress::parse("mqtts://broker.local:8884/").unwrap();
        assert_eq!((b.port, b.tls), (8884, true));
        let b = BrokerAddress::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1884));
        assert_eq!(b.to_string(), "mqtt://[::1]:1884");
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h/x",
            "broker",
        ] {
            assert!(BrokerAddress::parse(bad).is_err(), "{bad}");
        }
        let e = BrokerAddress::parse("mqtt://u:secret@h").unwrap_err();
        assert!(e.contains("password_file"), "{e}");
    }

    #[test]
    fn slugs_are_topic_and_id_safe() {
        assert_eq!(slug("Road ahead!"), "road_ahead_");
        assert_eq!(slug("pi-5"), "pi-5");
        assert_eq!(slug(" "), "_");
    }

    #[test]
    fn webhook_urls_are_shown_without_credentials_or_path() {
        assert_eq!(
            shown_url("https://u:p@example.com:8443/hook?k=1").unwrap(),
            "https://example.com:8443"
        );
        assert!(shown_url("ftp://x").is_err());
        assert!(shown_url("http:///path").is_err());
    }
}
