//! A webhook: each chosen message is POSTed as JSON, signed with
//! HMAC-SHA256 of the body in `X-DLA-Signature-256: sha256=HEX` (the scheme
//! GitHub uses, so receivers have ready-made checks), from its own thread.
//! A failed delivery (network error, timeout, HTTP 5xx, 408, 429) is retried
//! with back-off; other 4xx answers are not (the receiver rejected the
//! message; retrying would not change that). Snapshots (JPEG) are MQTT-only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use dla_runtime::pipeline::Link;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::config::WebhookSettings;
use super::mailbox::{Mailbox, Popped};
use super::message::Message;
use super::{lock, Outlet};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-DLA-Signature-256";
/// Back-off between attempts: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// One `[[webhooks]]` entry, running.
pub struct WebhookOutlet {
    mailbox: Arc<Mailbox<Message>>,
    link: Arc<Link>,
    events: Vec<String>,
    closing: Arc<AtomicBool>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
}

/// `sha256=HEX` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

impl WebhookOutlet {
    /// Starts the webhook's thread.
    pub fn start(settings: &WebhookSettings, link: Arc<Link>) -> Result<WebhookOutlet, String> {
        let mailbox = Arc::new(Mailbox::new(settings.queue));
        let closing = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = mpsc::channel();
        let worker = Worker {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(settings.timeout))
                .http_status_as_error(false)
                .user_agent(concat!("dla-edge/", env!("CARGO_PKG_VERSION")))
                .build()
                .into(),
            settings: settings.clone(),
            mailbox: mailbox.clone(),
            link: link.clone(),
            closing: closing.clone(),
        };
        link.set_state(true, "idle");
        std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || {
                worker.run();
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("starting the webhook thread: {e}"))?;
        Ok(WebhookOutlet {
            mailbox,
            link,
            events: settings.events.clone(),
            closing,
            done: Mutex::new(Some(done)),
        })
    }
}

impl Outlet for WebhookOutlet {
    fn offer(&self, message: &Message) {
        if !self.events.iter().any(|e| e == message.kind()) {
            return;
        }
        let dropped = self.mailbox.push(message.clone());
        if dropped > 0 {
            self.link.count_dropped(dropped);
        }
        self.link.set_queued(self.mailbox.len());
    }

    fn close(&mut self, within: Duration) {
        self.mailbox.close();
        if let Some(done) = lock(&self.done).take() {
            if done.recv_timeout(within).is_err() {
                // Stop retrying; what is left is dropped with the process.
                self.closing.store(true, Ordering::Relaxed);
                log::warn!(
                    "webhook {}: {} message(s) not delivered before shutdown",
                    self.link.name(),
                    self.mailbox.len() + 1
                );
            }
        }
    }
}

/// How one attempt went.
enum Outcome {
    Delivered,
    /// Worth another try (network, timeout, 5xx, 408, 429).
    Retry(String),
    /// The receiver rejected it; do not retry.
    Rejected(String),
}

struct Worker {
    agent: ureq::Agent,
    settings: WebhookSettings,
    mailbox: Arc<Mailbox<Message>>,
    link: Arc<Link>,
    closing: Arc<AtomicBool>,
}

impl Worker {
    fn run(&self) {
        loop {
            match self.mailbox.pop(Duration::from_secs(1)) {
                Popped::Item(message) => self.deliver(&message),
                Popped::Empty => {}
                Popped::Closed => return,
            }
            self.link.set_queued(self.mailbox.len());
        }
    }

    fn body(message: &Message) -> Option<Vec<u8>> {
        match message {
            Message::Event(e) => serde_json::to_vec(&**e).ok(),
            Message::Coverage(c) => serde_json::to_vec(&**c).ok(),
            Message::Snapshot(_) => None,
        }
    }

    /// Tries until delivered, rejected or out of retries.
    fn deliver(&self, message: &Message) {
        let Some(body) = Self::body(message) else {
            return;
        };
        let name = &self.settings.shown;
        let mut backoff = BACKOFF.0;
        for attempt in 0..=self.settings.retries {
            match self.attempt(&body) {
                Outcome::Delivered => {
                    self.link.count_sent();
                    if self.link.set_state(true, "delivering") && attempt > 0 {
                        log::warn!("webhook {name}: delivering again");
                    }
                    return;
                }
                Outcome::Rejected(why) => {
                    self.link.count_failure();
                    self.link.count_dropped(1);
                    self.link.set_state(false, &why);
                    log::warn!("webhook {name}: {why}; message dropped (not retried)");
                    return;
                }
                Outcome::Retry(why) => {
                    self.link.count_failure();
                    if self.link.set_state(false, &why) {
                        log::warn!("webhook {name}: {why}; retrying with back-off");
                    }
                    if attempt == self.settings.retries || self.closing.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        }
        self.link.count_dropped(1);
        log::warn!(
            "webhook {name}: a {} message was dropped after {} attempt(s)",
            message.kind(),
            self.settings.retries + 1
        );
    }

    fn attempt(&self, body: &[u8]) -> Outcome {
        let mut request = self
            .agent
            .post(&self.settings.url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.settings.secret {
            request = request.header(SIGNATURE_HEADER, signature(key, body));
        }
        match request.send(body) {
            Ok(response) => {
                let status = response.status().as_u16();
                match status {
                    200..=299 => Outcome::Delivered,
                    408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
                    _ => Outcome::Rejected(format!(
                        "HTTP {status} (the receiver rejected the message)"
                    )),
                }
            }
            Err(ureq::Error::Timeout(_)) => Outcome::Retry(format!(
                "no answer within {:.1} s (timeout)",
                self.settings.timeout.as_secs_f32()
            )),
            Err(e) => Outcome::Retry(format!("unreachable ({e})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_rfc_4231_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
