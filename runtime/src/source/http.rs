//! HTTP MJPEG (IP cameras, another dla-edge's viewer): a minimal HTTP/1.0
//! client on a std `TcpStream` that reads a `multipart/x-mixed-replace` body
//! (or one `image/jpeg` per request) and cuts it into JPEG frames with the
//! [`MjpegSplitter`]; part headers between frames are skipped.
//!
//! Asking for HTTP/1.0 keeps servers from answering with chunked encoding.
//! Only `http://` is supported (no TLS); cameras on a LAN rarely offer more.
//! Once connected, a lost connection is retried with back-off forever: the
//! stream goes on when the camera comes back.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime};

use super::camera::Backoff;
use super::jpeg::JpegDecoder;
use super::mjpeg::{MjpegSplitter, Piece};
use super::{Frame, Source};
use crate::error::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADER_BYTES: usize = 16 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// Frames from an HTTP MJPEG stream.
pub struct HttpMjpegSource {
    url: String,
    host: String,
    port: u16,
    path: String,
    stream: Option<TcpStream>,
    ever_connected: bool,
    backoff: Backoff,
    splitter: MjpegSplitter,
    decoder: JpegDecoder,
}

/// Splits `http://host[:port][/path]` into its parts.
fn parse_url(url: &str) -> std::result::Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// URLs are supported".to_string())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p.parse().map_err(|_| format!("bad port {p:?}"))?;
            (h, port)
        }
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err("no host in the URL".into());
    }
    Ok((host.to_string(), port, path.to_string()))
}

impl HttpMjpegSource {
    /// A source for `url`; connects on the first frame.
    pub fn new(url: &str) -> Result<HttpMjpegSource> {
        let (host, port, path) = parse_url(url).map_err(|reason| Error::Source {
            name: url.to_string(),
            reason,
        })?;
        Ok(HttpMjpegSource {
            url: url.to_string(),
            host,
            port,
            path,
            stream: None,
            ever_connected: false,
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(5)),
            splitter: MjpegSplitter::new(false),
            decoder: JpegDecoder::new(),
        })
    }

    fn fail(&self, reason: String) -> Error {
        Error::Source {
            name: self.url.clone(),
            reason,
        }
    }

    /// Connects, sends the request and reads the response head; body bytes
    /// that came with the head go to the splitter.
    fn connect(&mut self) -> Result<TcpStream> {
        let target = (self.host.as_str(), self.port);
        let addrs = target
            .to_socket_addrs()
            .map_err(|e| self.fail(format!("cannot resolve {}: {e}", self.host)))?;
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = stream.ok_or_else(|| {
            self.fail(format!(
                "cannot connect to {}:{}: {}",
                self.host,
                self.port,
                last.map_or("no address".to_string(), |e| e.to_string())
            ))
        })?;
        let io = |e: std::io::Error| self.fail(format!("connection failed: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: dla-edge\r\nAccept: multipart/x-mixed-replace, image/jpeg\r\n\r\n",
            self.path, self.host
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = stream.read(&mut chunk).map_err(io)?;
            if n == 0 {
                return Err(self.fail("connection closed before the response header".into()));
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if head.len() > MAX_HEADER_BYTES {
                return Err(self.fail("response header too long".into()));
            }
        };
        let status_line = head
            .split(|&b| b == b'\n')
            .next()
            .map(|l| String::from_utf8_lossy(l).trim().to_string())
            .unwrap_or_default();
        let code = status_line.split_whitespace().nth(1).unwrap_or("");
        if code != "200" {
            return Err(self.fail(format!("server answered {status_line:?}")));
        }
        self.splitter = MjpegSplitter::new(false);
        self.splitter.push(&head[end..]);
        Ok(stream)
    }
}

impl Source for HttpMjpegSource {
    fn name(&self) -> &str {
        &self.url
    }

    fn is_live(&self) -> bool {
        true
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        let t0 = Instant::now();
        loop {
            if let Some(piece) = self.splitter.next_piece() {
                match piece {
                    Piece::Jpeg(jpeg) => {
                        self.backoff.reset();
                        frame.capture = t0.elapsed();
                        frame.timestamp = SystemTime::now();
                        frame.origin.clear();
                        return self.decoder.decode(&self.url, jpeg, frame).map(|()| true);
                    }
                    Piece::Corrupt(reason) => {
                        return Err(Error::Corrupt {
                            name: self.url.clone(),
                            reason,
                        })
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                match self.connect() {
                    Ok(s) => {
                        self.ever_connected = true;
                        self.stream = Some(s);
                    }
                    Err(e) if !self.ever_connected => return Err(e),
                    Err(e) => {
                        let wait = self.backoff.next_delay();
                        log::warn!("{e}; retrying in {wait:?}");
                        std::thread::sleep(wait);
                    }
                }
                continue;
            };
            let buf = self.splitter.read_buffer(READ_CHUNK);
            match stream.read(buf) {
                Ok(0) => {
                    self.splitter.commit(READ_CHUNK, 0);
                    log::info!("{}: server closed the stream; reconnecting", self.url);
                    self.stream = None;
                }
                Ok(n) => self.splitter.commit(READ_CHUNK, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    self.splitter.commit(READ_CHUNK, 0)
                }
                Err(e) => {
                    self.splitter.commit(READ_CHUNK, 0);
                    log::warn!("{}: {e}; reconnecting", self.url);
                    self.stream = None;
                    std::thread::sleep(self.backoff.next_delay());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn url_parts() {
        assert_eq!(
            parse_url("http://cam.local:8081/video?x=1").unwrap(),
            ("cam.local".into(), 8081, "/video?x=1".into())
        );
        assert_eq!(
            parse_url("http://10.0.0.2").unwrap(),
            ("10.0.0.2".into(), 80, "/".into())
        );
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://host:port/").is_err());
        assert!(parse_url("http://u:p@host/").is_err());
    }

    #[test]
    fn reads_a_multipart_stream_from_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let jpeg = super::super::jpeg::tests::gradient_jpeg(32, 16, 5);
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let n = conn.read(&mut req).unwrap();
            assert!(req[..n].starts_with(b"GET /stream.mjpg HTTP/1.0\r\n"));
            conn.write_all(
                b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=f\r\n\r\n",
            )
            .unwrap();
            for _ in 0..3 {
                write!(
                    conn,
                    "--f\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                )
                .unwrap();
                // Split the frame to exercise partial reads.
                conn.write_all(&jpeg[..10]).unwrap();
                conn.flush().unwrap();
                conn.write_all(&jpeg[10..]).unwrap();
                conn.write_all(b"\r\n").unwrap();
            }
        });
        let mut src =
            HttpMjpegSource::new(&format!("http://127.0.0.1:{port}/stream.mjpg")).unwrap();
        let mut f = Frame::default();
        for _ in 0..3 {
            assert!(src.next_frame(&mut f).unwrap());
            assert_eq!((f.width, f.height), (32, 16));
        }
        server.join().unwrap();
    }

    /// Serves `frames` JPEGs as one multipart response on the next connection.
    fn serve(listener: &TcpListener, jpeg: &[u8], frames: usize) {
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = [0u8; 1024];
        let _ = conn.read(&mut req).unwrap();
        conn.write_all(
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=f\r\n\r\n",
        )
        .unwrap();
        for _ in 0..frames {
            write!(conn, "--f\r\nContent-Type: image/jpeg\r\n\r\n").unwrap();
            conn.write_all(jpeg).unwrap();
            conn.write_all(b"\r\n").unwrap();
        }
    }

    /// A camera that goes away (connection closed, then refused) is retried
    /// with back-off, and the stream goes on when it comes back.
    #[test]
    fn a_camera_that_goes_away_is_retried_until_it_returns() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let jpeg = super::super::jpeg::tests::gradient_jpeg(32, 16, 5);
        let gone = Duration::from_millis(700);
        let server = std::thread::spawn(move || {
            serve(&listener, &jpeg, 2);
            // Closing the listener too: reconnects are refused while it is away.
            drop(listener);
            std::thread::sleep(gone);
            let listener = TcpListener::bind(addr).unwrap();
            serve(&listener, &jpeg, 2);
        });
        let mut src = HttpMjpegSource::new(&format!("http://{addr}/")).unwrap();
        let mut f = Frame::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(src.next_frame(&mut f).unwrap());
            assert_eq!((f.width, f.height), (32, 16));
        }
        // The last two frames can only come from the second server.
        assert!(t0.elapsed() >= gone, "{:?}", t0.elapsed());
        server.join().unwrap();
    }

    #[test]
    fn an_unreachable_camera_is_a_clear_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut src = HttpMjpegSource::new(&format!("http://127.0.0.1:{port}/")).unwrap();
        let err = src
            .next_frame(&mut Frame::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot connect") && err.contains(&port.to_string()),
            "{err}"
        );
    }
}
