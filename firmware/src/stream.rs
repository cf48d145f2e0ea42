//! `dla-edge stream`: live segmentation from a camera, a pipe, a network
//! stream, files or the built-in demo, shown in a browser, recorded and/or
//! reported as JSON lines. Builds the parts and runs
//! `dla_runtime::pipeline::Pipeline`; the work lives in the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use dla_runtime::backend::{describe_pinning, BackendConfig};
use dla_runtime::pipeline::{EndReason, Pipeline, PipelineOptions, Stats, StatsSnapshot};
use dla_runtime::postprocess::Upsampling;
use dla_runtime::sink::{
    JsonLinesSink, RecordSink, RecordWhat, Sink, Viewer, ViewerAuth, ViewerOptions,
};
use dla_runtime::source::{self, RtspTransport, Source, SourceOptions, SourceSpec};
use dla_runtime::{Model, Segmenter};

use crate::events::config::{read_secret, MqttSection, MqttSettings};
use crate::events::{self, Announce, DeviceInfo};
use crate::segment::{load_model, parse_alpha};
use dla_runtime::backend::BackendArgs;
use dla_runtime::model::LoadOptions;

/// Arguments of `dla-edge stream`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Sources (--source):\n  \
    demo                 animated synthetic street scenes (default; works anywhere)\n  \
    /dev/video0          a V4L2 camera, MJPEG or YUYV (build with --features v4l)\n  \
    -                    MJPEG on stdin, e.g. from rpicam-vid or GStreamer\n  \
    clip.mjpeg | FIFO    MJPEG in a file or a named pipe\n  \
    DIR | 'DIR/*.jpg' | IMG.png   still images, in name order\n  \
    http://cam/video     multipart MJPEG from an IP camera\n  \
    rtsp://[user:pass@]cam:554/path   an RTSP camera or NVR, H.264 or MJPEG (docs/STREAMING.md)\n\n\
Examples:\n  \
    dla-edge stream                                  # demo; open http://127.0.0.1:8080\n  \
    dla-edge stream --source /dev/video0 --http 0.0.0.0:8080\n  \
    rpicam-vid -t 0 --codec mjpeg -o - | dla-edge stream --source -\n  \
    dla-edge stream --source models/samples --no-http --json --record rec --record-what overlay,labels\n  \
    dla-edge stream --max-frames 100 --no-http --json > frames.jsonl")]
pub struct Args {
    /// Where frames come from (see "Sources" below).
    #[arg(long, short, default_value = "demo")]
    source: String,
    /// ONNX segmentation model; default: the built-in DLA-tiny, int8 on the
    /// CPU engines (the faster there), fp32 on the GPU ones. Without a model
    /// card it runs with stated defaults: see `dla-tools card`.
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// Model card JSON to use instead of the one in the model.
    #[arg(long)]
    card: Option<PathBuf>,
    /// Input size, WxH (multiples of 32), for a model exported with free
    /// height and width; default: its card's, or --size's aspect at most 512
    /// wide (512x256 without --size).
    #[arg(long, value_parser = dla_runtime::model::parse_input_size)]
    input_size: Option<(u32, u32)>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Frame size to ask the camera / the demo for, WxH (e.g. 1280x720).
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    /// Frame rate of the demo and the rate asked from cameras.
    #[arg(long, default_value_t = 10.0)]
    fps: f32,
    /// How an RTSP camera sends RTP: tcp (inside the RTSP connection; crosses
    /// NAT and firewalls, nothing lost) or udp (separate ports, LAN only;
    /// a lost packet costs pictures until the next key frame).
    #[arg(long, default_value = "tcp", value_name = "tcp|udp")]
    rtsp_transport: RtspTransport,
    /// Web viewer address; 0.0.0.0:8080 to reach it from other machines, port 0 for any free port.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    http: String,
    /// No web viewer.
    #[arg(long)]
    no_http: bool,
    /// Ask for a login on every viewer route: FILE holds one line, a token
    /// (8+ characters; `Authorization: Bearer`, or the page's form) or
    /// user:password (curl -u, or the form). Kept in a file so it shows in
    /// neither `ps` nor logs.
    #[arg(long, value_name = "FILE")]
    http_login: Option<PathBuf>,
    /// With --http-login: routes left open, comma-separated (e.g. /metrics
    /// for a Prometheus scraper on a trusted network).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PATHS",
        requires = "http_login"
    )]
    http_open: Vec<String>,
    /// Publish to an MQTT broker, mqtt://HOST[:PORT] or mqtts://HOST[:PORT]:
    /// availability (with a last will) and per-class coverage every 10 s
    /// under dla-edge/DEVICE/. Rules and webhooks: `dla-edge run`'s config.
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// With --mqtt: a file with one line, user:password.
    #[arg(long, value_name = "FILE", requires = "mqtt")]
    mqtt_login: Option<PathBuf>,
    /// With --mqtt: this board's name in topics and Home Assistant (default: the host name).
    #[arg(long, value_name = "NAME", requires = "mqtt")]
    mqtt_device: Option<String>,
    /// With --mqtt: Home Assistant discovery (a coverage sensor per class).
    #[arg(long, requires = "mqtt")]
    mqtt_discovery: bool,
    /// Record frames as PNGs into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Record every Nth processed frame.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    record_every: u64,
    /// What to record, comma-separated.
    #[arg(
        long,
        alias = "visualize",
        value_enum,
        value_delimiter = ',',
        default_value = "overlay"
    )]
    record_what: Vec<RecordWhat>,
    /// One JSON line per frame on stdout (frame, timestamp, latencies, class coverage).
    #[arg(long)]
    json: bool,
    /// Stop after this many processed frames.
    #[arg(long, value_name = "N")]
    max_frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// Opacity of the class colours in the overlay, 0 (frame only) to 1 (mask only).
    #[arg(long, default_value_t = 0.5, value_parser = parse_alpha)]
    alpha: f32,
    /// How label maps reach the frame size: bilinear (smooth edges) or nearest (fastest).
    #[arg(long, default_value = "bilinear")]
    upsampling: Upsampling,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not WxH, e.g. 1280x720"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|&v| (8..=16384).contains(&v))
    };
    match (p(w), p(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(format!("{s:?}: both sides must be numbers from 8 to 16384")),
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} must be a positive number of seconds"))
}

/// Opens the source, including cameras (which need the `v4l` feature).
fn open_source(
    spec: &SourceSpec,
    name: &str,
    options: &SourceOptions,
) -> anyhow::Result<Box<dyn Source>> {
    if let SourceSpec::Camera(path) = spec {
        if !path.exists() {
            bail!(
                "no such camera device: {} (list cameras with `dla-edge cameras`)",
                path.display()
            );
        }
        #[cfg(feature = "v4l")]
        return Ok(Box::new(crate::camera::CameraSource::open(path, options)?));
        #[cfg(not(feature = "v4l"))]
        bail!(
            "{}: this dla-edge was built without camera support; rebuild with \
             `cargo build -p dla-firmware --features v4l`, or pipe MJPEG in with --source -",
            path.display()
        );
    }
    Ok(source::open(spec, name, options)?)
}

fn summary_line(reason: EndReason, s: &StatsSnapshot) -> String {
    let why = match reason {
        EndReason::SourceEnded => "source ended",
        EndReason::MaxFrames => "--max-frames reached",
        EndReason::Duration => "--duration reached",
        EndReason::Stopped => "stopped",
    };
    let stages: Vec<String> = s
        .stages
        .iter()
        .map(|st| format!("{} {:.1}", st.stage, st.p50_ms))
        .collect();
    let mut line = format!(
        "{why}: {} frame(s) processed, {} dropped, {} corrupt, {:.1} fps; median ms: {}",
        s.frames_processed,
        s.frames_dropped,
        s.frames_corrupt,
        s.fps,
        stages.join(", ")
    );
    // How close the whole pipeline came to what the network alone allows.
    if let Some(alone) = s.inference_fps() {
        line += &format!(
            "; whole run {:.1} fps, inference alone {alone:.1} fps (end to end {:.0} % of it)",
            s.average_fps,
            100.0 * s.average_fps / alone
        );
    }
    if let Some(rss) = s.rss_bytes {
        line += &format!("; RSS {:.1} MiB", rss as f64 / (1024.0 * 1024.0));
    }
    line
}

/// What to record, as `--record*` or `[record]` say.
pub struct RecordSetup {
    /// Directory.
    pub dir: PathBuf,
    /// Every Nth frame.
    pub every: u64,
    /// Which images.
    pub what: Vec<RecordWhat>,
}

/// Everything one pipeline run needs besides the model, from `stream`'s
/// flags or from `run`'s configuration file.
pub struct StreamSetup {
    /// `--source` / `source.uri`, as the user wrote it (for messages).
    pub source: String,
    /// The same, parsed.
    pub spec: SourceSpec,
    /// Which engine.
    pub backend: BackendConfig,
    /// Frame size asked from cameras and the demo.
    pub size: Option<(u32, u32)>,
    /// Frame rate asked from cameras and the demo.
    pub fps: f32,
    /// RTP over TCP or UDP, for RTSP cameras.
    pub rtsp_transport: RtspTransport,
    /// Web viewer address.
    pub http: Option<SocketAddr>,
    /// Who may see the viewer.
    pub http_auth: Option<ViewerAuth>,
    /// Recording.
    pub record: Option<RecordSetup>,
    /// JSON lines on stdout.
    pub json: bool,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Overlay opacity.
    pub alpha: f32,
    /// Label-map resampling.
    pub upsampling: Upsampling,
}

/// Parses a viewer address, with an error that shows the expected form.
pub fn parse_http(addr: &str, key: &str) -> anyhow::Result<SocketAddr> {
    addr.parse().map_err(|_| {
        anyhow::anyhow!(
            "{key} {addr:?}: not an IP address and port (e.g. 127.0.0.1:8080 or 0.0.0.0:8080)"
        )
    })
}

/// Runs `dla-edge stream`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let http = if args.no_http {
        None
    } else {
        Some(parse_http(&args.http, "--http")?)
    };
    let setup = StreamSetup {
        source: args.source.clone(),
        spec: SourceSpec::parse(&args.source)?,
        backend: args.backend.config(true),
        size: args.size,
        fps: args.fps,
        rtsp_transport: args.rtsp_transport,
        http,
        http_auth: args
            .http_login
            .as_deref()
            .map(|file| {
                ViewerAuth::from_file(file).map(|a| a.with_open_paths(args.http_open.clone()))
            })
            .transpose()?,
        record: args.record.as_ref().map(|dir| RecordSetup {
            dir: dir.clone(),
            every: args.record_every,
            what: args.record_what.clone(),
        }),
        json: args.json,
        max_frames: args.max_frames,
        duration: args.duration,
        alpha: args.alpha,
        upsampling: args.upsampling,
    };
    let options = LoadOptions {
        card_file: args.card.clone(),
        input_size: args.input_size,
        // A model of free size runs at the frames' aspect, when it is asked for.
        frame_size: args.size,
        ..LoadOptions::default()
    };
    let model = load_model(args.model.as_deref(), &options, setup.backend.kind)?;
    let mqtt = args.mqtt_settings(model.card())?;
    let name = model.card().name.clone();
    run_pipeline(
        model,
        &setup,
        |stats| {
            let announce = Announce {
                rules: Vec::new(),
                device: DeviceInfo {
                    model: format!("{name} on {}", stats.snapshot().engine),
                },
            };
            // The coverage sink holds the links (stream always reports coverage).
            Ok(events::start(mqtt.as_ref(), &[], announce, stats)?.sinks)
        },
        |_| {},
    )
}

impl Args {
    /// `--mqtt*` as a checked `[mqtt]` section.
    fn mqtt_settings(&self, card: &dla_runtime::ModelCard) -> anyhow::Result<Option<MqttSettings>> {
        let Some(url) = &self.mqtt else {
            return Ok(None);
        };
        let (username, password) = match &self.mqtt_login {
            Some(file) => {
                let line = read_secret(file).map_err(|e| anyhow::anyhow!("--mqtt-login {e}"))?;
                let (u, p) = line.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!(
                        "--mqtt-login {}: expected one line user:password",
                        file.display()
                    )
                })?;
                (Some(u.to_string()), Some(p.to_string()))
            }
            None => (None, None),
        };
        let section = MqttSection {
            url: url.clone(),
            username,
            password_file: None,
            password,
            ca_file: None,
            device: self.mqtt_device.clone(),
            topic_prefix: "dla-edge".into(),
            discovery: self.mqtt_discovery,
            discovery_prefix: "homeassistant".into(),
            coverage_every: "10s".into(),
            coverage_classes: None,
            snapshot: false,
            queue: 1000,
        };
        let classes: Vec<&str> = card.classes.iter().map(|c| c.name.as_str()).collect();
        section
            .check(&classes, &[])
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--mqtt: {}", e.join("; ").replace("mqtt.url: ", "")))
    }
}

/// Builds the segmenter, the source and the sinks of `setup` (plus the ones
/// `more_sinks` makes, which see the shared stats), runs the pipeline until
/// it ends or SIGINT/SIGTERM, and prints the summary. `tick` runs on this
/// thread a few times a second (service watchdog pings).
pub fn run_pipeline(
    model: Model,
    setup: &StreamSetup,
    more_sinks: impl FnOnce(&Arc<Stats>) -> anyhow::Result<Vec<Box<dyn Sink>>>,
    mut tick: impl FnMut(&Stats),
) -> anyhow::Result<ExitCode> {
    let config = &setup.backend;
    let threads = config.threads;
    let segmenter = Segmenter::with_config(&model, config, setup.upsampling)?;
    let card = model.card().clone();
    // The backend holds what it runs; the parsed graph is no longer needed.
    // Its memory goes back to the kernel now, before the first frames size
    // their buffers, and what those leave free goes back after them.
    drop(model);
    dla_runtime::heap::release_free_memory();
    let shown = setup.spec.shown(&setup.source);
    let stats = Arc::new(
        Stats::new(
            &shown,
            card.classes.iter().map(|c| c.name.clone()).collect(),
        )
        .with_engine(&card.name, &segmenter.backend_description()),
    );

    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(addr) = setup.http {
        let viewer = Viewer::start(
            &ViewerOptions {
                addr: addr.to_string(),
                auth: setup.http_auth.clone(),
                ..ViewerOptions::default()
            },
            stats.clone(),
            &card.classes,
        )?;
        eprintln!("viewer: http://{}/", viewer.local_addr());
        sinks.push(Box::new(viewer));
    }
    if let Some(rec) = &setup.record {
        let sink = RecordSink::new(&rec.dir, rec.every, rec.what.clone())
            .with_context(|| format!("recording to {}", rec.dir.display()))?;
        sinks.push(Box::new(sink));
    }
    sinks.extend(more_sinks(&stats)?);
    if setup.json {
        sinks.push(Box::new(JsonLinesSink::new(
            std::io::BufWriter::new(std::io::stdout()),
            &shown,
        )));
    }

    let source_options = SourceOptions {
        size: setup.size,
        fps: setup.fps,
        rtsp_transport: setup.rtsp_transport,
        ..SourceOptions::default()
    };
    let source = open_source(&setup.spec, &shown, &source_options)?;
    eprintln!(
        "model {} ({} classes, input {}x{}) on {} with {threads} thread(s){}; source {}{}",
        card.name,
        card.classes.len(),
        card.input.width,
        card.input.height,
        segmenter.backend_description(),
        describe_pinning(segmenter.pinned_cpus()),
        shown,
        if source.is_live() { " (live)" } else { "" }
    );

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let options = PipelineOptions {
        max_frames: setup.max_frames,
        duration: setup.duration,
        alpha: setup.alpha,
        ..PipelineOptions::default()
    };
    let pipeline = Pipeline::new(source, segmenter, sinks, options, stats);
    let tty = std::io::stderr().is_terminal();
    let summary = pipeline.run(&stop, |stats| {
        if tty {
            eprint!("\r{}\x1b[K", stats.snapshot().status_line());
        }
        tick(stats);
    });
    if tty {
        eprintln!();
    }
    let summary = summary?;
    eprintln!("{}", summary_line(summary.reason, &summary.stats));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_duration_parsing() {
        assert_eq!(parse_size("1280x720"), Ok((1280, 720)));
        assert!(parse_size("1280").is_err());
        assert!(parse_size("0x720").is_err());
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_seconds("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("0").is_err());
    }
}
