//! The built-in web viewer: a small HTTP server (tiny_http) showing the live
//! overlay and camera as multipart MJPEG, a class legend, live stats, and
//! machine endpoints.
//!
//! | route | content |
//! |---|---|
//! | `/` | the page |
//! | `/stream.mjpg` | live overlay, `multipart/x-mixed-replace` MJPEG |
//! | `/raw.mjpg` | live camera frames, MJPEG |
//! | `/snapshot.jpg`, `/raw.jpg` | the latest overlay / camera frame |
//! | `/labels.png` | the latest raw class IDs, 8-bit grey PNG |
//! | `/stats.json` | [`StatsSnapshot`](crate::pipeline::StatsSnapshot) as JSON |
//! | `/metrics` | the same in the Prometheus text format |
//! | `/login` | POST: the login form's fields; sets the login cookie |
//!
//! Anything else is 404: no file is ever served from disk. With a login
//! ([`ViewerAuth`]), every route but the ones it leaves open answers 401
//! without it (the page: a login form), and failed attempts are counted
//! (`dla_viewer_login_failures_total` in `/metrics`).
//!
//! Why the viewer costs little when nobody watches: [`Sink::write`] only
//! copies the frame and labels into reused buffers; the overlay is blended
//! and a stream's JPEG encoded on the output thread only while a client
//! watches that stream, and snapshots are blended and encoded on demand by
//! the HTTP thread that serves them.
//!
//! Why a slow client cannot slow the pipeline: a watched stream's frame is
//! encoded once into an `Arc<Vec<u8>>` and swapped into a latest-frame slot
//! (the buffer it replaces is encoded into next time, once no client still
//! sends it, so a watched stream allocates nothing per frame either); each
//! stream client runs on its own thread and sends whatever frame is newest
//! when it is ready, skipping the ones it was too slow for. Stream clients are
//! capped (a stalled client holds its thread until its TCP connection dies;
//! tiny_http offers no write timeout), other requests are answered by a small
//! fixed pool of threads.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use super::auth::{Presented, COOKIE};
use super::{Output, Sink, ViewerAuth};
use crate::classes::ClassInfo;
use crate::error::{Error, Result};
use crate::pipeline::Stats;
use crate::postprocess::Palette;

/// Viewer settings.
#[derive(Debug, Clone)]
pub struct ViewerOptions {
    /// Address to listen on, e.g. `127.0.0.1:8080` (port 0: any free port).
    pub addr: String,
    /// Most simultaneous MJPEG stream clients.
    pub max_stream_clients: usize,
    /// JPEG quality of the streamed frames (1..=100).
    pub jpeg_quality: u8,
    /// Who may see it; `None`: anyone who can reach the address.
    pub auth: Option<ViewerAuth>,
}

impl Default for ViewerOptions {
    fn default() -> Self {
        ViewerOptions {
            addr: "127.0.0.1:8080".into(),
            max_stream_clients: 8,
            jpeg_quality: 80,
            auth: None,
        }
    }
}

/// The newest encoded frame and its number, for any number of readers.
#[derive(Default)]
struct Slot {
    latest: Mutex<(u64, Option<Arc<Vec<u8>>>)>,
    fresh: Condvar,
}

impl Slot {
    /// Publishes `data` as the newest frame; returns the frame it replaces.
    fn put(&self, data: Arc<Vec<u8>>) -> Option<Arc<Vec<u8>>> {
        let mut l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        l.0 += 1;
        let previous = l.1.replace(data);
        drop(l);
        self.fresh.notify_all();
        previous
    }

    /// Waits up to `timeout` for a frame newer than number `seen`.
    fn wait_newer(&self, seen: u64, timeout: Duration) -> Option<(u64, Arc<Vec<u8>>)> {
        let l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let (l, _) = self
            .fresh
            .wait_timeout_while(l, timeout, |l| l.0 <= seen)
            .unwrap_or_else(|p| p.into_inner());
        match &l.1 {
            Some(d) if l.0 > seen => Some((l.0, d.clone())),
            _ => None,
        }
    }
}

/// The latest frame's pixels, copied into buffers reused frame after frame.
#[derive(Default)]
struct Latest {
    width: u32,
    height: u32,
    /// Frames published so far (0: none yet).
    count: u64,
    raw: Vec<u8>,
    labels: Vec<u8>,
    /// Colours and opacity to blend a snapshot's overlay on request.
    blend: Option<(Palette, f32)>,
}

struct Shared {
    overlay: Slot,
    raw: Slot,
    latest: Mutex<Latest>,
    /// Connected stream clients of the overlay and of the raw stream.
    overlay_watchers: AtomicUsize,
    raw_watchers: AtomicUsize,
    stats: Arc<Stats>,
    page: String,
    stop: AtomicBool,
    stream_clients: AtomicUsize,
    max_stream_clients: usize,
    snapshot_quality: u8,
    auth: Option<ViewerAuth>,
    /// Requests that presented a wrong login (form, header).
    login_failures: AtomicU64,
}

/// Encodes RGB8 pixels as a JPEG into `out` (cleared first), with the
/// SIMD encoder the viewer's streams use.
pub fn encode_jpeg(
    out: &mut Vec<u8>,
    rgb: &[u8],
    w: u32,
    h: u32,
    quality: u8,
) -> std::result::Result<(), String> {
    let (w, h) = match (u16::try_from(w), u16::try_from(h)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(format!("{w}x{h} is too large for JPEG")),
    };
    out.clear();
    jpeg_encoder::Encoder::new(out, quality)
        .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| format!("JPEG encoding: {e}"))
}

/// Encodes RGB8 pixels as a JPEG into `spare`'s buffer when no one else holds
/// it any more (then nothing is allocated), else into a new one.
fn encode_reusing(
    spare: Option<Arc<Vec<u8>>>,
    rgb: &[u8],
    w: u32,
    h: u32,
    quality: u8,
) -> std::result::Result<Arc<Vec<u8>>, String> {
    // Only the slot and stream clients ever hold these, and the slot has let
    // go of `spare`: a count of 1 cannot rise again, so the buffer is ours.
    let mut jpeg = spare
        .filter(|a| Arc::strong_count(a) == 1)
        .unwrap_or_default();
    encode_jpeg(Arc::make_mut(&mut jpeg), rgb, w, h, quality)?;
    Ok(jpeg)
}

/// The web viewer; a [`Sink`] that publishes every frame it is given.
pub struct Viewer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    quality: u8,
    /// The frames the two stream slots last gave back, to encode into next.
    spare_overlay: Option<Arc<Vec<u8>>>,
    spare_raw: Option<Arc<Vec<u8>>>,
}

/// Threads answering ordinary requests.
const WORKERS: usize = 3;

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(classes: &[ClassInfo]) -> String {
    let mut legend = String::new();
    for (i, c) in classes.iter().enumerate() {
        let [r, g, b] = c.color;
        legend.push_str(&format!(
            "<tr><td><span class=\"swatch\" style=\"background:rgb({r},{g},{b})\"></span>{id} {name}</td>\
             <td id=\"cov{i}\">0 %</td></tr>\
             <tr><td colspan=\"2\"><div class=\"bar\"><div id=\"bar{i}\" style=\"width:0;background:rgb({r},{g},{b})\"></div></div></td></tr>",
            id = c.id,
            name = escape_html(&c.name),
        ));
    }
    include_str!("viewer.html").replace("@LEGEND@", &legend)
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static ASCII header")
}

impl Viewer {
    /// Starts the server on `options.addr`; `stats` are shown live and
    /// `classes` make the legend.
    pub fn start(
        options: &ViewerOptions,
        stats: Arc<Stats>,
        classes: &[ClassInfo],
    ) -> Result<Viewer> {
        let fail = |reason: String| Error::Sink {
            sink: format!("viewer {}", options.addr),
            reason,
        };
        let addr: SocketAddr = options.addr.parse().map_err(|_| {
            fail("not an IP address and port (e.g. 127.0.0.1:8080 or 0.0.0.0:8080)".into())
        })?;
        let server = Server::http(addr).map_err(|e| fail(format!("cannot listen: {e}")))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| fail("not listening on an IP address".into()))?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            overlay: Slot::default(),
            raw: Slot::default(),
            latest: Mutex::new(Latest::default()),
            overlay_watchers: AtomicUsize::new(0),
            raw_watchers: AtomicUsize::new(0),
            stats,
            page: page(classes),
            stop: AtomicBool::new(false),
            stream_clients: AtomicUsize::new(0),
            max_stream_clients: options.max_stream_clients.max(1),
            snapshot_quality: options.jpeg_quality.clamp(1, 100),
            auth: options.auth.clone(),
            login_failures: AtomicU64::new(0),
        });
        if options.auth.is_none() && !addr.ip().is_loopback() {
            log::warn!(
                "the viewer on {addr} has no login: anyone who can reach this address sees the \
                 camera. Set one with --http-login FILE (stream) or [viewer] login_file (run)"
            );
        }
        let mut workers = Vec::new();
        for i in 0..WORKERS {
            let (server, shared) = (server.clone(), shared.clone());
            let w = std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || serve(&server, &shared))
                .map_err(|e| fail(format!("cannot start a thread: {e}")))?;
            workers.push(w);
        }
        Ok(Viewer {
            shared,
            addr,
            workers,
            quality: options.jpeg_quality.clamp(1, 100),
            spare_overlay: None,
            spare_raw: None,
        })
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Encodes `rgb` into `spare`'s buffer where possible, for a stream slot.
    fn encode(
        &self,
        spare: Option<Arc<Vec<u8>>>,
        rgb: &[u8],
        w: u32,
        h: u32,
    ) -> Result<Arc<Vec<u8>>> {
        encode_reusing(spare, rgb, w, h, self.quality).map_err(|reason| Error::Sink {
            sink: format!("viewer {}", self.addr),
            reason,
        })
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Sink for Viewer {
    fn name(&self) -> String {
        format!("viewer http://{}", self.addr)
    }

    fn write(&mut self, out: &Output<'_>) -> Result<()> {
        let (w, h) = (out.frame.width, out.frame.height);
        {
            let mut latest = self.shared.latest.lock().unwrap_or_else(|p| p.into_inner());
            let l = &mut *latest;
            (l.width, l.height) = (w, h);
            l.count += 1;
            l.blend
                .get_or_insert_with(|| (out.palette.clone(), out.alpha()));
            for (dst, src) in [
                (&mut l.raw, &out.frame.data[..]),
                (&mut l.labels, out.labels),
            ] {
                dst.clear();
                dst.extend_from_slice(src);
            }
        }
        if self.shared.overlay_watchers.load(Ordering::SeqCst) > 0 {
            let spare = self.spare_overlay.take();
            let overlay = self.encode(spare, out.overlay(), w, h)?;
            self.spare_overlay = self.shared.overlay.put(overlay);
        }
        if self.shared.raw_watchers.load(Ordering::SeqCst) > 0 {
            let spare = self.spare_raw.take();
            let raw = self.encode(spare, &out.frame.data, w, h)?;
            self.spare_raw = self.shared.raw.put(raw);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.stop();
        Ok(())
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A worker: answers requests until the viewer stops.
fn serve(server: &Server, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(req)) => handle(req, shared),
            Ok(None) => {}
            Err(e) => {
                log::warn!("viewer: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn respond(req: Request, resp: Response<std::io::Cursor<Vec<u8>>>) {
    if let Err(e) = req.respond(resp) {
        log::debug!("viewer: client went away: {e}");
    }
}

fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
}

/// The value of request header `name`.
fn header_value<'a>(req: &'a Request, name: &'static str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// The login page, with `message` (already HTML) above the fields.
fn login_page(auth: &ViewerAuth, message: &str) -> String {
    let (user, secret_label) = if auth.has_user() {
        (
            r#"<label for="user">User</label><input id="user" name="user" autocomplete="username" required>"#,
            "Password",
        )
    } else {
        ("", "Token")
    };
    include_str!("viewer_login.html")
        .replace("@MESSAGE@", message)
        .replace("@USER@", user)
        .replace("@SECRET_LABEL@", secret_label)
}

/// `POST /login`: checks the form and sets the cookie, or shows the form again.
fn login(mut req: Request, auth: &ViewerAuth, shared: &Shared) {
    let mut body = Vec::new();
    let read =
        std::io::Read::read_to_end(&mut std::io::Read::take(req.as_reader(), 4096), &mut body);
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (user, secret) = (field("user"), field("secret"));
    match auth.login(&user, &secret).filter(|_| read.is_ok()) {
        Some(cookie) => {
            let resp = bytes(303, "text/plain", b"logged in\n".to_vec())
                .with_header(header("Location", "/"))
                .with_header(header(
                    "Set-Cookie",
                    &format!(
                        "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000"
                    ),
                ));
            respond(req, resp)
        }
        None => {
            shared.login_failures.fetch_add(1, Ordering::Relaxed);
            let page = login_page(auth, r#"<p class="error">Wrong login.</p>"#);
            respond(
                req,
                bytes(401, "text/html; charset=utf-8", page.into_bytes()),
            )
        }
    }
}

/// Whether the request may go on; if not, answers it (401) and says no.
fn admitted(req: Request, path: &str, shared: &Shared) -> Option<Request> {
    let Some(auth) = &shared.auth else {
        return Some(req);
    };
    let presented = Presented {
        authorization: header_value(&req, "Authorization"),
        cookie: header_value(&req, "Cookie"),
    };
    if auth.is_open(path) || auth.allows(&presented) {
        return Some(req);
    }
    if presented.authorization.is_some() {
        shared.login_failures.fetch_add(1, Ordering::Relaxed);
    }
    let resp = if matches!(path, "/" | "/index.html") {
        bytes(
            401,
            "text/html; charset=utf-8",
            login_page(auth, "").into_bytes(),
        )
    } else {
        bytes(401, "text/plain", b"login required\n".to_vec())
    };
    respond(
        req,
        resp.with_header(header("WWW-Authenticate", r#"Bearer realm="dla-edge""#)),
    );
    None
}

fn handle(req: Request, shared: &Arc<Shared>) {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    if let (Method::Post, "/login", Some(auth)) = (req.method(), path.as_str(), &shared.auth) {
        return login(req, auth, shared);
    }
    if !matches!(req.method(), Method::Get | Method::Head) {
        return respond(req, bytes(405, "text/plain", b"only GET\n".to_vec()));
    }
    let Some(req) = admitted(req, &path, shared) else {
        return;
    };
    match path.as_str() {
        "/" | "/index.html" => {
            let body = shared.page.clone().into_bytes();
            respond(req, bytes(200, "text/html; charset=utf-8", body))
        }
        "/stream.mjpg" => start_stream(req, shared, true),
        "/raw.mjpg" => start_stream(req, shared, false),
        "/snapshot.jpg" | "/raw.jpg" | "/labels.png" => {
            let Some((w, h, pixels)) = latest_pixels(shared, &path) else {
                return respond(req, bytes(503, "text/plain", b"no frame yet\n".to_vec()));
            };
            let mut out = Vec::new();
            let encoded = if path == "/labels.png" {
                let encoder = image::codecs::png::PngEncoder::new(&mut out);
                image::ImageEncoder::write_image(
                    encoder,
                    &pixels,
                    w,
                    h,
                    image::ExtendedColorType::L8,
                )
                .map_err(|e| e.to_string())
            } else {
                encode_jpeg(&mut out, &pixels, w, h, shared.snapshot_quality)
            };
            let kind = if path == "/labels.png" {
                "image/png"
            } else {
                "image/jpeg"
            };
            match encoded {
                Ok(()) => respond(req, bytes(200, kind, out)),
                Err(e) => respond(req, bytes(500, "text/plain", format!("{e}\n").into_bytes())),
            }
        }
        "/stats.json" => {
            let body = serde_json::to_vec(&shared.stats.snapshot()).unwrap_or_default();
            respond(req, bytes(200, "application/json", body))
        }
        "/metrics" => {
            let mut body = shared.stats.snapshot().to_prometheus();
            if shared.auth.is_some() {
                let failures = shared.login_failures.load(Ordering::Relaxed);
                body.push_str(&format!(
                    "# HELP dla_viewer_login_failures_total Requests with a wrong login.\n\
                     # TYPE dla_viewer_login_failures_total counter\n\
                     dla_viewer_login_failures_total {failures}\n"
                ));
            }
            let body = body.into_bytes();
            respond(
                req,
                bytes(200, "text/plain; version=0.0.4; charset=utf-8", body),
            )
        }
        _ => respond(req, bytes(404, "text/plain", b"not found\n".to_vec())),
    }
}

/// Hands a stream request to its own thread, within the client cap.
/// The latest frame's pixels for `path` (camera, labels, or the overlay,
/// blended here: the pipeline only blends one when someone watches it).
/// Copied out under the lock, blended without it.
fn latest_pixels(shared: &Shared, path: &str) -> Option<(u32, u32, Vec<u8>)> {
    let (w, h, raw, labels, blend) = {
        let l = shared.latest.lock().unwrap_or_else(|p| p.into_inner());
        if l.count == 0 {
            return None;
        }
        match path {
            "/raw.jpg" => return Some((l.width, l.height, l.raw.clone())),
            "/labels.png" => return Some((l.width, l.height, l.labels.clone())),
            _ => (
                l.width,
                l.height,
                l.raw.clone(),
                l.labels.clone(),
                l.blend.clone()?,
            ),
        }
    };
    let (palette, alpha) = blend;
    let mut overlay = vec![0; raw.len()];
    palette.overlay(&raw, &labels, alpha, &mut overlay);
    Some((w, h, overlay))
}

fn start_stream(req: Request, shared: &Arc<Shared>, overlay: bool) {
    let n = shared.stream_clients.fetch_add(1, Ordering::SeqCst);
    if n >= shared.max_stream_clients {
        shared.stream_clients.fetch_sub(1, Ordering::SeqCst);
        return respond(
            req,
            bytes(503, "text/plain", b"too many stream clients\n".to_vec()),
        );
    }
    let sh = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("http-stream".into())
        .spawn(move || {
            let (slot, watchers) = if overlay {
                (&sh.overlay, &sh.overlay_watchers)
            } else {
                (&sh.raw, &sh.raw_watchers)
            };
            // While this client is connected, the output thread encodes this stream.
            watchers.fetch_add(1, Ordering::SeqCst);
            stream(req.into_writer(), slot, &sh.stop);
            watchers.fetch_sub(1, Ordering::SeqCst);
            sh.stream_clients.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = spawned {
        shared.stream_clients.fetch_sub(1, Ordering::SeqCst);
        log::warn!("viewer: cannot start a stream thread: {e}");
    }
}

const BOUNDARY: &str = "dlaframe";

/// Writes a multipart MJPEG response by hand (tiny_http's own chunked writer
/// would buffer frames), one flushed part per new frame.
fn stream(mut w: Box<dyn Write + Send>, slot: &Slot, stop: &AtomicBool) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
         Cache-Control: no-store\r\nPragma: no-cache\r\nConnection: close\r\n\r\n"
    );
    if w.write_all(head.as_bytes())
        .and_then(|()| w.flush())
        .is_err()
    {
        return;
    }
    let mut seen = 0;
    let mut part = Vec::with_capacity(128);
    while !stop.load(Ordering::SeqCst) {
        let Some((n, jpeg)) = slot.wait_newer(seen, Duration::from_millis(250)) else {
            continue;
        };
        seen = n;
        part.clear();
        let _ = write!(
            part,
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        let sent = w
            .write_all(&part)
            .and_then(|()| w.write_all(&jpeg))
            .and_then(|()| w.write_all(b"\r\n"))
            .and_then(|()| w.flush());
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_readers_get_only_newer_frames() {
        let slot = Slot::default();
        assert!(slot.wait_newer(0, Duration::from_millis(1)).is_none());
        slot.put(Arc::new(b"a".to_vec()));
        slot.put(Arc::new(b"b".to_vec()));
        let (n, d) = slot.wait_newer(0, Duration::from_millis(1)).unwrap();
        assert_eq!(
            (n, &d[..]),
            (2, &b"b"[..]),
            "a slow reader skips to the newest"
        );
        assert!(slot.wait_newer(n, Duration::from_millis(1)).is_none());
    }

    /// A watched stream encodes into the buffer its slot gave back, unless a
    /// client still sends that frame. (Buffers are told apart by a capacity
    /// no fresh JPEG buffer of this size would have, not by address, which
    /// the allocator may hand out again.)
    #[test]
    fn stream_frames_reuse_buffers_no_client_holds() {
        const MARK: usize = 1 << 20;
        let rgb = vec![90u8; 32 * 16 * 3];
        let encode = |spare| encode_reusing(spare, &rgb, 32, 16, 80).unwrap();
        let slot = Slot::default();
        assert!(slot.put(Arc::new(Vec::with_capacity(MARK))).is_none());
        let spare = slot.put(encode(None));
        let reused = encode(spare);
        assert_eq!(reused.capacity(), MARK, "encoded into the returned buffer");
        assert!(reused.starts_with(&[0xFF, 0xD8]), "a JPEG");

        // A client still sending the frame the slot gives back keeps it.
        assert!(slot.put(reused).is_some());
        let (_, sending) = slot.wait_newer(0, Duration::from_millis(1)).unwrap();
        let spare = slot.put(encode(None));
        assert_eq!(spare.as_ref().map(|a| a.capacity()), Some(MARK));
        let fresh = encode(spare);
        assert_ne!(fresh.capacity(), MARK, "not the buffer being sent");
        assert_eq!(sending.capacity(), MARK);
        assert!(
            sending.starts_with(&[0xFF, 0xD8]),
            "the client's frame is intact"
        );
    }

    #[test]
    fn legend_escapes_class_names() {
        let classes = [ClassInfo {
            id: 0,
            name: "<road>".into(),
            color: [1, 2, 3],
        }];
        let p = page(&classes);
        assert!(p.contains("&lt;road&gt;") && p.contains("rgb(1,2,3)"));
        assert!(!p.contains("@LEGEND@"));
    }
}
