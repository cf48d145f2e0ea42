//! RTSP cameras, against a real RTSP server on 127.0.0.1: Debian's GStreamer
//! RTSP server (tests/rtsp_server.py) serving a street scene as live H.264
//! and MJPEG. Labels are checked against `dla-edge segment` on the same
//! picture, so a test passes only if the video really was decoded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dla_e2e::{bin, free_port, root, run_ok, s, wait_until};
use serde_json::Value;

/// Debian's Python, which has python3-gi (a venv or pyenv python does not).
fn system_python() -> PathBuf {
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args([
                "-c",
                "import gi; gi.require_version('GstRtspServer', '1.0')",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return PathBuf::from(p);
        }
    }
    panic!(
        "no Python with GStreamer's RTSP server: apt install python3-gi gir1.2-gst-rtsp-server-1.0 \
         gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly (.ci/run does)"
    );
}

/// The RTSP server, killed on drop.
struct Server {
    child: Child,
    port: u16,
    args: Vec<String>,
}

impl Server {
    fn start(image: &Path, port: u16, login: Option<(&str, &str)>) -> Server {
        let mut args = vec![
            root().join("tests/rtsp_server.py").display().to_string(),
            "--port".into(),
            port.to_string(),
            "--image".into(),
            image.display().to_string(),
            "--size".into(),
            "512x256".into(),
        ];
        if let Some((u, p)) = login {
            args.extend(["--user".into(), u.into(), "--password".into(), p.into()]);
        }
        let child = Self::spawn(&args);
        Server { child, port, args }
    }

    fn spawn(args: &[String]) -> Child {
        let mut child = Command::new(system_python())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the RTSP server");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "RTSP server: {line:?}");
        child
    }

    fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{mount}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.args);
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// The street sample at the server's size, and `dla-edge segment`'s labels of it.
fn scene(dir: &Path) -> (PathBuf, image::GrayImage) {
    let street = image::open(root().join("models/samples/street-0.jpg")).unwrap();
    let small = street.resize_exact(512, 256, image::imageops::FilterType::Triangle);
    let path = dir.join("street.jpg");
    small.save(&path).unwrap();
    let out = dir.join("reference");
    run_ok(
        "dla-edge",
        &[
            "segment",
            "--input",
            s(&path),
            "--out",
            s(&out),
            "--visualize",
            "labels",
        ],
    );
    let labels = image::open(out.join("street.labels.png"))
        .unwrap()
        .to_luma8();
    (path, labels)
}

fn agreement(a: &image::GrayImage, b: &image::GrayImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let same = a.pixels().zip(b.pixels()).filter(|(x, y)| x == y).count();
    same as f64 / (a.width() * a.height()) as f64
}

/// `dla-edge stream` from `url`: JSON lines, recorded labels, stderr.
fn stream(url: &str, dir: &Path, extra: &[&str]) -> (Vec<Value>, String, bool) {
    let rec = dir.join("rec");
    let out = Command::new(bin("dla-edge"))
        .args([
            "stream",
            "--source",
            url,
            "--no-http",
            "--json",
            "--record",
            s(&rec),
            "--record-what",
            "labels",
        ])
        .args(extra)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

fn last_labels(dir: &Path) -> image::GrayImage {
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(dir.join("rec"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".labels.png"))
        .collect();
    pngs.sort();
    image::open(pngs.last().expect("recorded labels"))
        .unwrap()
        .to_luma8()
}

#[test]
fn h264_and_mjpeg_cameras_give_the_labels_of_the_picture_they_show() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, reference) = scene(tmp.path());
    let server = Server::start(&image, free_port(), None);
    for (mount, transport, least) in [
        ("h264", "tcp", 0.97),
        ("h264", "udp", 0.97),
        ("mjpeg", "tcp", 0.98),
    ] {
        let dir = tmp.path().join(format!("{mount}-{transport}"));
        let (lines, err, ok) = stream(
            &server.url(mount),
            &dir,
            &["--max-frames", "8", "--rtsp-transport", transport],
        );
        assert!(ok, "{mount}: {err}");
        assert_eq!(lines.len(), 8, "{mount}: {err}");
        assert_eq!(
            (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
            (Some(512), Some(256))
        );
        let codec = if mount == "h264" { "h264" } else { "jpeg" };
        let said = format!("streaming {codec} over {transport}, 512x256");
        assert!(err.contains(&said), "{err}");
        let agree = agreement(&last_labels(&dir), &reference);
        assert!(
            agree >= least,
            "{mount}: {:.2} % of pixels agree with the still image's labels",
            100.0 * agree
        );
        eprintln!(
            "{mount} over {transport}: {:.2} % label agreement with the still image",
            100.0 * agree
        );
    }
}

#[test]
fn a_stream_without_video_or_with_another_codec_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = scene(tmp.path());
    let server = Server::start(&image, free_port(), None);
    for (mount, reason) in [
        ("audio", "the stream has no video track"),
        (
            "vp8",
            "video codec \"vp8\" is not supported (H.264 and MJPEG are)",
        ),
    ] {
        let (lines, err, ok) = stream(&server.url(mount), &tmp.path().join(mount), &[]);
        assert!(!ok && lines.is_empty(), "{mount}: {err}");
        assert!(err.contains(reason), "{mount}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn digest_credentials_are_used_never_shown_and_a_wrong_password_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = scene(tmp.path());
    let server = Server::start(&image, free_port(), Some(("viewer", "s3cret pass")));
    let good = format!("rtsp://viewer:s3cret%20pass@127.0.0.1:{}/h264", server.port);
    let (lines, err, ok) = stream(&good, &tmp.path().join("good"), &["--max-frames", "3"]);
    assert!(ok, "{err}");
    assert_eq!(lines.len(), 3);
    let shown = format!("rtsp://127.0.0.1:{}/h264", server.port);
    assert_eq!(
        lines[0]["source"],
        shown.as_str(),
        "JSON lines name the camera without credentials"
    );
    assert!(!err.contains("s3cret") && !err.contains("viewer:"), "{err}");

    let bad = format!("rtsp://viewer:wrong@127.0.0.1:{}/h264", server.port);
    let (_, err, ok) = stream(&bad, &tmp.path().join("bad"), &["--max-frames", "3"]);
    assert!(!ok);
    assert!(
        err.contains("wrong user name or password (401 Unauthorized)"),
        "{err}"
    );
    assert!(!err.contains("wrong@"), "{err}");

    let missing = format!(
        "rtsp://viewer:s3cret%20pass@127.0.0.1:{}/nothing",
        server.port
    );
    let (_, err, ok) = stream(
        &missing,
        &tmp.path().join("missing"),
        &["--max-frames", "3"],
    );
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
}

fn get(port: u16, path: &str) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn a_camera_that_is_late_restarts_or_stalls_is_reconnected_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = scene(tmp.path());
    // dla-edge starts first: the camera is not up yet.
    let port = free_port();
    let viewer = free_port();
    let edge = Command::new(bin("dla-edge"))
        .args([
            "stream",
            "--source",
            &format!("rtsp://127.0.0.1:{port}/h264"),
        ])
        .args(["--http", &format!("127.0.0.1:{viewer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut server = Server::start(&image, port, None);
    let processed = |port| {
        let stats = get(port, "/stats.json");
        let body = stats.split("\r\n\r\n").nth(1).unwrap_or("{}").to_string();
        serde_json::from_str::<Value>(&body)
            .map_or(0, |v| v["frames_processed"].as_u64().unwrap_or(0))
    };
    let long = Duration::from_secs(60);
    wait_until("first frames", long, || {
        TcpStream::connect(("127.0.0.1", viewer)).is_ok() && processed(viewer) >= 5
    });

    // The camera reboots: killed and started again on the same port.
    server.restart();
    let before = processed(viewer);
    wait_until("frames after the restart", long, || {
        processed(viewer) >= before + 5
    });
    let metrics = get(viewer, "/metrics");
    assert!(
        metrics.contains("dla_source_reconnects_total 1"),
        "{metrics}"
    );

    // The camera stops sending without closing the connection.
    server.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(7));
    let stats = get(viewer, "/stats.json");
    assert!(
        stats.contains("stalled") || stats.contains("timed out") || stats.contains("unreachable"),
        "{stats}"
    );
    server.signal(libc::SIGCONT);
    let before = processed(viewer);
    wait_until("frames after the stall", long, || {
        processed(viewer) >= before + 5
    });

    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(edge.id() as i32, libc::SIGTERM) };
    let out = edge.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.matches("streaming h264 over tcp, 512x256").count() >= 3,
        "connected, after the restart, after the stall: {err}"
    );
    assert!(err.contains("no frame for 5 s (stalled)"), "{err}");
    assert!(
        err.to_lowercase().contains("refused"),
        "the late camera was retried and said so: {err}"
    );
}

#[test]
fn a_resolution_change_mid_stream_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = scene(tmp.path());
    let server = Server::start(&image, free_port(), None);
    let (lines, err, ok) = stream(&server.url("switch"), tmp.path(), &["--duration", "8"]);
    assert!(ok, "{err}");
    let sizes: std::collections::BTreeSet<(u64, u64)> = lines
        .iter()
        .map(|l| (l["width"].as_u64().unwrap(), l["height"].as_u64().unwrap()))
        .collect();
    assert!(
        sizes.contains(&(512, 256)) && sizes.contains(&(1024, 512)),
        "{sizes:?}\n{err}"
    );
    // The server's RTCP sender reports give each frame the time it was
    // made, on this machine's clock: shortly before it arrived.
    let ahead: Vec<f64> = lines
        .iter()
        .filter_map(|l| Some(l["timestamp"].as_f64()? - l["camera_time"].as_f64()?))
        .collect();
    assert!(
        ahead.len() > lines.len() / 2,
        "{} of {} lines",
        ahead.len(),
        lines.len()
    );
    assert!(ahead.iter().all(|&d| (0.0..1.0).contains(&d)), "{ahead:?}");
}
