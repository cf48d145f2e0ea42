//! `dla-edge run` and `check-config` as the service runs them: real binary,
//! real configuration files (the board examples among them), the built-in
//! model on the demo camera, rules driving logged pins, real HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dla_edge() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("dla-edge"))
}

/// Writes `text` as a config file in a fresh directory.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn every_board_example_passes_check_config() {
    let boards = root().join("firmware/boards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&boards).unwrap() {
        let path = entry.unwrap().path();
        // The examples name where the bundle installs models; here they are in models/.
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "/usr/share/dla-edge/models/",
            &format!("{}/", root().join("models").display()),
        );
        let (_dir, file) = config_file(&text);
        let out = dla_edge()
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let board = path.file_stem().unwrap().to_str().unwrap();
        assert!(stdout.contains(&format!("board {board}")), "{stdout}");
        checked += 1;
    }
    assert_eq!(checked, 4, "rpi4, rpi5, jetson-orin-nano, jetson-nano");
}

#[test]
fn check_config_names_every_bad_event_key_before_anything_connects() {
    let (_dir, file) = config_file(
        r#"
        [[rules]]
        name = "gate"
        class = "car"
        above = 0.1
        device_class = "doorbell"
        [[rules]]
        name = "Gate"
        class = "car"
        above = 0.2
        [mqtt]
        url = "mqtt://user:secret@broker.local"
        ca_file = "/nonexistent/ca.pem"
        coverage_every = "10ms"
        coverage_classes = ["pedestrian"]
        password_file = "/nonexistent/password"
        [[webhooks]]
        url = "ftp://example.com/hook"
        events = ["triggered", "exploded"]
        timeout = "soon"
        "#,
    );
    let out = dla_edge()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "rules[0].device_class: \"doorbell\" is not a Home Assistant binary_sensor device class",
        "rules[1].name: \"Gate\" gives the same topic and entity ID (\"gate\") as rules[0]",
        "mqtt.url: \"mqtt://user:secret@broker.local\": no credentials in the URL",
        "mqtt.password_file: /nonexistent/password: cannot read",
        "mqtt.coverage_every: at least 100ms",
        "mqtt.coverage_classes: \"pedestrian\" is not a class of the model",
        "webhooks[0].url: \"ftp://example.com/hook\" is not an http:// or https:// URL",
        "webhooks[0].events: \"exploded\" is not one of triggered, released",
        "webhooks[0].timeout: \"soon\" is not a duration",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn check_config_says_where_frames_come_from_and_events_go() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
    let (_d, file) = config_file(&format!(
        "[source]\nuri = \"rtsp://admin:camPW@192.168.1.64/Streaming/Channels/102\"\n\
         rtsp_transport = \"udp\"\n\
         [mqtt]\nurl = \"mqtts://broker.local\"\nusername = \"board\"\npassword_file = \"{}\"\n\
         discovery = true\n[[webhooks]]\nurl = \"https://user:pw@hooks.example.com/x?token=1\"\n",
        dir.path().join("password").display()
    ));
    let out = dla_edge()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("events: mqtts://broker.local:8883 as"),
        "{stdout}"
    );
    assert!(
        stdout.contains("with a login, Home Assistant discovery"),
        "{stdout}"
    );
    assert!(
        stdout.contains("webhook(s) https://hooks.example.com"),
        "{stdout}"
    );
    assert!(
        stdout.contains("source rtsp://192.168.1.64/Streaming/Channels/102 (RTP over udp)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("s3cret") && !stdout.contains("pw@") && !stdout.contains("token"),
        "{stdout}"
    );
    assert!(!stdout.contains("camPW"), "{stdout}");
}

#[test]
fn check_config_names_the_file_and_every_bad_key() {
    let (_dir, file) =
        config_file("[source]\nfps = -1\n[[rules]]\nclass = \"pedestrian\"\nabove = 0.1\n");
    let out = dla_edge()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("source.fps: -1 is not a frame rate"), "{err}");
    assert!(
        err.contains("rules[0].class: \"pedestrian\" is not a class"),
        "{err}"
    );

    let missing = dla_edge()
        .args(["check-config", "--config", "/nonexistent/dla-edge.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("/nonexistent/dla-edge.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn pins_without_gpio_support_are_refused_with_the_remedy() {
    if cfg!(feature = "gpio") {
        return;
    }
    let (_dir, file) = config_file(
        "[viewer]\nlisten = \"off\"\n[[rules]]\nclass = \"road\"\nabove = 0.1\npin = 17\n",
    );
    let out = dla_edge()
        .args(["run", "--max-frames", "1", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--features gpio") && err.contains("chip = \"log\""),
        "{err}"
    );
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The demo's streets always show road: a rule on road triggers, drives its
/// (logged) pin, and the event reaches JSON lines, the viewer and the log;
/// SIGTERM stops the service cleanly with the pin released.
#[test]
fn rules_fire_on_the_demo_and_reach_json_viewer_and_pins() {
    let (dir, file) = config_file(
        r#"
        board = "test"
        [source]
        size = "256x128"
        fps = 20
        [viewer]
        listen = "127.0.0.1:0"
        [gpio]
        chip = "log"
        [status_led]
        pin = 27
        period = "200ms"
        [[rules]]
        name = "road ahead"
        class = "road"
        region = [0.0, 0.6, 1.0, 1.0]
        above = 0.2
        frames = 2
        hold = "1s"
        pin = 17
        "#,
    );
    let mut child = dla_edge()
        .args(["run", "--json", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(("err", line));
        }
    });
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(("out", line));
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut addr, mut event, mut frames) = (None, None, 0);
    let mut log = Vec::new();
    while (addr.is_none() || event.is_none() || frames < 3) && Instant::now() < deadline {
        let Ok((stream, line)) = rx.recv_timeout(Duration::from_secs(5)) else {
            continue;
        };
        if stream == "err" {
            if let Some(url) = line.strip_prefix("viewer: http://") {
                addr = Some(url.trim_end_matches('/').to_string());
            }
            log.push(line);
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v.get("event").is_some() {
            event = Some(v);
        } else {
            assert!(v["coverage"]["road"].as_f64().is_some(), "{v}");
            frames += 1;
        }
    }
    let addr = addr.expect("viewer address");
    let event = event.unwrap_or_else(|| panic!("no event; log:\n{}", log.join("\n")));
    assert_eq!(event["event"], "triggered");
    assert_eq!(event["rule"], "road ahead");
    assert!(event["coverage"].as_f64().unwrap() > 0.2, "{event}");

    let stats: serde_json::Value = serde_json::from_str(&get(&addr, "/stats.json")).unwrap();
    let events = stats["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.as_str().unwrap().contains("\"road ahead\" triggered")),
        "{stats}"
    );
    assert!(get(&addr, "/metrics").contains("dla_events_total 1"));
    assert!(get(&addr, "/").contains("Events"));

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    // The readers end at the pipes' end of file.
    while let Ok((stream, line)) = rx.recv_timeout(Duration::from_secs(10)) {
        if stream == "err" {
            log.push(line);
        }
    }
    let log = log.join("\n");
    assert!(log.contains("rule output line 17: high"), "{log}");
    assert!(log.contains("status LED line 27: high"), "{log}");
    assert!(
        log.rfind("rule output line 17: low") > log.find("rule output line 17: high"),
        "the pin is released at shutdown:\n{log}"
    );
    drop(dir);
}

/// Under systemd (`NOTIFY_SOCKET`), the service first asks for more start-up
/// time with a status line (a first TensorRT start takes minutes), then says
/// READY once frames flow; here a real datagram socket plays systemd.
#[test]
fn systemd_hears_more_time_then_ready() {
    use std::os::unix::net::UnixDatagram;
    let (dir, file) = config_file("[source]\nsize = \"256x128\"\n[viewer]\nlisten = \"off\"\n");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let out = dla_edge()
        .args(["run", "--max-frames", "3", "--config"])
        .arg(&file)
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("WATCHDOG_USEC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    socket.set_nonblocking(true).unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let extend = messages
        .iter()
        .position(|m| m.contains("EXTEND_TIMEOUT_USEC=60000000"))
        .unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC in {messages:?}"));
    assert!(
        messages[extend].contains("STATUS=loading dla-tiny-seg-int8 on tract"),
        "{messages:?}"
    );
    let ready = messages
        .iter()
        .position(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {messages:?}"));
    assert!(extend < ready, "{messages:?}");
    assert!(messages[ready].contains("STATUS=running"), "{messages:?}");
}
