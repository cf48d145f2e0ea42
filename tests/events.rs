//! Events out, against real components on 127.0.0.1: a mosquitto broker
//! started here (persistence on, as Home Assistant's add-on has it), a real
//! MQTT subscriber, and HTTP receivers for webhooks. `dla-edge run` drives
//! rules from the demo source or from frames this test writes to its stdin.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dla_e2e::{bin, free_port, root, wait_until};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// A mosquitto broker on a loopback port; SIGTERM on stop (it saves its
/// sessions and retained messages), SIGKILL on drop.
struct Broker {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(dir: &Path, login: Option<(&str, &str)>) -> Broker {
        Self::start_with(dir, login, "")
    }

    /// `extra` goes into mosquitto.conf after the listener line.
    fn start_with(dir: &Path, login: Option<(&str, &str)>, extra: &str) -> Broker {
        let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("mosquitto is not installed: apt install mosquitto (.ci/run installs it)");
        let port = free_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\n{extra}persistence true\npersistence_location {}/\n",
            dir.display()
        );
        // SAFETY: getuid(2) has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            // As root mosquitto would switch to user `mosquitto`, which cannot
            // read this test's private files (keys, persistence).
            conf += "user root\n";
        }
        match login {
            Some((user, password)) => {
                let file = dir.join("passwords");
                let ok = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([user, password])
                    .status()
                    .expect("mosquitto_passwd (package mosquitto)");
                assert!(ok.success());
                conf += &format!("allow_anonymous false\npassword_file {}\n", file.display());
            }
            None => conf += "allow_anonymous true\n",
        }
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut b = Broker {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        b.run(exe);
        b
    }

    fn run(&mut self, exe: &str) {
        let log = std::fs::File::create(self.dir.join("mosquitto.log")).unwrap();
        self.child = Some(
            Command::new(exe)
                .arg("-c")
                .arg(self.dir.join("mosquitto.conf"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start mosquitto"),
        );
        let port = self.port;
        wait_until("mosquitto to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
        }
    }

    fn restart(&mut self) {
        let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap();
        self.run(exe);
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One message as the subscriber saw it.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    payload: Vec<u8>,
    retained: bool,
    at: SystemTime,
}

impl Received {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// A real MQTT client with a persistent session subscribed to everything;
/// it reconnects by itself when the broker restarts.
struct Subscriber {
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Subscriber {
    fn start(port: u16, login: Option<(&str, &str)>) -> Subscriber {
        Self::start_as(port, login, "e2e-subscriber")
    }

    fn start_as(port: u16, login: Option<(&str, &str)>, id: &str) -> Subscriber {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(8 << 20, 8 << 20);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (client, mut connection) = Client::new(o, 16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        std::thread::spawn(move || {
            let client: Client = client;
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client.try_subscribe("#", QoS::AtLeastOnce).unwrap();
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => out.lock().unwrap().push(Received {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retained: p.retain,
                        at: SystemTime::now(),
                    }),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Subscriber { seen }
    }

    fn all(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits for the first message matching `pred`.
    fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Received) -> bool) -> Received {
        let mut found = None;
        wait_until(what, timeout, || {
            found = self.all().into_iter().find(|m| pred(m));
            found.is_some()
        });
        found.unwrap()
    }

    fn events(&self, topic: &str) -> Vec<Value> {
        self.all()
            .iter()
            .filter(|m| m.topic == topic)
            .map(Received::json)
            .collect()
    }
}

/// `dla-edge run` with `config`, JSON lines on stdout collected with the
/// time each arrived.
struct Edge {
    child: Child,
    lines: Arc<Mutex<Vec<(Value, SystemTime)>>>,
    stderr: PathBuf,
}

impl Edge {
    fn start(dir: &Path, name: &str, config: &str, stdin: Stdio) -> Edge {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, config).unwrap();
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = Command::new(bin("dla-edge"))
            .args(["run", "--json", "--config"])
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start dla-edge");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    out.lock().unwrap().push((v, SystemTime::now()));
                }
            }
        });
        Edge {
            child,
            lines,
            stderr,
        }
    }

    /// Rule events it printed, with when.
    fn events(&self) -> Vec<(Value, SystemTime)> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|(v, _)| v.get("event").is_some())
            .cloned()
            .collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&mut self, signal: i32) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                t0.elapsed() < timeout,
                "dla-edge did not stop:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mqtt_config(url: &str, rules: &str, extra: &str) -> String {
    format!(
        "[source]\nuri = \"demo\"\nfps = 10\n[viewer]\nlisten = \"off\"\n{rules}\n\
         [mqtt]\nurl = \"{url}\"\ndevice = \"test-cam\"\ndiscovery = true\n\
         coverage_every = \"500ms\"\n{extra}\n"
    )
}

const ROAD_RULE: &str = "[[rules]]\nname = \"Road ahead\"\nclass = \"road\"\nabove = 0.2\n\
                         device_class = \"occupancy\"\n";
const CARS_RULE: &str = "[[rules]]\nname = \"cars\"\nclass = \"car\"\nabove = 0.6\n";

#[test]
fn home_assistant_sees_the_rule_fire_and_the_board_go_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path(), None);
    let sub = Subscriber::start(broker.port, None);
    let config = mqtt_config(
        &broker.url(),
        &format!("{ROAD_RULE}{CARS_RULE}"),
        "snapshot = true\n",
    );
    let mut edge = Edge::start(tmp.path(), "first", &config, Stdio::null());

    let long = Duration::from_secs(60);
    sub.wait("availability online", long, |m| {
        m.topic == "dla-edge/test-cam/availability" && m.payload == b"online"
    });
    for (topic, what) in [
        (
            "homeassistant/binary_sensor/test-cam/road_ahead/config",
            "occupancy",
        ),
        (
            "homeassistant/binary_sensor/test-cam/cars/config",
            "occupancy",
        ),
        ("homeassistant/sensor/test-cam/coverage_road/config", "%"),
        ("homeassistant/sensor/test-cam/coverage_car/config", "%"),
    ] {
        let m = sub.wait(topic, long, |m| m.topic == topic);
        let c = m.json();
        assert!(m.text().contains(what), "{topic}: {}", m.text());
        assert_eq!(c["availability_topic"], "dla-edge/test-cam/availability");
        assert_eq!(c["device"]["name"], "test-cam");
        assert!(
            c["device"]["model"].as_str().unwrap().contains("dla-tiny"),
            "{c}"
        );
    }
    let rule = sub
        .wait("the rule's discovery", long, |m| {
            m.topic.ends_with("road_ahead/config")
        })
        .json();
    assert_eq!(
        rule["state_topic"],
        "dla-edge/test-cam/rules/road_ahead/state"
    );

    // The demo street has about 37 % road: the rule triggers on the first frames.
    let event = sub.wait("a triggered event", long, |m| {
        m.topic == "dla-edge/test-cam/events" && m.json()["event"] == "triggered"
    });
    let body = event.json();
    assert_eq!(body["rule"], "Road ahead");
    assert_eq!(body["class"], "road");
    assert_eq!(body["device"], "test-cam");
    assert!(body["coverage"].as_f64().unwrap() > 0.2, "{body}");
    let fired: SystemTime = body["time"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_millis(t.as_millisecond() as u64))
        .expect("an RFC 3339 time");
    let delay = event.at.duration_since(fired).unwrap_or_default();
    assert!(
        delay < Duration::from_secs(2),
        "the event took {delay:?} to reach the subscriber"
    );
    sub.wait("state ON", long, |m| {
        m.topic == "dla-edge/test-cam/rules/road_ahead/state" && m.payload == b"ON"
    });
    sub.wait("coverage", long, |m| {
        m.topic == "dla-edge/test-cam/coverage"
            && m.json()["classes"]["road"].as_f64().unwrap_or(0.0) > 20.0
    });
    let snapshot = sub.wait("the trigger snapshot", long, |m| {
        m.topic == "dla-edge/test-cam/snapshot"
    });
    assert!(snapshot.payload.starts_with(&[0xFF, 0xD8]), "a JPEG");
    let jpeg = image::load_from_memory(&snapshot.payload).expect("a JPEG that decodes");
    assert!(jpeg.width() >= 256, "the frame's size");
    sub.wait("the camera entity", long, |m| {
        m.topic == "homeassistant/camera/test-cam/snapshot/config"
    });
    let printed = edge.events();
    assert_eq!(
        printed[0].0["event"], "triggered",
        "stdout agrees: {printed:?}"
    );

    // kill -9: the broker publishes the last will.
    let killed = SystemTime::now();
    edge.signal(libc::SIGKILL);
    edge.wait(Duration::from_secs(10));
    sub.wait("the last will (offline)", Duration::from_secs(10), |m| {
        m.topic == "dla-edge/test-cam/availability" && m.payload == b"offline" && m.at >= killed
    });

    // The next start without the `cars` rule removes its entity.
    let config = mqtt_config(&broker.url(), ROAD_RULE, "");
    let restarted = SystemTime::now();
    let mut edge = Edge::start(tmp.path(), "second", &config, Stdio::null());
    sub.wait("the removed rule's config deleted", long, |m| {
        m.topic == "homeassistant/binary_sensor/test-cam/cars/config" && m.payload.is_empty()
    });
    sub.wait("online again", long, |m| {
        m.topic == "dla-edge/test-cam/availability" && m.payload == b"online" && m.at >= restarted
    });
    // SIGTERM, as systemd stops it: a clean `offline`, no will needed.
    edge.signal(libc::SIGTERM);
    assert!(
        edge.wait(Duration::from_secs(20)).success(),
        "{}",
        edge.stderr()
    );
    let stopped = sub.wait("offline on stop", Duration::from_secs(10), |m| {
        m.topic == "dla-edge/test-cam/availability" && m.payload == b"offline" && m.at >= restarted
    });
    assert!(!stopped.retained || stopped.payload == b"offline");
    drop(broker);
}

/// Frames on stdin as MJPEG: street scenes (road in the lower part) and the
/// same scenes upside down (sky there), alternating in runs of `run` frames.
fn feed_frames(mut stdin: std::process::ChildStdin, stop: Arc<AtomicBool>, run: usize) {
    let street = image::open(root().join("models/samples/street-0.jpg")).unwrap();
    let jpeg = |img: &image::DynamicImage| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    };
    let frames = [jpeg(&street), jpeg(&street.flipv())];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        if stdin.write_all(&frames[(i / run) % 2]).is_err() {
            return;
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn events_raised_while_the_broker_is_down_arrive_after_it_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let login = ("board", "correct horse battery");
    std::fs::write(tmp.path().join("mqtt-password"), format!("{}\n", login.1)).unwrap();
    let mut broker = Broker::start(tmp.path(), Some(login));
    let sub = Subscriber::start(broker.port, Some(login));
    let rule = "[[rules]]\nname = \"road below\"\nclass = \"road\"\n\
                region = [0.0, 0.6, 1.0, 1.0]\nabove = 0.2\n";
    let config = format!(
        "[source]\nuri = \"-\"\n[viewer]\nlisten = \"off\"\n{rule}\n[mqtt]\nurl = \"{}\"\n\
         device = \"gate\"\nusername = \"board\"\npassword_file = \"{}\"\ncoverage_every = \"0\"\n",
        broker.url(),
        tmp.path().join("mqtt-password").display()
    );
    let mut edge = Edge::start(tmp.path(), "gate", &config, Stdio::piped());
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stdin = edge.child.stdin.take().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || feed_frames(stdin, stop, 4))
    };
    let long = Duration::from_secs(60);
    let events = "dla-edge/gate/events";
    sub.wait("a first event", long, |m| m.topic == events);
    wait_until("a release", long, || {
        sub.events(events).iter().any(|e| e["event"] == "released")
    });

    broker.stop();
    let down = SystemTime::now();
    wait_until("two events while the broker is down", long, || {
        edge.events().iter().filter(|(_, at)| *at > down).count() >= 2
    });
    let up = SystemTime::now();
    broker.restart();
    wait_until("the queued events on the broker", long, || {
        sub.events(events).len() >= edge.events().len()
            && edge.events().iter().any(|(_, at)| *at > up)
    });
    // A newcomer after the restart sees the board online (retained, re-sent on reconnect).
    let late = Subscriber::start_as(broker.port, Some(login), "e2e-late");
    late.wait("availability after the restart", long, |m| {
        m.topic == "dla-edge/gate/availability" && m.payload == b"online" && m.retained
    });
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    // The source ended (stdin closed): the queue is flushed before exit.
    assert!(edge.wait(long).success(), "{}", edge.stderr());

    let printed: Vec<(String, u64)> = edge
        .events()
        .iter()
        .map(|(e, _)| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["frame"].as_u64().unwrap(),
            )
        })
        .collect();
    let during_outage = edge
        .events()
        .iter()
        .filter(|(_, at)| *at > down && *at < up)
        .count();
    assert!(
        during_outage >= 2,
        "{during_outage} events while the broker was down"
    );
    wait_until("every event on the broker", Duration::from_secs(20), || {
        sub.events(events).len() >= printed.len()
    });
    let received: Vec<(String, u64)> = sub
        .events(events)
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["frame"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut unique = received.clone();
    unique.dedup();
    assert_eq!(
        unique, printed,
        "every event, in order, none lost (QoS 1 may repeat one)"
    );
    let log = edge.stderr();
    assert!(log.contains("mqtt: connected to mqtt://127.0.0.1"), "{log}");
    assert!(
        log.contains("broker unreachable") || log.contains("connection lost"),
        "{log}"
    );
    assert!(!log.contains(login.1), "the password never shows in logs");
}

#[test]
fn a_refused_login_is_named_and_the_pipeline_runs_on() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path(), Some(("board", "right password")));
    let config = format!(
        "[source]\nuri = \"demo\"\nfps = 20\n[viewer]\nlisten = \"off\"\n{ROAD_RULE}\n\
         [mqtt]\nurl = \"{}\"\nusername = \"board\"\npassword = \"wrong password\"\n",
        broker.url()
    );
    let file = tmp.path().join("wrong.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(bin("dla-edge"))
        .args(["run", "--max-frames", "30", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("refused the login (bad user name or password"),
        "{err}"
    );
    assert!(err.contains("30 frame(s) processed"), "{err}");
    assert!(!err.contains("wrong password"), "{err}");
    assert_eq!(
        err.matches("refused the login").count(),
        1,
        "logged once per state change, not per retry: {err}"
    );
}

/// An HTTP receiver that answers 500 to the first request and 200 after,
/// keeping every body with its signature header.
/// What a receiver got: the status it answered, the body, the signature header.
type Deliveries = Arc<Mutex<Vec<(u16, Vec<u8>, Option<String>)>>>;

fn webhook_receiver() -> (String, Deliveries) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", server.server_addr().to_ip().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let out = got.clone();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = Vec::new();
            request.as_reader().read_to_end(&mut body).unwrap();
            let signature = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("X-DLA-Signature-256"))
                .map(|h| h.value.to_string());
            let status = if out.lock().unwrap().is_empty() {
                500
            } else {
                200
            };
            out.lock().unwrap().push((status, body, signature));
            let _ = request.respond(tiny_http::Response::empty(status));
        }
    });
    (url, got)
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[test]
fn webhooks_are_signed_and_retried_and_a_dead_broker_or_hanging_receiver_stalls_nothing() {
    use std::io::Read as _;
    let tmp = tempfile::tempdir().unwrap();
    let (url, got) = webhook_receiver();
    // Accepts connections and never answers.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}/never", hang.local_addr().unwrap());
    let dead_broker = format!("mqtt://127.0.0.1:{}", free_port());
    let viewer = free_port();
    let secret = "webhook signing key";
    std::fs::write(tmp.path().join("secret"), secret).unwrap();
    let config = format!(
        "[source]\nuri = \"demo\"\nfps = 10\n[viewer]\nlisten = \"127.0.0.1:{viewer}\"\n{ROAD_RULE}\n\
         [mqtt]\nurl = \"{dead_broker}\"\n\
         [[webhooks]]\nurl = \"{url}\"\nsecret_file = \"{}\"\n\
         [[webhooks]]\nurl = \"{hang_url}\"\ntimeout = \"500ms\"\nretries = 1\n",
        tmp.path().join("secret").display()
    );
    let file = tmp.path().join("hooks.toml");
    std::fs::write(&file, &config).unwrap();
    let edge = Command::new(bin("dla-edge"))
        .args(["run", "--max-frames", "60", "--config"])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_until("the retried delivery", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 2
    });
    let stats: Value = {
        let mut s = String::new();
        let mut c = TcpStream::connect(("127.0.0.1", viewer)).unwrap();
        c.write_all(b"GET /stats.json HTTP/1.0\r\n\r\n").unwrap();
        c.read_to_string(&mut s).unwrap();
        serde_json::from_str(s.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    };
    let links = stats["links"].as_array().unwrap();
    let mqtt = links
        .iter()
        .find(|l| l["name"].as_str().unwrap().starts_with("mqtt"))
        .unwrap();
    assert_eq!(mqtt["up"], false, "{mqtt}");
    assert!(
        mqtt["state"]
            .as_str()
            .unwrap()
            .contains("broker unreachable"),
        "{mqtt}"
    );
    let hook = links
        .iter()
        .find(|l| l["name"] == format!("webhook http://{}", url.split('/').nth(2).unwrap()))
        .unwrap();
    assert_eq!(hook["sent"], 1, "{hook}");

    let out = edge.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("60 frame(s) processed"),
        "the pipeline kept its pace: {err}"
    );
    assert!(err.contains("no answer within 0.5 s (timeout)"), "{err}");

    let got = got.lock().unwrap();
    assert_eq!(got[0].0, 500);
    assert_eq!(got[1].0, 200);
    assert_eq!(got[0].1, got[1].1, "the retry sends the same body");
    let (_, body, signature) = &got[1];
    assert_eq!(
        signature.as_deref(),
        Some(hmac_hex(secret.as_bytes(), body).as_str())
    );
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["event"], "triggered");
    assert_eq!(event["rule"], "Road ahead");
    drop(hang);
}

/// A throwaway CA and a server certificate for 127.0.0.1 it signed, made by
/// the openssl command line tool (`.ci/run` installs it).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=e2e CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn mqtts_trusts_the_given_ca_and_names_a_broker_it_cannot_trust() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(tmp.path());
    let tls = format!(
        "certfile {}\nkeyfile {}\nallow_anonymous true\n",
        cert.display(),
        key.display()
    );
    let broker = Broker::start_with(tmp.path(), None, &tls);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let run = |name: &str, ca_file: &Path| {
        let config = format!(
            "[source]\nuri = \"demo\"\nfps = 20\n[viewer]\nlisten = \"off\"\n{ROAD_RULE}\n\
             [mqtt]\nurl = \"{url}\"\nca_file = \"{}\"\ndevice = \"{name}\"\n",
            ca_file.display()
        );
        let file = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&file, config).unwrap();
        let out = Command::new(bin("dla-edge"))
            .args(["run", "--max-frames", "30", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("trusted", &ca);
    assert!(err.contains(&format!("mqtt: connected to {url}")), "{err}");
    // A CA that did not sign the broker's certificate: refused, and said so.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = certificates(other.path());
    let err = run("untrusted", &other_ca);
    assert!(err.contains("TLS failed"), "{err}");
    assert!(!err.contains("mqtt: connected"), "{err}");
}

#[test]
fn stream_publishes_coverage_and_availability_with_mqtt_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path(), None);
    let sub = Subscriber::start(broker.port, None);
    // Everything checked below is retained: a late subscription sees it too.
    let out = Command::new(bin("dla-edge"))
        .args([
            "stream",
            "--no-http",
            "--max-frames",
            "20",
            "--mqtt",
            &broker.url(),
            "--mqtt-device",
            "Porch Cam",
            "--mqtt-discovery",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let long = Duration::from_secs(20);
    let coverage = sub.wait("coverage", long, |m| {
        m.topic == "dla-edge/porch_cam/coverage"
    });
    let classes = coverage.json()["classes"].as_object().unwrap().len();
    assert_eq!(classes, 19, "every class of the model");
    sub.wait("a sensor per class", long, |m| {
        m.topic == "homeassistant/sensor/porch_cam/coverage_traffic_light/config"
    });
    sub.wait("offline at the end", long, |m| {
        m.topic == "dla-edge/porch_cam/availability" && m.payload == b"offline"
    });
}
