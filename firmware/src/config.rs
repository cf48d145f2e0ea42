//! The service configuration, `/etc/dla-edge/config.toml`: what `dla-edge run`
//! runs and `dla-edge check-config` checks.
//!
//! Parsing (serde + toml) rejects unknown keys and wrong types with the key's
//! path and line; [`Config::validate`] then checks values against each other
//! and against the model (class names, pin numbers, regions), naming the key
//! and the allowed values in every message. Examples for each board profile
//! live in `firmware/boards/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dla_runtime::backend::{ArgmaxAt, BackendKind, TrtPrecision};
use dla_runtime::sink::{RecordWhat, ViewerAuth};
use dla_runtime::source::{RtspTransport, SourceSpec};
use dla_runtime::ModelCard;
use serde::Deserialize;

use crate::events::config::{slug, MqttSection, MqttSettings, WebhookSection, WebhookSettings};
use crate::rules::{ButtonAction, Region, Rule, MAX_OUTPUTS, MAX_RULES};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Board profile the file was written for (informational; `bundle` sets it).
    pub board: Option<String>,
    /// Which network.
    #[serde(default)]
    pub model: ModelSection,
    /// Which engine.
    #[serde(default)]
    pub backend: BackendSection,
    /// Where frames come from.
    #[serde(default)]
    pub source: SourceSection,
    /// The web viewer.
    #[serde(default)]
    pub viewer: ViewerSection,
    /// Recording frames to disk.
    pub record: Option<RecordSection>,
    /// The GPIO chip and how pins are driven.
    #[serde(default)]
    pub gpio: GpioSection,
    /// A heartbeat LED.
    pub status_led: Option<LedSection>,
    /// A push button.
    pub button: Option<ButtonSection>,
    /// Class-coverage rules.
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    /// Events, states and coverage to an MQTT broker (Home Assistant).
    pub mqtt: Option<MqttSection>,
    /// Events POSTed to HTTP receivers.
    #[serde(default)]
    pub webhooks: Vec<WebhookSection>,
}

/// `[model]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// ONNX file; absent: the built-in DLA-tiny (int8 on the CPU engines,
    /// fp32 on the GPU ones).
    pub path: Option<PathBuf>,
    /// Model card JSON to use instead of the one in the model.
    pub card: Option<PathBuf>,
}

/// `[backend]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// tract | ort-cpu | ort-cuda | ort-tensorrt
    #[serde(default = "default_engine")]
    pub engine: String,
    /// Inference threads; absent: all cores.
    pub threads: Option<usize>,
    /// Bind tract's inference threads to a core each when they fill the
    /// cores (the default); `false` lets the OS place them.
    #[serde(default = "default_pin_threads")]
    pub pin_threads: bool,
    /// libonnxruntime for ort-* engines.
    pub ort_lib: Option<PathBuf>,
    /// Let GPU engines fall back to the CPU.
    #[serde(default)]
    pub allow_cpu_fallback: bool,
    /// TensorRT precision: fp16 | fp32 | int8.
    #[serde(default = "default_trt_precision")]
    pub trt_precision: String,
    /// TensorRT engine cache directory, or "none".
    pub trt_cache: Option<PathBuf>,
    /// Where ort-* engines take the per-pixel argmax: auto | engine | host.
    #[serde(default = "default_argmax")]
    pub argmax: String,
}

fn default_engine() -> String {
    "tract".into()
}

fn default_pin_threads() -> bool {
    true
}

fn default_trt_precision() -> String {
    "fp16".into()
}

fn default_argmax() -> String {
    "auto".into()
}

impl Default for BackendSection {
    fn default() -> Self {
        BackendSection {
            engine: default_engine(),
            threads: None,
            pin_threads: default_pin_threads(),
            ort_lib: None,
            allow_cpu_fallback: false,
            trt_precision: default_trt_precision(),
            trt_cache: None,
            argmax: default_argmax(),
        }
    }
}

/// `[source]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// demo | /dev/videoN | - | FILE | DIR | URL, as `dla-edge stream --source`.
    #[serde(default = "default_source")]
    pub uri: String,
    /// Frame size to ask for, "WxH".
    pub size: Option<String>,
    /// Frame rate to ask for (and the demo's rate).
    #[serde(default = "default_fps")]
    pub fps: f32,
    /// RTSP cameras: "tcp" (default) or "udp".
    pub rtsp_transport: Option<String>,
}

fn default_source() -> String {
    "demo".into()
}

fn default_fps() -> f32 {
    10.0
}

impl Default for SourceSection {
    fn default() -> Self {
        SourceSection {
            uri: default_source(),
            size: None,
            fps: default_fps(),
            rtsp_transport: None,
        }
    }
}

/// `[viewer]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerSection {
    /// Address to listen on, e.g. "0.0.0.0:8080", or "off".
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Class colour opacity in the overlay, 0..1.
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    /// A file with the viewer's login (one line: a token or user:password);
    /// without it, anyone who can reach `listen` sees the camera.
    #[serde(default)]
    pub login_file: Option<PathBuf>,
    /// With a login: routes left open (e.g. ["/metrics"]).
    #[serde(default)]
    pub open_paths: Vec<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_alpha() -> f32 {
    0.5
}

impl Default for ViewerSection {
    fn default() -> Self {
        ViewerSection {
            listen: default_listen(),
            alpha: default_alpha(),
            login_file: None,
            open_paths: Vec::new(),
        }
    }
}

/// `[record]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSection {
    /// Directory (created if missing).
    pub dir: PathBuf,
    /// Every Nth frame.
    #[serde(default = "one")]
    pub every: u64,
    /// Any of overlay, mask, labels.
    #[serde(default = "default_record_what")]
    pub what: Vec<String>,
}

fn one() -> u64 {
    1
}

fn default_record_what() -> Vec<String> {
    vec!["overlay".into()]
}

/// `[gpio]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioSection {
    /// GPIO character device, e.g. "/dev/gpiochip0"; "log" for pins that only
    /// log their changes (to try rules on a machine without GPIO).
    #[serde(default = "default_chip")]
    pub chip: String,
    /// Directory where button snapshots go.
    pub snapshot_dir: Option<PathBuf>,
}

fn default_chip() -> String {
    "/dev/gpiochip0".into()
}

impl Default for GpioSection {
    fn default() -> Self {
        GpioSection {
            chip: default_chip(),
            snapshot_dir: None,
        }
    }
}

/// `[status_led]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedSection {
    /// Line offset on the GPIO chip (BCM number on a Raspberry Pi).
    pub pin: u32,
    /// Blink period while frames flow, e.g. "1s".
    #[serde(default = "default_period")]
    pub period: String,
}

fn default_period() -> String {
    "1s".into()
}

/// `[button]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonSection {
    /// Line offset on the GPIO chip.
    pub pin: u32,
    /// arm-toggle | snapshot
    pub action: String,
    /// Pressed reads low (a button to ground with a pull-up).
    #[serde(default = "yes")]
    pub active_low: bool,
}

fn yes() -> bool {
    true
}

/// `[[rules]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// Name for logs and events; default "rule N".
    pub name: Option<String>,
    /// Class name from the model card.
    pub class: String,
    /// [x0, y0, x1, y1] in fractions of the frame; default the whole frame.
    pub region: Option<[f32; 4]>,
    /// Coverage of the region (0..1) above which a frame counts.
    pub above: f32,
    /// Coverage under which a frame counts towards release; default `above`.
    pub below: Option<f32>,
    /// Consecutive frames above to trigger.
    #[serde(default = "one_u32")]
    pub frames: u32,
    /// Consecutive frames below to release; default `frames`.
    pub clear_frames: Option<u32>,
    /// Least time the pin stays active once triggered, e.g. "2s".
    #[serde(default = "zero_time")]
    pub hold: String,
    /// Output line to drive; absent: events only.
    pub pin: Option<u32>,
    /// Active means low on the pin (relay boards often are).
    #[serde(default)]
    pub active_low: bool,
    /// Home Assistant binary_sensor device class (with `[mqtt] discovery`).
    #[serde(default = "default_device_class")]
    pub device_class: String,
}

fn default_device_class() -> String {
    "occupancy".into()
}

fn one_u32() -> u32 {
    1
}

fn zero_time() -> String {
    "0s".into()
}

/// A config that parsed and validated, ready to run.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The file as written.
    pub config: Config,
    /// Rules in engine form; `output` indexes [`Checked::outputs`].
    pub rules: Vec<(String, Rule)>,
    /// Distinct output lines with their polarity, in first-use order.
    pub outputs: Vec<(u32, bool)>,
    /// Heartbeat LED line and period.
    pub status_led: Option<(u32, Duration)>,
    /// Button line, polarity and action.
    pub button: Option<(u32, bool, ButtonAction)>,
    /// Parsed `[source] size`.
    pub size: Option<(u32, u32)>,
    /// Parsed `[source] uri`.
    pub source: SourceSpec,
    /// Parsed `[source] rtsp_transport`.
    pub rtsp_transport: RtspTransport,
    /// Parsed `[backend] engine`, `trt_precision` and `argmax`.
    pub engine: (BackendKind, TrtPrecision, ArgmaxAt),
    /// Parsed `[record] what`.
    pub record_what: Vec<RecordWhat>,
    /// The viewer's login, read from `[viewer] login_file`.
    pub viewer_auth: Option<ViewerAuth>,
    /// `[mqtt]`, checked.
    pub mqtt: Option<MqttSettings>,
    /// `[[webhooks]]`, checked.
    pub webhooks: Vec<WebhookSettings>,
}

/// Parses "2s", "500ms", "1.5" (seconds), "0".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix("min") {
        (v, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. \"2s\", \"500ms\")"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} must be zero or more"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Parses "WxH".
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not WIDTHxHEIGHT (e.g. \"1280x720\")");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h): (u32, u32) = (
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    );
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}

impl Config {
    /// Reads and parses `path`; errors name the file, the key and the line.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// The backend engine, TensorRT precision and argmax place named in `[backend]`.
    pub fn engine(&self) -> Result<(BackendKind, TrtPrecision, ArgmaxAt), String> {
        let kind = match self.backend.engine.as_str() {
            "tract" => BackendKind::Tract,
            "ort-cpu" => BackendKind::OrtCpu,
            "ort-cuda" => BackendKind::OrtCuda,
            "ort-tensorrt" => BackendKind::OrtTensorRt,
            other => {
                return Err(format!(
                    "backend.engine: {other:?} is not one of tract, ort-cpu, ort-cuda, ort-tensorrt"
                ))
            }
        };
        let precision = match self.backend.trt_precision.as_str() {
            "fp16" => TrtPrecision::Fp16,
            "fp32" => TrtPrecision::Fp32,
            "int8" => TrtPrecision::Int8,
            other => {
                return Err(format!(
                    "backend.trt_precision: {other:?} is not one of fp16, fp32, int8"
                ))
            }
        };
        let argmax = self.backend.argmax.parse::<ArgmaxAt>().map_err(|_| {
            format!(
                "backend.argmax: {:?} is not one of auto, engine, host",
                self.backend.argmax
            )
        })?;
        Ok((kind, precision, argmax))
    }

    /// Checks every value against the others and against the model's card;
    /// all problems are reported at once, one per line.
    pub fn validate(self, card: &ModelCard) -> Result<Checked, String> {
        let mut errors: Vec<String> = Vec::new();
        let mut err = |e: String| errors.push(e);

        let engine = self.engine().map_err(&mut err).ok();
        if self.backend.threads == Some(0) {
            err("backend.threads: must be 1 or more (or left out for all cores)".into());
        }
        let source = SourceSpec::parse(&self.source.uri)
            .map_err(|e| err(format!("source.uri: {e}")))
            .ok();
        let size = match self.source.size.as_deref().map(parse_size) {
            Some(Err(e)) => {
                err(format!("source.size: {e}"));
                None
            }
            Some(Ok(s)) => Some(s),
            None => None,
        };
        let rtsp_transport = match self.source.rtsp_transport.as_deref().map(str::parse) {
            Some(Err(e)) => {
                err(format!("source.rtsp_transport: {e}"));
                RtspTransport::default()
            }
            Some(Ok(t)) => t,
            None => RtspTransport::default(),
        };
        if !(self.source.fps.is_finite() && self.source.fps > 0.0 && self.source.fps <= 240.0) {
            err(format!(
                "source.fps: {} is not a frame rate in (0, 240]",
                self.source.fps
            ));
        }
        if self.viewer.listen != "off"
            && self.viewer.listen.parse::<std::net::SocketAddr>().is_err()
        {
            err(format!(
                "viewer.listen: {:?} is not \"off\" or an IP address and port (e.g. \"0.0.0.0:8080\")",
                self.viewer.listen
            ));
        }
        let viewer_auth = match &self.viewer.login_file {
            Some(file) => match ViewerAuth::from_file(file) {
                Ok(auth) => Some(auth.with_open_paths(self.viewer.open_paths.clone())),
                Err(e) => {
                    err(format!("viewer.login_file: {e}"));
                    None
                }
            },
            None if !self.viewer.open_paths.is_empty() => {
                err("viewer.open_paths: only means something with viewer.login_file".into());
                None
            }
            None => None,
        };
        if !(0.0..=1.0).contains(&self.viewer.alpha) {
            err(format!(
                "viewer.alpha: {} is not in [0, 1]",
                self.viewer.alpha
            ));
        }
        let mut record_what = Vec::new();
        if let Some(rec) = &self.record {
            if rec.every == 0 {
                err("record.every: must be 1 or more".into());
            }
            for w in &rec.what {
                match w.as_str() {
                    "overlay" => record_what.push(RecordWhat::Overlay),
                    "mask" => record_what.push(RecordWhat::Mask),
                    "labels" => record_what.push(RecordWhat::Labels),
                    _ => err(format!(
                        "record.what: {w:?} is not one of overlay, mask, labels"
                    )),
                }
            }
        }

        // Pins: every line used once, except rule outputs shared by rules.
        let mut used: BTreeMap<u32, String> = BTreeMap::new();
        let mut claim = |line: u32, what: String, errors: &mut dyn FnMut(String)| {
            if let Some(other) = used.get(&line) {
                errors(format!("{what}: line {line} is already used by {other}"));
            } else {
                used.insert(line, what);
            }
        };
        let status_led = self.status_led.as_ref().and_then(|led| {
            claim(led.pin, "status_led.pin".into(), &mut err);
            match parse_duration(&led.period) {
                Ok(p) if p >= Duration::from_millis(50) => Some((led.pin, p)),
                Ok(_) => {
                    err("status_led.period: must be at least 50ms".into());
                    None
                }
                Err(e) => {
                    err(format!("status_led.period: {e}"));
                    None
                }
            }
        });
        let button = self.button.as_ref().and_then(|b| {
            claim(b.pin, "button.pin".into(), &mut err);
            let action = match b.action.as_str() {
                "arm-toggle" => ButtonAction::ArmToggle,
                "snapshot" => ButtonAction::Snapshot,
                other => {
                    err(format!(
                        "button.action: {other:?} is not one of arm-toggle, snapshot"
                    ));
                    return None;
                }
            };
            Some((b.pin, b.active_low, action))
        });
        if matches!(button, Some((_, _, ButtonAction::Snapshot)))
            && self.gpio.snapshot_dir.is_none()
        {
            err("gpio.snapshot_dir: needed by button.action = \"snapshot\"".into());
        }

        if self.rules.len() > MAX_RULES {
            err(format!(
                "rules: {} rules given, at most {MAX_RULES} are supported",
                self.rules.len()
            ));
        }
        let classes: Vec<&str> = card.classes.iter().map(|c| c.name.as_str()).collect();
        let mut outputs: Vec<(u32, bool)> = Vec::new();
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let key = |field: &str| format!("rules[{i}].{field}");
            let name = r.name.clone().unwrap_or_else(|| format!("rule {i}"));
            let class = classes.iter().position(|c| *c == r.class);
            if class.is_none() {
                err(format!(
                    "{}: {:?} is not a class of model {:?} (classes: {})",
                    key("class"),
                    r.class,
                    card.name,
                    classes.join(", ")
                ));
            }
            let region = match r.region {
                None => Some(Region::FULL),
                Some([x0, y0, x1, y1]) => {
                    let ok = [x0, y0, x1, y1].iter().all(|v| (0.0..=1.0).contains(v))
                        && x0 < x1
                        && y0 < y1;
                    if ok {
                        Some(Region { x0, y0, x1, y1 })
                    } else {
                        err(format!(
                            "{}: [{x0}, {y0}, {x1}, {y1}] is not [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1",
                            key("region")
                        ));
                        None
                    }
                }
            };
            if !(0.0..1.0).contains(&r.above) {
                err(format!(
                    "{}: {} is not a coverage fraction in [0, 1)",
                    key("above"),
                    r.above
                ));
            }
            let below = r.below.unwrap_or(r.above);
            if !(0.0..=r.above.max(0.0)).contains(&below) {
                err(format!(
                    "{}: {below} must be in [0, above = {}] (it is the release threshold)",
                    key("below"),
                    r.above
                ));
            }
            if r.frames == 0 {
                err(format!("{}: must be 1 or more", key("frames")));
            }
            let clear_frames = r.clear_frames.unwrap_or(r.frames);
            if clear_frames == 0 {
                err(format!("{}: must be 1 or more", key("clear_frames")));
            }
            let hold = parse_duration(&r.hold)
                .map_err(|e| err(format!("{}: {e}", key("hold"))))
                .ok();
            let output = r.pin.and_then(|line| {
                if let Some(o) = outputs.iter().position(|(l, _)| *l == line) {
                    if outputs[o].1 != r.active_low {
                        err(format!(
                            "{}: line {line} is driven by another rule with the other polarity",
                            key("active_low")
                        ));
                    }
                    return Some(o);
                }
                claim(line, key("pin"), &mut err);
                if outputs.len() == MAX_OUTPUTS {
                    err(format!(
                        "{}: at most {MAX_OUTPUTS} output pins are supported",
                        key("pin")
                    ));
                    return None;
                }
                outputs.push((line, r.active_low));
                Some(outputs.len() - 1)
            });
            if !crate::events::BINARY_SENSOR_CLASSES.contains(&r.device_class.as_str()) {
                err(format!(
                    "{}: {:?} is not a Home Assistant binary_sensor device class ({})",
                    key("device_class"),
                    r.device_class,
                    crate::events::BINARY_SENSOR_CLASSES.join(", ")
                ));
            }
            if let Some(j) = self.rules[..i].iter().enumerate().position(|(j, o)| {
                slug(&o.name.clone().unwrap_or_else(|| format!("rule {j}"))) == slug(&name)
            }) {
                err(format!(
                    "{}: {name:?} gives the same topic and entity ID ({:?}) as rules[{j}]; rename one",
                    key("name"),
                    slug(&name)
                ));
            }
            if let (Some(class), Some(region), Some(hold)) = (class, region, hold) {
                rules.push((
                    name,
                    Rule {
                        class: class as u8,
                        region,
                        above: r.above,
                        below,
                        frames: r.frames,
                        clear_frames,
                        hold,
                        output,
                    },
                ));
            }
        }
        let rule_classes: Vec<&str> = self.rules.iter().map(|r| r.class.as_str()).collect();
        let mqtt = self.mqtt.as_ref().and_then(|m| {
            m.check(&classes, &rule_classes)
                .map_err(|e| e.into_iter().for_each(&mut err))
                .ok()
        });
        let webhooks: Vec<WebhookSettings> = self
            .webhooks
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                w.check(i)
                    .map_err(|e| e.into_iter().for_each(&mut err))
                    .ok()
            })
            .collect();
        let uses_pins = !outputs.is_empty() || status_led.is_some() || button.is_some();
        if uses_pins && self.gpio.chip.is_empty() {
            err("gpio.chip: empty; use a GPIO character device such as \"/dev/gpiochip0\", or \"log\"".into());
        }
        match (engine, source) {
            (Some(engine), Some(source)) if errors.is_empty() => Ok(Checked {
                config: self,
                rules,
                outputs,
                status_led,
                button,
                size,
                source,
                rtsp_transport,
                engine,
                record_what,
                viewer_auth,
                mqtt,
                webhooks,
            }),
            _ => Err(errors.join("\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard::from_json(
            include_str!("../../models/dla-tiny-seg.onnx.card.json"),
            Path::new("dla-tiny-seg.onnx.card.json"),
        )
        .unwrap()
    }

    fn check(text: &str) -> Result<Checked, String> {
        Config::parse(text)?.validate(&card())
    }

    #[test]
    fn an_empty_file_is_the_demo_with_defaults() {
        let c = check("").unwrap();
        assert_eq!(c.config.source.uri, "demo");
        assert_eq!(c.config.viewer.listen, "127.0.0.1:8080");
        assert!(c.rules.is_empty() && c.outputs.is_empty());
    }

    #[test]
    fn rules_become_engine_rules_with_shared_outputs() {
        let c = check(
            r#"
            [gpio]
            chip = "log"
            [status_led]
            pin = 27
            period = "500ms"
            [[rules]]
            class = "person"
            region = [0.0, 0.5, 1.0, 1.0]
            above = 0.05
            below = 0.03
            frames = 3
            hold = "2s"
            pin = 17
            [[rules]]
            name = "cars"
            class = "car"
            above = 0.2
            pin = 17
            "#,
        )
        .unwrap();
        assert_eq!(c.outputs, [(17, false)]);
        assert_eq!(c.status_led, Some((27, Duration::from_millis(500))));
        let (name, r) = &c.rules[0];
        assert_eq!(name, "rule 0");
        assert_eq!(r.class, 11, "person is class 11");
        assert_eq!(
            (r.above, r.below, r.frames, r.clear_frames),
            (0.05, 0.03, 3, 3)
        );
        assert_eq!(r.hold, Duration::from_secs(2));
        assert_eq!(c.rules[1].0, "cars");
        assert_eq!((c.rules[1].1.below, c.rules[1].1.output), (0.2, Some(0)));
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_line() {
        let e = check("[source]\nuri = \"demo\"\nfsp = 30\n").unwrap_err();
        assert!(e.contains("fsp") && e.contains("line 3"), "{e}");
        let e = check("[backend]\nthreads = \"four\"\n").unwrap_err();
        assert!(e.contains("threads") && e.contains("line 2"), "{e}");
        let e = check("[backend]\npin_threads = \"no\"\n").unwrap_err();
        assert!(e.contains("pin_threads") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn inference_threads_are_bound_unless_pin_threads_is_false() {
        assert!(check("").unwrap().config.backend.pin_threads);
        let c = check("[backend]\npin_threads = false\n").unwrap();
        assert!(!c.config.backend.pin_threads);
    }

    #[test]
    fn a_viewer_login_comes_from_a_file_and_open_paths_need_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("login");
        std::fs::write(&file, "a-long-token\n").unwrap();
        let c = check(&format!(
            "[viewer]\nlisten = \"0.0.0.0:8080\"\nlogin_file = {:?}\nopen_paths = [\"/metrics\"]\n",
            file
        ))
        .unwrap();
        let auth = c.viewer_auth.expect("a login");
        assert!(!auth.has_user() && format!("{auth:?}").contains("/metrics"));
        assert!(check("").unwrap().viewer_auth.is_none());
        let e = check("[viewer]\nlogin_file = \"/nonexistent/login\"\n").unwrap_err();
        assert!(
            e.contains("viewer.login_file: ") && e.contains("/nonexistent/login: cannot read"),
            "{e}"
        );
        std::fs::write(&file, "short\n").unwrap();
        let e = check(&format!("[viewer]\nlogin_file = {file:?}\n")).unwrap_err();
        assert!(e.contains("at least 8") && !e.contains("short\n"), "{e}");
        let e = check("[viewer]\nopen_paths = [\"/metrics\"]\n").unwrap_err();
        assert!(
            e.contains("viewer.open_paths: only means something with viewer.login_file"),
            "{e}"
        );
    }

    #[test]
    fn argmax_place_is_parsed_and_checked() {
        let c = check("[backend]\nengine = \"ort-cuda\"\nargmax = \"host\"\n").unwrap();
        assert_eq!(c.engine.2, ArgmaxAt::Host);
        assert_eq!(check("").unwrap().engine.2, ArgmaxAt::Auto);
        let e = check("[backend]\nargmax = \"gpu\"\n").unwrap_err();
        assert!(
            e.contains("backend.argmax: \"gpu\" is not one of auto, engine, host"),
            "{e}"
        );
    }

    #[test]
    fn every_bad_value_is_reported_at_once_with_its_key() {
        let e = check(
            r#"
            [backend]
            engine = "cuda"
            threads = 0
            [source]
            size = "640"
            fps = 0
            rtsp_transport = "quic"
            [viewer]
            listen = "everywhere"
            alpha = 2
            [record]
            dir = "rec"
            what = ["video"]
            [button]
            pin = 17
            action = "snapshot"
            [[rules]]
            class = "persn"
            region = [0.5, 0.0, 0.2, 1.0]
            above = 1.5
            below = 2.0
            frames = 0
            hold = "soon"
            pin = 17
            "#,
        )
        .unwrap_err();
        for expected in [
            "backend.engine: \"cuda\" is not one of tract, ort-cpu, ort-cuda, ort-tensorrt",
            "backend.threads: must be 1 or more",
            "source.size: \"640\" is not WIDTHxHEIGHT",
            "source.fps: 0 is not a frame rate",
            "source.rtsp_transport: unknown RTSP transport \"quic\": expected \"tcp\" or \"udp\"",
            "viewer.listen: \"everywhere\"",
            "viewer.alpha: 2 is not in [0, 1]",
            "record.what: \"video\" is not one of overlay, mask, labels",
            "gpio.snapshot_dir: needed by button.action = \"snapshot\"",
            "rules[0].class: \"persn\" is not a class of model",
            "person, rider, car",
            "rules[0].region: [0.5, 0, 0.2, 1] is not [x0, y0, x1, y1]",
            "rules[0].above: 1.5 is not a coverage fraction",
            "rules[0].frames: must be 1 or more",
            "rules[0].hold: \"soon\" is not a duration",
            "rules[0].pin: line 17 is already used by button.pin",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }

    #[test]
    fn too_many_rules_and_outputs_are_refused() {
        let mut text = String::new();
        for i in 0..=MAX_RULES {
            text += &format!("[[rules]]\nclass = \"car\"\nabove = 0.1\npin = {i}\n");
        }
        let e = check(&text).unwrap_err();
        assert!(
            e.contains(&format!("at most {MAX_RULES} are supported")),
            "{e}"
        );
        assert!(
            e.contains(&format!("at most {MAX_OUTPUTS} output pins")),
            "{e}"
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1s").is_err() && parse_duration("x").is_err());
        assert_eq!(parse_size("1280x720"), Ok((1280, 720)));
        assert!(parse_size("0x720").is_err() && parse_size("big").is_err());
    }
}
