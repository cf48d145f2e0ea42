//! Home Assistant MQTT discovery: retained config messages that make each
//! rule a `binary_sensor`, each watched class's coverage a `sensor` (%), and
//! the trigger snapshot a `camera`, all on one device with this board's
//! availability topic. See <https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery>.

use serde_json::{json, Value};

use super::config::{slug, MqttSettings};

/// A rule as Home Assistant sees it.
#[derive(Debug, Clone)]
pub struct RuleEntity {
    /// The rule's name (the entity's name).
    pub name: String,
    /// Topic level and ID part.
    pub slug: String,
    /// `binary_sensor` device class, e.g. `occupancy`.
    pub device_class: String,
}

/// The topics this device publishes to.
pub struct Topics {
    /// `PREFIX/DEVICE/availability`: `online` / `offline` (last will), retained.
    pub availability: String,
    /// `PREFIX/DEVICE/events`: every event's JSON, QoS 1.
    pub events: String,
    /// `PREFIX/DEVICE/coverage`: per-class coverage JSON, retained.
    pub coverage: String,
    /// `PREFIX/DEVICE/snapshot`: JPEG of the overlay, retained.
    pub snapshot: String,
}

impl Topics {
    /// The topics under `settings`' base topic.
    pub fn new(settings: &MqttSettings) -> Topics {
        let base = settings.base_topic();
        Topics {
            availability: format!("{base}/availability"),
            events: format!("{base}/events"),
            coverage: format!("{base}/coverage"),
            snapshot: format!("{base}/snapshot"),
        }
    }

    /// `PREFIX/DEVICE/rules/RULE/state`: `ON` / `OFF`, retained.
    pub fn rule_state(settings: &MqttSettings, rule: &RuleEntity) -> String {
        format!("{}/rules/{}/state", settings.base_topic(), rule.slug)
    }

    /// `PREFIX/DEVICE/rules/RULE`: the rule's latest event JSON, retained
    /// (Home Assistant shows it as the entity's attributes).
    pub fn rule_attributes(settings: &MqttSettings, rule: &RuleEntity) -> String {
        format!("{}/rules/{}", settings.base_topic(), rule.slug)
    }
}

/// What the device entry says about this board.
pub struct DeviceInfo {
    /// E.g. `dla-tiny-seg-int8 on tract (2 threads)`.
    pub model: String,
}

/// Every discovery config this device publishes, as (topic, payload).
pub fn configs(
    settings: &MqttSettings,
    prefix: &str,
    rules: &[RuleEntity],
    device: &DeviceInfo,
) -> Vec<(String, Value)> {
    let node = settings.node();
    let topics = Topics::new(settings);
    let common = json!({
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [format!("dla-edge_{node}")],
            "name": settings.device,
            "manufacturer": "dla-edge",
            "model": device.model,
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
        "origin": {
            "name": "dla-edge",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
    });
    let with_common = |mut v: Value| {
        if let (Value::Object(v), Value::Object(c)) = (&mut v, &common) {
            v.extend(c.clone());
        }
        v
    };
    let mut out = Vec::new();
    for rule in rules {
        out.push((
            format!("{prefix}/binary_sensor/{node}/{}/config", rule.slug),
            with_common(json!({
                "name": rule.name,
                "unique_id": format!("{node}_{}", rule.slug),
                "device_class": rule.device_class,
                "state_topic": Topics::rule_state(settings, rule),
                "payload_on": "ON",
                "payload_off": "OFF",
                "json_attributes_topic": Topics::rule_attributes(settings, rule),
            })),
        ));
    }
    for class in &settings.coverage_classes {
        let id = format!("coverage_{}", slug(class));
        out.push((
            format!("{prefix}/sensor/{node}/{id}/config"),
            with_common(json!({
                "name": format!("{class} coverage"),
                "unique_id": format!("{node}_{id}"),
                "state_topic": topics.coverage,
                "value_template": format!(
                    "{{{{ value_json.classes['{}'] }}}}",
                    class.replace('\\', "\\\\").replace('\'', "\\'")
                ),
                "unit_of_measurement": "%",
                "state_class": "measurement",
                "icon": "mdi:image-filter-center-focus",
            })),
        ));
    }
    if settings.snapshot {
        out.push((
            format!("{prefix}/camera/{node}/snapshot/config"),
            with_common(json!({
                "name": "trigger snapshot",
                "unique_id": format!("{node}_snapshot"),
                "topic": topics.snapshot,
            })),
        ));
    }
    out
}

/// The wildcard under which this device's configs live (to find the ones a
/// previous configuration left behind).
pub fn own_configs_filter(prefix: &str, settings: &MqttSettings) -> String {
    format!("{prefix}/+/{}/+/config", settings.node())
}

/// Home Assistant's Binary Sensor device classes (the ones a rule may name).
pub const BINARY_SENSOR_CLASSES: [&str; 26] = [
    "battery",
    "battery_charging",
    "carbon_monoxide",
    "cold",
    "connectivity",
    "door",
    "garage_door",
    "gas",
    "heat",
    "light",
    "lock",
    "moisture",
    "motion",
    "moving",
    "occupancy",
    "opening",
    "plug",
    "power",
    "presence",
    "problem",
    "running",
    "safety",
    "smoke",
    "sound",
    "tamper",
    "vibration",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::config::BrokerAddress;

    fn settings() -> MqttSettings {
        MqttSettings {
            broker: BrokerAddress::parse("mqtt://127.0.0.1").unwrap(),
            login: None,
            ca_file: None,
            device: "Drive Way".into(),
            topic_prefix: "dla-edge".into(),
            discovery: Some("homeassistant".into()),
            coverage_every: None,
            coverage_classes: vec!["road".into(), "traffic light".into()],
            snapshot: true,
            queue: 10,
        }
    }

    #[test]
    fn each_rule_class_and_snapshot_gets_one_entity_on_one_device() {
        let rules = [RuleEntity {
            name: "Road ahead".into(),
            slug: "road_ahead".into(),
            device_class: "occupancy".into(),
        }];
        let c = configs(
            &settings(),
            "homeassistant",
            &rules,
            &DeviceInfo { model: "m".into() },
        );
        let topics: Vec<&str> = c.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/binary_sensor/drive_way/road_ahead/config",
                "homeassistant/sensor/drive_way/coverage_road/config",
                "homeassistant/sensor/drive_way/coverage_traffic_light/config",
                "homeassistant/camera/drive_way/snapshot/config",
            ]
        );
        let rule = &c[0].1;
        assert_eq!(
            rule["state_topic"],
            "dla-edge/drive_way/rules/road_ahead/state"
        );
        assert_eq!(
            rule["availability_topic"],
            "dla-edge/drive_way/availability"
        );
        assert_eq!(rule["device_class"], "occupancy");
        assert_eq!(rule["device"]["identifiers"][0], "dla-edge_drive_way");
        assert_eq!(
            c[2].1["value_template"],
            "{{ value_json.classes['traffic light'] }}"
        );
        assert_eq!(
            own_configs_filter("homeassistant", &settings()),
            "homeassistant/+/drive_way/+/config"
        );
    }
}
