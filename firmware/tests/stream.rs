//! `dla-edge stream` as a user runs it: real binary, real model (the small
//! test fixture for speed), real files, pipes and HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// `dla-edge stream --threads 1 --model tiny_seg.onnx --no-http ...`
fn stream() -> Command {
    let mut cmd = Command::cargo_bin("dla-edge").expect("dla-edge is built for tests");
    cmd.args(["stream", "--threads", "1", "--model"])
        .arg(fixture("tiny_seg.onnx"));
    cmd
}

fn rgb(w: u32, h: u32, seed: u32) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| ((i * 7 + seed * 31) % 251) as u8)
        .collect()
}

fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode(&rgb(w, h, seed), w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn help_teaches_sources_and_examples() {
    stream().arg("--help").assert().success().stdout(
        predicate::str::contains("rpicam-vid")
            .and(predicate::str::contains("Examples"))
            .and(predicate::str::contains("/dev/video0")),
    );
}

#[test]
fn a_directory_is_processed_completely_with_records_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for (i, name) in ["a.png", "b.jpg", "c.png"].iter().enumerate() {
        let p = images.join(name);
        image::save_buffer(
            &p,
            &rgb(96, 64, i as u32),
            96,
            64,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    }
    let rec = dir.path().join("rec");
    let out = stream()
        .arg("--source")
        .arg(&images)
        .args(["--no-http", "--json", "--record"])
        .arg(&rec)
        .args(["--record-what", "overlay,mask,labels"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "source ended: 3 frame(s) processed, 0 dropped, 0 corrupt",
        ))
        .get_output()
        .clone();
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3, "every image is processed once");
    for (i, (line, name)) in lines.iter().zip(["a.png", "b.jpg", "c.png"]).enumerate() {
        assert_eq!(line["frame"], i as u64 + 1);
        assert!(line["origin"].as_str().unwrap().ends_with(name), "{line}");
        assert_eq!(
            (line["width"].as_u64(), line["height"].as_u64()),
            (Some(96), Some(64))
        );
        assert!(line["latency_ms"]["infer"].as_f64().unwrap() > 0.0);
        assert!(line["timestamp"].as_f64().unwrap() > 1.6e9);
        let total: f64 = line["coverage"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 0.01, "coverage sums to 1: {line}");
    }
    for n in 1..=3 {
        for what in ["overlay", "mask", "labels"] {
            let p = rec.join(format!("{n:06}.{what}.png"));
            let img = image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!((img.width(), img.height()), (96, 64));
        }
    }
    let labels = image::open(rec.join("000001.labels.png"))
        .unwrap()
        .into_luma8();
    assert!(
        labels.pixels().all(|p| p.0[0] < 4),
        "class IDs of a 4-class model"
    );
}

#[test]
fn corrupt_frames_in_an_mjpeg_file_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&jpeg(64, 48, 1));
    let broken = jpeg(64, 48, 2);
    bytes.extend_from_slice(&broken[..broken.len() / 2]); // truncated
    bytes.extend_from_slice(&jpeg(64, 48, 3));
    bytes.extend_from_slice(b"this is not a JPEG at all");
    bytes.extend_from_slice(&jpeg(64, 48, 4));
    let clip = dir.path().join("clip.mjpeg");
    std::fs::write(&clip, &bytes).unwrap();
    let out = stream()
        .arg("--source")
        .arg(&clip)
        .args(["--no-http", "--json"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("3 frame(s) processed, 0 dropped, 2 corrupt")
                .and(predicate::str::contains("panicked").not()),
        )
        .get_output()
        .clone();
    assert_eq!(json_lines(&out.stdout).len(), 3);
}

#[test]
fn mjpeg_from_a_pipe_on_stdin() {
    let mut bytes = Vec::new();
    for i in 0..4 {
        bytes.extend_from_slice(&jpeg(64, 32, i));
    }
    let out = stream()
        .args(["--source", "-", "--no-http", "--json"])
        .write_stdin(bytes)
        .assert()
        .success()
        .stderr(predicate::str::contains("source ended"))
        .get_output()
        .clone();
    let lines = json_lines(&out.stdout);
    // A pipe is live: frames may be dropped while inference is busy, but the
    // last one is always processed and every frame is accounted for.
    assert!(!lines.is_empty() && lines.len() <= 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} frame(s) processed", lines.len())),
        "{err}"
    );
}

#[test]
fn demo_stops_at_max_frames() {
    let out = stream()
        .args([
            "--no-http",
            "--json",
            "--max-frames",
            "3",
            "--size",
            "128x64",
            "--fps",
            "30",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("--max-frames reached: 3 frame(s)"))
        .get_output()
        .clone();
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["source"], "demo");
    assert_eq!(lines[2]["width"], 128);
}

#[test]
fn recorded_overlays_are_blended_for_the_sink_that_asks() {
    // At --alpha 1 the overlay is the colour mask itself, so the two
    // recordings of each frame must match pixel for pixel.
    let dir = tempfile::tempdir().unwrap();
    stream()
        .args([
            "--no-http",
            "--max-frames",
            "2",
            "--size",
            "128x64",
            "--alpha",
            "1",
        ])
        .args(["--record", dir.path().to_str().unwrap()])
        .args(["--record-what", "overlay,mask"])
        .assert()
        .success();
    for n in 1..=2 {
        let read = |what: &str| {
            image::open(dir.path().join(format!("{n:06}.{what}.png")))
                .unwrap()
                .to_rgb8()
        };
        let (overlay, mask) = (read("overlay"), read("mask"));
        assert_eq!(overlay.dimensions(), (128, 64));
        assert!(
            overlay == mask,
            "frame {n}: overlay at alpha 1 is not the mask"
        );
    }
}

#[test]
fn bad_sources_and_addresses_are_named() {
    for (args, needles) in [
        (
            vec!["--source", "rtmp://cam/live"],
            vec!["rtmp", "unknown source scheme"],
        ),
        (
            vec!["--source", "rtsp://"],
            vec!["rtsp://", "no host in the URL"],
        ),
        (
            vec!["--source", "/no/such/clip.mjpeg"],
            vec!["/no/such/clip.mjpeg", "no such file"],
        ),
        (
            vec!["--source", "/dev/video97"],
            vec!["/dev/video97", "no such camera"],
        ),
        (
            vec!["--http", "localhost:80:1"],
            vec!["--http", "localhost:80:1"],
        ),
        (vec!["--size", "big"], vec!["WxH"]),
    ] {
        let mut pred = predicate::str::contains("panicked").not().boxed();
        for n in needles {
            pred = pred.and(predicate::str::contains(n)).boxed();
        }
        stream().args(&args).assert().failure().stderr(pred);
    }
}

/// A minimal HTTP/1.0 GET: status code and body.
fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, raw[end..].to_vec())
}

/// Retries `path` until it answers 200 (the first frame takes a moment).
fn get_ok(addr: &str, path: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = get(addr, path);
        if code == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} kept answering {code}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn frames_processed(addr: &str) -> u64 {
    let stats: serde_json::Value = serde_json::from_slice(&get_ok(addr, "/stats.json")).unwrap();
    stats["frames_processed"].as_u64().unwrap()
}

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dla-edge stream` of the tiny fixture with its viewer on a free port and
/// `extra` flags: the process, the viewer's address, the stderr lines up to
/// it, and the lines still to come.
fn stream_with_viewer(
    extra: &[&std::ffi::OsStr],
) -> (Killer, String, Vec<String>, mpsc::Receiver<String>) {
    let child = StdCommand::new(assert_cmd::cargo::cargo_bin("dla-edge"))
        .args(["stream", "--threads", "1", "--model"])
        .arg(fixture("tiny_seg.onnx"))
        .args(["--http", "127.0.0.1:0", "--size", "256x128", "--fps", "20"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killer(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("viewer address");
        printed.push(line.clone());
        if let Some(url) = line.strip_prefix("viewer: http://") {
            break url.trim_end_matches('/').to_string();
        }
    };
    (child, addr, printed, rx)
}

#[test]
fn web_viewer_serves_its_routes_and_stops_cleanly_on_sigterm() {
    let (mut child, addr, _, rx) = stream_with_viewer(&[]);

    let page = String::from_utf8(get_ok(&addr, "/")).unwrap();
    assert!(page.contains("/stream.mjpg") && page.contains("/raw.mjpg"));
    assert!(page.contains("stats.json"), "the page polls live stats");

    let snapshot = get_ok(&addr, "/snapshot.jpg");
    let img = image::load_from_memory(&snapshot).unwrap();
    assert_eq!((img.width(), img.height()), (256, 128));
    let labels = image::load_from_memory(&get_ok(&addr, "/labels.png")).unwrap();
    assert_eq!(labels.color(), image::ColorType::L8);
    assert_eq!((labels.width(), labels.height()), (256, 128));

    let metrics = String::from_utf8(get_ok(&addr, "/metrics")).unwrap();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample {line:?}"));
    }
    assert!(metrics.contains("# TYPE dla_frames_processed_total counter"));
    // Which model runs on what, for dashboards (and the viewer's header).
    assert!(
        metrics.contains("dla_info{model=\"fixture\",engine=\"tract\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("dla_stage_latency_seconds{stage=\"infer\",quantile=\"0.5\"}"));

    for path in [
        "/../Cargo.toml",
        "/Cargo.toml",
        "/etc/passwd",
        "/static/../../x",
    ] {
        assert_eq!(get(&addr, path).0, 404, "{path}");
    }

    // A client that connects to the stream and never reads...
    let mut stalled = TcpStream::connect(&addr).unwrap();
    write!(stalled, "GET /stream.mjpg HTTP/1.0\r\n\r\n").unwrap();
    // ...while another reads four parts of the live MJPEG stream.
    let before = frames_processed(&addr);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /stream.mjpg HTTP/1.0\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut parts = 0;
    let mut content_length = None;
    while parts < 4 {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Content-Length: ") {
            content_length = Some(v.parse::<usize>().unwrap());
        } else if l.is_empty() {
            if let Some(n) = content_length.take() {
                let mut jpeg = vec![0; n];
                r.read_exact(&mut jpeg).unwrap();
                assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
                image::load_from_memory(&jpeg).unwrap();
                parts += 1;
            }
        }
    }
    assert!(
        frames_processed(&addr) >= before + 2,
        "the stalled client does not stall the stream"
    );
    drop(stalled);

    // SIGTERM: clean shutdown and exit 0.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.starts_with("stopped:")), "{rest:?}");
}

/// A minimal HTTP/1.0 request with extra header lines: status, head, body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head, raw[end..].to_vec())
}

#[test]
fn a_viewer_with_a_login_answers_only_those_who_have_it() {
    let dir = tempfile::tempdir().unwrap();
    let login = dir.path().join("login");
    std::fs::write(&login, "ada:correct horse\n").unwrap();
    let (_child, addr, mut printed, rx) = stream_with_viewer(&[
        "--http-login".as_ref(),
        login.as_os_str(),
        "--http-open".as_ref(),
        "/metrics".as_ref(),
    ]);
    // ada:correct horse, and ada:wrong.
    let basic = "Authorization: Basic YWRhOmNvcnJlY3QgaG9yc2U=\r\n";
    let wrong = "Authorization: Basic YWRhOndyb25n\r\n";
    // The first frame, seen with the login.
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(&addr, "GET", "/snapshot.jpg", basic, "").0 != 200 {
        assert!(Instant::now() < deadline, "no frame with the login");
        std::thread::sleep(Duration::from_millis(100));
    }
    for path in [
        "/",
        "/index.html",
        "/stats.json",
        "/snapshot.jpg",
        "/raw.jpg",
        "/labels.png",
        "/stream.mjpg",
        "/raw.mjpg",
    ] {
        let (code, _, body) = request(&addr, "GET", path, "", "");
        assert_eq!(code, 401, "{path} without a login");
        assert!(
            !String::from_utf8_lossy(&body).contains("frames_processed"),
            "{path}"
        );
        assert_eq!(
            request(&addr, "GET", path, wrong, "").0,
            401,
            "{path} with a wrong one"
        );
        if !path.ends_with(".mjpg") {
            assert_eq!(
                request(&addr, "GET", path, basic, "").0,
                200,
                "{path} with it"
            );
        }
    }
    // The page without a login is the form, asking for a user and password.
    let (_, _, form) = request(&addr, "GET", "/", "", "");
    let form = String::from_utf8(form).unwrap();
    assert!(
        form.contains(r#"action="/login""#) && form.contains(r#"name="user""#),
        "{form}"
    );
    // The form's login sets a cookie that opens every route; a wrong one does not.
    let post = "Content-Type: application/x-www-form-urlencoded\r\n";
    let (code, _, _) = request(&addr, "POST", "/login", post, "user=ada&secret=wrong");
    assert_eq!(code, 401);
    let (code, head, _) = request(
        &addr,
        "POST",
        "/login",
        post,
        "user=ada&secret=correct+horse",
    );
    assert_eq!(code, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a login cookie")
        .to_string();
    assert!(
        !cookie.contains("horse"),
        "the cookie is not the password: {cookie}"
    );
    let with_cookie = format!("Cookie: {cookie}\r\n");
    assert_eq!(
        request(&addr, "GET", "/stats.json", &with_cookie, "").0,
        200
    );
    // /metrics was left open, and counts the wrong attempts (9 above).
    let (code, _, metrics) = request(&addr, "GET", "/metrics", "", "");
    assert_eq!(code, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("dla_viewer_login_failures_total 9"),
        "{metrics}"
    );
    // The secret is never printed.
    std::thread::sleep(Duration::from_millis(200));
    printed.extend(rx.try_iter());
    assert!(printed.iter().all(|l| !l.contains("horse")), "{printed:?}");
}
