//! `dla-edge run` (the service) and `dla-edge check-config`: everything comes
//! from the configuration file, checked in full before anything starts.
//!
//! Under systemd (`Type=notify`) the service says READY once the pipeline
//! runs and pings the watchdog from the pipeline's tick while frames flow, so
//! a stuck pipeline gets restarted. Until READY it asks for more start-up
//! time every 20 s (a first `ort-tensorrt` start builds TensorRT engines for
//! minutes, longer than systemd's default 90 s start timeout, which would
//! kill it mid-build and restart it forever). Logs go to stderr, which
//! journald keeps.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args as ClapArgs;
use dla_runtime::backend::{default_threads, BackendConfig, Pinning, TensorRtSettings};
use dla_runtime::postprocess::Upsampling;
use dla_runtime::sink::Sink;
use dla_runtime::source::SourceSpec;

use crate::actions::{RuleInfo, RulesSink};
use crate::config::{Checked, Config};
use crate::events::{self, config::slug, Announce, DeviceInfo, RuleEntity};
use crate::gpio::{BoardPin, Chip};
use crate::rules::RuleEngine;
use crate::segment::load_model;
use crate::stream::{parse_http, run_pipeline, RecordSetup, StreamSetup};
use dla_runtime::model::LoadOptions;

/// Where the service's configuration lives unless told otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/dla-edge/config.toml";

/// Arguments of `dla-edge run`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "The configuration file is TOML; `dla-edge check-config` checks it \
    without running. Examples per board: firmware/boards/*.toml.\n\n\
Examples:\n  \
    dla-edge run                                   # /etc/dla-edge/config.toml (the service)\n  \
    dla-edge run --config my.toml --json           # try a config, events as JSON lines"
)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Also write JSON lines (frames and events) to stdout.
    #[arg(long)]
    json: bool,
    /// Stop after this many processed frames (for tests; the service runs until stopped).
    #[arg(long, value_name = "N")]
    max_frames: Option<u64>,
}

/// Arguments of `dla-edge check-config`.
#[derive(Debug, ClapArgs)]
pub struct CheckArgs {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

/// Reads, parses and validates `path` against its model.
fn load_checked(path: &Path) -> anyhow::Result<(Checked, dla_runtime::Model)> {
    let config = Config::load(path)?;
    // An engine name that does not parse is reported by validate(), below.
    let engine = config.backend.engine.parse().unwrap_or_default();
    let options = LoadOptions {
        card_file: config.model.card.clone(),
        // A model of free size runs at the camera's aspect, when it is set.
        frame_size: config
            .source
            .size
            .as_deref()
            .and_then(|s| crate::config::parse_size(s).ok()),
        ..LoadOptions::default()
    };
    let model = load_model(config.model.path.as_deref(), &options, engine)
        .with_context(|| format!("{}: [model]", path.display()))?;
    let checked = config
        .validate(model.card())
        .map_err(|errors| anyhow::anyhow!("{}:\n{errors}", path.display()))?;
    Ok((checked, model))
}

/// `dla-edge check-config`.
pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let (checked, model) = load_checked(&args.config)?;
    let c = &checked.config;
    println!(
        "{}: OK\n  board {}\n  model {} on {} ({} thread(s){})\n  source {}\n  viewer {}\n  {} rule(s), {} output pin(s){}{} on {}\n  events: {}",
        args.config.display(),
        c.board.as_deref().unwrap_or("(not set)"),
        model.card().name,
        c.backend.engine,
        c.backend.threads.map_or("all".to_string(), |t| t.to_string()),
        if c.backend.pin_threads {
            ""
        } else {
            ", not bound to cores"
        },
        source_summary(&checked),
        c.viewer.listen,
        checked.rules.len(),
        checked.outputs.len(),
        if checked.status_led.is_some() { ", status LED" } else { "" },
        if checked.button.is_some() { ", button" } else { "" },
        c.gpio.chip,
        events_summary(&checked),
    );
    Ok(ExitCode::SUCCESS)
}

/// The source as check-config shows it: no credentials, RTSP's transport.
fn source_summary(checked: &Checked) -> String {
    let shown = checked.source.shown(&checked.config.source.uri);
    match checked.source {
        SourceSpec::Rtsp(_) => format!("{shown} (RTP over {})", checked.rtsp_transport),
        _ => shown,
    }
}

/// Where events go, for check-config: `mqtt://host:1883 as DEVICE (discovery), 1 webhook(s)`.
fn events_summary(checked: &Checked) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &checked.mqtt {
        parts.push(format!(
            "{} as {:?}{}{}",
            m.broker,
            m.device,
            if m.login.is_some() {
                " with a login"
            } else {
                ""
            },
            if m.discovery.is_some() {
                ", Home Assistant discovery"
            } else {
                ""
            },
        ));
    }
    if !checked.webhooks.is_empty() {
        let hooks: Vec<&str> = checked.webhooks.iter().map(|w| w.shown.as_str()).collect();
        parts.push(format!("webhook(s) {}", hooks.join(", ")));
    }
    if parts.is_empty() {
        "log and viewer only (no [mqtt], no [[webhooks]])".into()
    } else {
        parts.join("; ")
    }
}

/// The rule engine with the configured pins.
fn build_engine(checked: &Checked) -> anyhow::Result<RuleEngine<BoardPin, BoardPin>> {
    let mut engine = RuleEngine::new();
    let uses_pins =
        !checked.outputs.is_empty() || checked.status_led.is_some() || checked.button.is_some();
    if !uses_pins {
        for (_, rule) in &checked.rules {
            engine.add_rule(rule.clone())?;
        }
        return Ok(engine);
    }
    let mut chip = Chip::open(&checked.config.gpio.chip)?;
    for (i, &(line, active_low)) in checked.outputs.iter().enumerate() {
        // Requested at its inactive level, so a relay does not click at start.
        let pin = chip.output(line, active_low, "rule output")?;
        let index = engine.add_output(pin, active_low)?;
        debug_assert_eq!(index, i);
    }
    for (_, rule) in &checked.rules {
        engine.add_rule(rule.clone())?;
    }
    if let Some((line, period)) = checked.status_led {
        engine.set_heartbeat(chip.output(line, false, "status LED")?, period)?;
    }
    if let Some((line, active_low, action)) = checked.button {
        engine.set_button(chip.input(line, "button")?, active_low, action);
    }
    Ok(engine)
}

/// `dla-edge run`.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let (checked, model) = load_checked(&args.config)?;
    let c = &checked.config;
    let (kind, precision, argmax) = checked.engine;
    let setup = StreamSetup {
        source: c.source.uri.clone(),
        spec: checked.source.clone(),
        backend: BackendConfig {
            kind,
            threads: c.backend.threads.unwrap_or_else(default_threads).max(1),
            pinning: Pinning::when(c.backend.pin_threads),
            ort_library: c.backend.ort_lib.clone(),
            allow_cpu_fallback: c.backend.allow_cpu_fallback,
            ort_spinning: true,
            tensorrt: TensorRtSettings {
                precision,
                engine_cache: TensorRtSettings::cache_from(c.backend.trt_cache.as_deref()),
            },
            argmax,
        },
        size: checked.size,
        fps: c.source.fps,
        rtsp_transport: checked.rtsp_transport,
        http: match c.viewer.listen.as_str() {
            "off" => None,
            addr => Some(parse_http(addr, "viewer.listen")?),
        },
        http_auth: checked.viewer_auth.clone(),
        record: c.record.as_ref().map(|r| RecordSetup {
            dir: r.dir.clone(),
            every: r.every,
            what: checked.record_what.clone(),
        }),
        json: args.json,
        max_frames: args.max_frames,
        duration: None,
        alpha: c.viewer.alpha,
        upsampling: Upsampling::default(),
    };
    let engine = build_engine(&checked)?;
    let card = model.card().clone();
    let rules: Vec<RuleInfo> = checked
        .rules
        .iter()
        .map(|(name, r)| RuleInfo {
            name: name.clone(),
            class: card.classes[r.class as usize].name.clone(),
            region: [r.region.x0, r.region.y0, r.region.x1, r.region.y1],
        })
        .collect();
    let entities: Vec<RuleEntity> = rules
        .iter()
        .zip(&c.rules)
        .map(|(r, section)| RuleEntity {
            name: r.name.clone(),
            slug: slug(&r.name),
            device_class: section.device_class.clone(),
        })
        .collect();
    let snapshot_dir = c.gpio.snapshot_dir.clone();
    let json = args.json;
    let mut watchdog = Watchdog::from_env();
    let mut starting = Some(StartKeepalive::start(format!(
        "loading {} on {}",
        model.card().name,
        kind
    )));
    run_pipeline(
        model,
        &setup,
        |stats| {
            let announce = Announce {
                rules: entities,
                device: DeviceInfo {
                    model: format!("{} on {}", card.name, stats.snapshot().engine),
                },
            };
            let events::Started { outlets, mut sinks } =
                events::start(checked.mqtt.as_ref(), &checked.webhooks, announce, stats)?;
            let device = checked
                .mqtt
                .as_ref()
                .map_or_else(events::config::host_name, |m| m.device.clone());
            let rules_sink = RulesSink::new(engine, rules, stats.clone(), json, snapshot_dir)
                .with_outlets(outlets, device);
            sinks.insert(0, Box::new(rules_sink) as Box<dyn Sink>);
            Ok(sinks)
        },
        |stats| {
            if let Some(keepalive) = starting.take() {
                keepalive.finish();
                // The start-up status line would otherwise stay in `systemctl status`.
                notify(&[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status("running"),
                ]);
            }
            watchdog.tick(stats.processed());
        },
    )
}

/// Asks systemd for more start-up time until the pipeline runs: at once and
/// then every [`StartKeepalive::EVERY`], for at most [`StartKeepalive::LIMIT`]
/// (a start that hangs longer still fails). Without `NOTIFY_SOCKET` (not
/// under systemd) the notifications are no-ops.
struct StartKeepalive {
    stop: std::sync::mpsc::Sender<()>,
}

impl StartKeepalive {
    const EVERY: Duration = Duration::from_secs(20);
    const LIMIT: Duration = Duration::from_secs(30 * 60);

    fn start(what: String) -> StartKeepalive {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let t0 = Instant::now();
        std::thread::spawn(move || {
            // Three intervals of slack: a late ping does not kill the start.
            let extend = (Self::EVERY * 3).as_micros() as u32;
            loop {
                let status = format!("{what} ({} s)", t0.elapsed().as_secs());
                if let Err(e) = sd_notify::notify(&[
                    sd_notify::NotifyState::ExtendTimeoutUsec(extend),
                    sd_notify::NotifyState::Status(&status),
                ]) {
                    log::warn!("systemd notification failed: {e}");
                }
                match stopped.recv_timeout(Self::EVERY) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                if t0.elapsed() >= Self::LIMIT {
                    log::warn!(
                        "still {what} after {} s; no longer asking systemd for more time",
                        t0.elapsed().as_secs()
                    );
                    return;
                }
                log::info!(
                    "still {what} after {} s (a first TensorRT start builds its engine; \
                     later starts load it from the cache)",
                    t0.elapsed().as_secs()
                );
            }
        });
        StartKeepalive { stop }
    }

    /// Stops asking: the pipeline runs.
    fn finish(self) {
        // The thread ends on the message or on the closed channel alike.
        let _ = self.stop.send(());
    }
}

/// systemd's watchdog: pinged while frames keep coming.
struct Watchdog {
    every: Option<Duration>,
    last_ping: Instant,
    last_frames: u64,
}

impl Watchdog {
    fn from_env() -> Watchdog {
        Watchdog {
            every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last_ping: Instant::now(),
            last_frames: 0,
        }
    }

    /// Pings at half the watchdog interval, only when frames were processed
    /// since the last ping: a pipeline that stopped moving gets restarted.
    fn tick(&mut self, frames: u64) {
        let Some(every) = self.every else { return };
        if frames > self.last_frames && self.last_ping.elapsed() >= every {
            notify(&[sd_notify::NotifyState::Watchdog]);
            self.last_ping = Instant::now();
            self.last_frames = frames;
        }
    }
}

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("systemd notification failed: {e}");
    }
}
