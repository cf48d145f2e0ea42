//! RTSP cameras and NVRs (feature `rtsp`): H.264 or MJPEG video through
//! `retina`, a pure-Rust RTSP client (digest and basic auth, RTP over the
//! RTSP TCP connection, which survives NAT and Wi-Fi better than UDP), H.264
//! decoded by OpenH264 (`openh264`, built from its bundled source), MJPEG by
//! the JPEG path the other sources use.
//!
//! Live semantics. A thread of its own receives and decodes every frame, as
//! H.264 needs, and keeps only the newest in a one-frame slot. The pipeline
//! takes the newest from there, so lag never builds up. After a packet loss,
//! the decoder waits for the next key frame rather than showing smeared
//! pictures.
//!
//! Self-healing. The thread reconnects with back-off, forever, when the camera
//! is unreachable, reboots, closes the stream, or stops sending for
//! [`STALL`]. It logs once per state change and counts reconnects. Wrong
//! credentials, an unknown path, no video track or an unsupported codec end
//! the source with that reason when they happen on the first connection;
//! later they are retried like an outage.
//!
//! Credentials in the URL (`rtsp://user:pass@host/path`) are sent to the
//! camera only. Messages, stats and metrics show `rtsp://host/path`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use retina::client::{
    Credentials, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};
use tokio::time::timeout;

use super::camera::Backoff;
use super::{Frame, RtspTransport, Source};
use crate::error::{Error, Result};
use crate::pipeline::Link;

mod clock;
mod decode;

use clock::CameraClock;
use decode::Decoder;

/// No frame for this long: the stream counts as stalled and is reopened.
pub const STALL: Duration = Duration::from_secs(5);
/// Longest wait for the camera's answer to DESCRIBE, SETUP or PLAY.
const ANSWER: Duration = Duration::from_secs(10);
/// Reconnect back-off: from the first to the last delay, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));

/// Frames from an RTSP camera; see the module documentation.
pub struct RtspSource {
    shown: String,
    shared: Arc<Shared>,
    link: Arc<Link>,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    stop: AtomicBool,
}

/// The newest decoded frame, or why there will be none.
struct Slot {
    frame: Frame,
    fresh: bool,
    arrived: Instant,
    /// Frames that could not be decoded since the last `next_frame`.
    corrupt: u32,
    /// Why the last of them did not decode.
    corrupt_reason: String,
    fatal: Option<String>,
}

/// `rtsp://host[:port]/path?query` without credentials, for messages (the
/// query stays: Dahua's `?channel=1&subtype=1` says which stream it is).
pub fn shown_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

impl RtspSource {
    /// Parses `url` and starts connecting in the background, asking for RTP
    /// over `transport`. A malformed URL is an error here; an unreachable
    /// camera is not (it is retried).
    pub fn open(url: &str, transport: RtspTransport) -> Result<RtspSource> {
        let fail = |reason: String| Error::Source {
            name: "rtsp://...".into(),
            reason,
        };
        let mut parsed = url::Url::parse(url).map_err(|e| fail(format!("not a URL: {e}")))?;
        if parsed.scheme() != "rtsp" {
            return Err(fail("only rtsp:// URLs (rtsps:// is not supported)".into()));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(fail("no host in the URL".into()));
        }
        let creds = credentials(&parsed);
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        let shown = shown_url(&parsed);
        let link = Arc::new(Link::source(format!("source {shown}")));
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                frame: Frame::default(),
                fresh: false,
                arrived: Instant::now(),
                corrupt: 0,
                corrupt_reason: String::new(),
                fatal: None,
            }),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let receiver = Receiver {
            url: parsed,
            creds,
            transport,
            shown: shown.clone(),
            shared: shared.clone(),
            link: link.clone(),
        };
        std::thread::Builder::new()
            .name("rtsp".into())
            .spawn(move || receiver.run())
            .map_err(|e| fail(format!("starting the RTSP thread: {e}")))?;
        Ok(RtspSource {
            shown,
            shared,
            link,
        })
    }
}

impl Drop for RtspSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn credentials(url: &url::Url) -> Option<Credentials> {
    if url.username().is_empty() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some(Credentials {
        username: decode(url.username()),
        password: decode(url.password().unwrap_or("")),
    })
}

fn lock(shared: &Shared) -> MutexGuard<'_, Slot> {
    shared.slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl Source for RtspSource {
    fn name(&self) -> &str {
        &self.shown
    }

    fn is_live(&self) -> bool {
        true
    }

    fn link(&self) -> Option<Arc<Link>> {
        Some(self.link.clone())
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        let mut slot = lock(&self.shared);
        while !slot.fresh && slot.fatal.is_none() && slot.corrupt == 0 {
            slot = self
                .shared
                .ready
                .wait(slot)
                .unwrap_or_else(|p| p.into_inner());
        }
        if let Some(reason) = &slot.fatal {
            return Err(Error::Source {
                name: self.shown.clone(),
                reason: reason.clone(),
            });
        }
        if slot.corrupt > 0 && !slot.fresh {
            slot.corrupt -= 1;
            return Err(Error::Corrupt {
                name: self.shown.clone(),
                reason: slot.corrupt_reason.clone(),
            });
        }
        std::mem::swap(frame, &mut slot.frame);
        slot.fresh = false;
        // Time from the frame's arrival to the pipeline taking it.
        frame.capture = slot.arrived.elapsed();
        Ok(true)
    }
}

/// Why a session ended.
enum Ended {
    /// Worth reconnecting: network, camera reboot, stall, end of stream.
    Outage(String),
    /// The camera said no: credentials, path, codec. Fatal on a first connect.
    Refused(String),
}

fn from_retina(e: &retina::Error) -> Ended {
    match e.status_code() {
        Some(401) => Ended::Refused("wrong user name or password (401 Unauthorized)".into()),
        Some(403) => Ended::Refused("access denied (403 Forbidden)".into()),
        Some(404) => {
            Ended::Refused("no such stream on the camera (404 Not Found): check the path".into())
        }
        _ => Ended::Outage(first_line(&e.to_string())),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// The receiving thread: connects, decodes into its own frame, publishes it.
struct Receiver {
    url: url::Url,
    creds: Option<Credentials>,
    transport: RtspTransport,
    shown: String,
    shared: Arc<Shared>,
    link: Arc<Link>,
}

impl Receiver {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return self.fatal(format!("starting the RTSP runtime: {e}")),
        };
        runtime.block_on(self.supervise());
    }

    fn fatal(&self, reason: String) {
        lock(&self.shared).fatal = Some(reason);
        self.shared.ready.notify_all();
    }

    async fn supervise(&self) {
        let mut backoff = Backoff::new(BACKOFF.0, BACKOFF.1);
        let mut ever_streamed = false;
        let mut spare = Frame::default();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let ended = self
                .session(&mut ever_streamed, &mut backoff, &mut spare)
                .await;
            if self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let reason = match ended {
                Ended::Refused(why) if !ever_streamed => return self.fatal(why),
                Ended::Refused(why) | Ended::Outage(why) => why,
            };
            self.link.count_failure();
            if self.link.set_state(false, &reason) {
                log::warn!("{}: {reason}; reconnecting with back-off", self.shown);
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One RTSP session, from DESCRIBE until it fails or stalls.
    async fn session(&self, ever: &mut bool, backoff: &mut Backoff, spare: &mut Frame) -> Ended {
        let options = SessionOptions::default()
            .creds(self.creds.clone())
            .user_agent(concat!("dla-edge/", env!("CARGO_PKG_VERSION")).into());
        let no_answer = || Ended::Outage(format!("no answer within {} s", ANSWER.as_secs()));
        let mut session = match timeout(ANSWER, Session::describe(self.url.clone(), options)).await
        {
            Err(_) => return no_answer(),
            Ok(Err(e)) => return from_retina(&e),
            Ok(Ok(s)) => s,
        };
        let video = session
            .streams()
            .iter()
            .enumerate()
            .find(|(_, s)| s.media() == "video")
            .map(|(i, s)| (i, s.encoding_name().to_string()));
        let Some((index, codec)) = video else {
            return Ended::Refused("the stream has no video track".into());
        };
        let mut decoder = match Decoder::for_codec(&codec) {
            Ok(d) => d,
            Err(why) => return Ended::Refused(why),
        };
        let transport = match self.transport {
            RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
        };
        let setup = SetupOptions::default()
            .transport(transport)
            .frame_format(FrameFormat::SIMPLE);
        match timeout(ANSWER, session.setup(index, setup)).await {
            Err(_) => return no_answer(),
            Ok(Err(e)) => return from_retina(&e),
            Ok(Ok(())) => {}
        }
        let mut frames = match timeout(ANSWER, session.play(PlayOptions::default())).await {
            Err(_) => return no_answer(),
            Ok(Err(e)) => return from_retina(&e),
            Ok(Ok(playing)) => match playing.demuxed() {
                Ok(d) => d,
                Err(e) => return from_retina(&e),
            },
        };
        let state = format!("streaming {codec} over {}", self.transport);
        let mut clock = CameraClock::default();
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ended::Outage("stopped".into());
            }
            let item = match timeout(STALL, frames.next()).await {
                Err(_) => {
                    return Ended::Outage(format!("no frame for {} s (stalled)", STALL.as_secs()))
                }
                Ok(None) => return Ended::Outage("the camera ended the stream".into()),
                Ok(Some(Err(e))) => return from_retina(&e),
                Ok(Some(Ok(item))) => item,
            };
            let video = match item {
                CodecItem::VideoFrame(video) => video,
                CodecItem::Rtcp(rtcp) if rtcp.stream_id() == index => {
                    clock.observe(&rtcp);
                    continue;
                }
                _ => continue,
            };
            match decoder.decode(&video, spare, &self.shown) {
                Ok(true) => {
                    spare.camera_time = clock.time_of(video.timestamp());
                    if self.link.set_state(true, &state) {
                        if *ever {
                            self.link.count_reconnect();
                        }
                        log::warn!("{}: {state}, {}x{}", self.shown, spare.width, spare.height);
                    }
                    *ever = true;
                    backoff.reset();
                    self.publish(spare);
                }
                Ok(false) => {}
                Err(e) => self.count_corrupt(e),
            }
        }
    }

    /// Tells the pipeline's side that a frame did not decode, and why.
    fn count_corrupt(&self, e: Error) {
        log::debug!("{e}");
        let mut slot = lock(&self.shared);
        slot.corrupt += 1;
        slot.corrupt_reason = match e {
            Error::Corrupt { reason, .. } => reason,
            other => other.to_string(),
        };
        drop(slot);
        self.shared.ready.notify_all();
    }

    /// Hands a decoded frame to the pipeline's side; the newest wins.
    fn publish(&self, spare: &mut Frame) {
        let mut slot = lock(&self.shared);
        if slot.fresh {
            log::debug!(
                "{}: a frame was replaced before the pipeline took it",
                self.shown
            );
        }
        std::mem::swap(&mut slot.frame, spare);
        slot.fresh = true;
        slot.arrived = Instant::now();
        drop(slot);
        self.shared.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_the_url_and_decoded() {
        let url = url::Url::parse(
            "rtsp://admin:p%40ss%20word@192.168.1.64:554/Streaming/Channels/102?x=1",
        )
        .unwrap();
        let creds = credentials(&url).unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("admin", "p@ss word")
        );
        assert_eq!(
            shown_url(&url),
            "rtsp://192.168.1.64:554/Streaming/Channels/102?x=1"
        );
        assert!(credentials(&url::Url::parse("rtsp://cam/live").unwrap()).is_none());
    }

    #[test]
    fn bad_urls_are_refused_before_any_connection() {
        for bad in ["rtsp://", "rtsps://cam/live", "rtsp//cam"] {
            assert!(RtspSource::open(bad, RtspTransport::Tcp).is_err(), "{bad}");
        }
    }
}
