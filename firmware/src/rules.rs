//! Rules that turn segmentation into actions on GPIO pins: "class `person`
//! covers more than 5 % of region R for 3 frames in a row -> pin 17 active
//! for at least 2 s", plus a heartbeat LED and a button.
//!
//! The engine is generic over embedded-hal 1.0's [`OutputPin`] and
//! [`InputPin`], so the same code drives a board's GPIO character device
//! (`crate::gpio`) and the mock pins of the tests. Rules, pins, regions and
//! the event queue live in fixed-capacity `heapless` collections and time
//! comes in as an argument: [`RuleEngine::on_frame`] allocates nothing and
//! behaves the same in a test as on a board.
//!
//! A rule has hysteresis in both value and time: it triggers when coverage
//! stays above `above` for `frames` frames, and releases when it stays below
//! `below` (at most `above`) for `clear_frames` frames **and** `hold` has
//! passed since it triggered. An output pin is active while any armed rule
//! driving it is active.

use std::time::Duration;

use embedded_hal::digital::{InputPin, OutputPin, PinState};
use heapless::{Deque, Vec};

/// Most rules one engine holds.
pub const MAX_RULES: usize = 16;
/// Most output pins (rule outputs; the heartbeat LED is separate).
pub const MAX_OUTPUTS: usize = 8;
/// Events kept until the caller drains them; older ones are dropped and counted.
pub const EVENT_QUEUE: usize = 32;
/// Consecutive equal button reads (one per frame) that make a press.
const BUTTON_DEBOUNCE: u8 = 2;

/// A rectangle of the frame, in fractions of its width and height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Left edge, 0..1.
    pub x0: f32,
    /// Top edge, 0..1.
    pub y0: f32,
    /// Right edge, 0..1, greater than `x0`.
    pub x1: f32,
    /// Bottom edge, 0..1, greater than `y0`.
    pub y1: f32,
}

impl Region {
    /// The whole frame.
    pub const FULL: Region = Region {
        x0: 0.0,
        y0: 0.0,
        x1: 1.0,
        y1: 1.0,
    };

    /// Pixel bounds `(x0, y0, x1, y1)` on a `width` x `height` frame; never
    /// empty for a valid region on a non-empty frame.
    fn pixels(&self, width: usize, height: usize) -> (usize, usize, usize, usize) {
        let at = |f: f32, n: usize| ((f * n as f32).round() as usize).min(n);
        let (x0, y0) = (at(self.x0, width), at(self.y0, height));
        let (x1, y1) = (at(self.x1, width), at(self.y1, height));
        (
            x0.min(width.saturating_sub(1)),
            y0.min(height.saturating_sub(1)),
            x1.max(x0 + 1).min(width),
            y1.max(y0 + 1).min(height),
        )
    }
}

/// One rule, as validated from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Class ID to watch.
    pub class: u8,
    /// Where in the frame.
    pub region: Region,
    /// Coverage (fraction of the region, 0..1) above which the rule counts a frame.
    pub above: f32,
    /// Coverage below which the rule counts a frame towards release (<= `above`).
    pub below: f32,
    /// Consecutive frames above `above` that trigger it (>= 1).
    pub frames: u32,
    /// Consecutive frames below `below` that release it (>= 1).
    pub clear_frames: u32,
    /// Least time it stays active once triggered.
    pub hold: Duration,
    /// Index of the output it drives ([`RuleEngine::add_output`]), if any.
    pub output: Option<usize>,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A rule became active (its output, if any, went active).
    Triggered,
    /// A rule became inactive.
    Released,
    /// The button armed the rules.
    Armed,
    /// The button disarmed the rules (outputs inactive until armed again).
    Disarmed,
    /// The button asked for a snapshot.
    Snapshot,
}

impl EventKind {
    /// Lower-case name for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Triggered => "triggered",
            EventKind::Released => "released",
            EventKind::Armed => "armed",
            EventKind::Disarmed => "disarmed",
            EventKind::Snapshot => "snapshot",
        }
    }
}

/// One event, in the order they happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Frame number passed to [`RuleEngine::on_frame`].
    pub frame: u64,
    /// Time passed to [`RuleEngine::on_frame`].
    pub at: Duration,
    /// The rule's index, for rule events.
    pub rule: Option<usize>,
    /// The rule's coverage on that frame (0 for button events).
    pub coverage: f32,
}

/// What the button does when pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    /// Arm or disarm all rules.
    ArmToggle,
    /// Emit a [`EventKind::Snapshot`] event (the caller saves the frame).
    Snapshot,
}

/// A pin failed; names which one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GPIO {what}: {reason}")]
pub struct PinError {
    /// e.g. "output 0", "heartbeat LED", "button".
    pub what: String,
    /// The driver's error.
    pub reason: String,
}

/// More rules or outputs than the engine holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("at most {max} {what} are supported")]
pub struct CapacityError {
    /// "rules" or "output pins".
    pub what: &'static str,
    /// The capacity.
    pub max: usize,
}

fn pin_error(what: &str, e: impl core::fmt::Debug) -> PinError {
    PinError {
        what: what.to_string(),
        reason: format!("{e:?}"),
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct RuleState {
    active: bool,
    /// Consecutive frames counting towards the next transition.
    run: u32,
    since: Duration,
    coverage: f32,
}

struct Output<P> {
    pin: P,
    active_low: bool,
    active: bool,
}

struct Heartbeat<P> {
    pin: P,
    half_period: Duration,
    last: Option<Duration>,
    on: bool,
}

struct Button<P> {
    pin: P,
    active_low: bool,
    action: ButtonAction,
    pressed: bool,
    run: u8,
}

/// Class histogram of one distinct region, recomputed every frame.
struct RegionCount {
    region: Region,
    area: u32,
    counts: [u32; 256],
}

/// Rules, their pins and the events they raise.
pub struct RuleEngine<O: OutputPin, I: InputPin> {
    rules: Vec<(Rule, RuleState, usize), MAX_RULES>,
    regions: Vec<RegionCount, MAX_RULES>,
    outputs: Vec<Output<O>, MAX_OUTPUTS>,
    heartbeat: Option<Heartbeat<O>>,
    button: Option<Button<I>>,
    armed: bool,
    events: Deque<Event, EVENT_QUEUE>,
    events_lost: u64,
}

impl<O: OutputPin, I: InputPin> Default for RuleEngine<O, I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O: OutputPin, I: InputPin> RuleEngine<O, I> {
    /// An empty, armed engine.
    pub fn new() -> Self {
        RuleEngine {
            rules: Vec::new(),
            regions: Vec::new(),
            outputs: Vec::new(),
            heartbeat: None,
            button: None,
            armed: true,
            events: Deque::new(),
            events_lost: 0,
        }
    }

    /// Adds an output pin and drives it inactive; returns its index for [`Rule::output`].
    pub fn add_output(&mut self, mut pin: O, active_low: bool) -> Result<usize, AddError> {
        let index = self.outputs.len();
        if self.outputs.is_full() {
            return Err(CapacityError {
                what: "output pins",
                max: MAX_OUTPUTS,
            }
            .into());
        }
        pin.set_state(level(false, active_low))
            .map_err(|e| pin_error(&format!("output {index}"), e))?;
        // Cannot fail: checked above.
        let _ = self.outputs.push(Output {
            pin,
            active_low,
            active: false,
        });
        Ok(index)
    }

    /// Adds a rule; its output must have been added first.
    pub fn add_rule(&mut self, rule: Rule) -> Result<usize, AddError> {
        if let Some(o) = rule.output {
            assert!(o < self.outputs.len(), "rule output {o} was not added");
        }
        let full = CapacityError {
            what: "rules",
            max: MAX_RULES,
        };
        let region = match self.regions.iter().position(|r| r.region == rule.region) {
            Some(i) => i,
            None => {
                self.regions
                    .push(RegionCount {
                        region: rule.region,
                        area: 0,
                        counts: [0; 256],
                    })
                    .map_err(|_| full)?;
                self.regions.len() - 1
            }
        };
        self.rules
            .push((rule, RuleState::default(), region))
            .map_err(|_| full)?;
        Ok(self.rules.len() - 1)
    }

    /// A status LED that blinks with this half-period while frames flow.
    pub fn set_heartbeat(&mut self, mut pin: O, period: Duration) -> Result<(), PinError> {
        pin.set_low().map_err(|e| pin_error("heartbeat LED", e))?;
        self.heartbeat = Some(Heartbeat {
            pin,
            half_period: period / 2,
            last: None,
            on: false,
        });
        Ok(())
    }

    /// A push button, read once per frame and debounced over two frames.
    pub fn set_button(&mut self, pin: I, active_low: bool, action: ButtonAction) {
        self.button = Some(Button {
            pin,
            active_low,
            action,
            pressed: false,
            run: 0,
        });
    }

    #[cfg(test)]
    /// Whether rules may drive their outputs (the button can disarm them).
    pub fn armed(&self) -> bool {
        self.armed
    }

    #[cfg(test)]
    /// Whether rule `i` is active.
    pub fn is_active(&self, i: usize) -> bool {
        self.rules.get(i).is_some_and(|r| r.1.active)
    }

    #[cfg(test)]
    /// Rule `i`'s coverage on the last frame.
    pub fn coverage(&self, i: usize) -> f32 {
        self.rules.get(i).map_or(0.0, |r| r.1.coverage)
    }

    /// Events dropped because nobody drained the queue in time.
    pub fn events_lost(&self) -> u64 {
        self.events_lost
    }

    /// The oldest event not yet taken.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn push(&mut self, event: Event) {
        if self.events.is_full() {
            self.events.pop_front();
            self.events_lost += 1;
        }
        // Cannot fail: there is room now.
        let _ = self.events.push_back(event);
    }

    /// Runs every rule on one frame's label map (`width * height` class IDs),
    /// then updates the pins. `now` is any monotonic clock (time since start).
    pub fn on_frame(
        &mut self,
        frame: u64,
        labels: &[u8],
        width: usize,
        height: usize,
        now: Duration,
    ) -> Result<(), PinError> {
        debug_assert_eq!(labels.len(), width * height);
        self.poll_button(frame, now)?;
        for rc in &mut self.regions {
            let (x0, y0, x1, y1) = rc.region.pixels(width, height);
            rc.counts.fill(0);
            for row in labels.chunks_exact(width.max(1)).take(y1).skip(y0) {
                for &l in &row[x0..x1] {
                    rc.counts[l as usize] += 1;
                }
            }
            rc.area = ((x1 - x0) * (y1 - y0)) as u32;
        }
        for i in 0..self.rules.len() {
            let armed = self.armed;
            let (rule, state, region) = &mut self.rules[i];
            let rc = &self.regions[*region];
            let coverage = rc.counts[rule.class as usize] as f32 / rc.area.max(1) as f32;
            state.coverage = coverage;
            let change = if !state.active {
                state.run = if coverage > rule.above {
                    state.run + 1
                } else {
                    0
                };
                (armed && state.run >= rule.frames).then_some(EventKind::Triggered)
            } else {
                state.run = if coverage < rule.below {
                    state.run + 1
                } else {
                    0
                };
                let released = state.run >= rule.clear_frames && now >= state.since + rule.hold;
                (released || !armed).then_some(EventKind::Released)
            };
            if let Some(kind) = change {
                state.active = kind == EventKind::Triggered;
                state.run = 0;
                state.since = now;
                self.push(Event {
                    kind,
                    frame,
                    at: now,
                    rule: Some(i),
                    coverage,
                });
            }
        }
        self.drive_outputs()?;
        if let Some(hb) = &mut self.heartbeat {
            if hb.last.is_none_or(|t| now >= t + hb.half_period) {
                hb.on = !hb.on;
                hb.last = Some(now);
                hb.pin
                    .set_state(PinState::from(hb.on))
                    .map_err(|e| pin_error("heartbeat LED", e))?;
            }
        }
        Ok(())
    }

    fn poll_button(&mut self, frame: u64, now: Duration) -> Result<(), PinError> {
        let Some(b) = &mut self.button else {
            return Ok(());
        };
        let high = b.pin.is_high().map_err(|e| pin_error("button", e))?;
        let down = high != b.active_low;
        if down == b.pressed {
            b.run = 0;
            return Ok(());
        }
        b.run += 1;
        if b.run < BUTTON_DEBOUNCE {
            return Ok(());
        }
        b.pressed = down;
        b.run = 0;
        if !down {
            return Ok(());
        }
        let kind = match b.action {
            ButtonAction::Snapshot => EventKind::Snapshot,
            ButtonAction::ArmToggle => {
                self.armed = !self.armed;
                if self.armed {
                    EventKind::Armed
                } else {
                    EventKind::Disarmed
                }
            }
        };
        self.push(Event {
            kind,
            frame,
            at: now,
            rule: None,
            coverage: 0.0,
        });
        Ok(())
    }

    fn drive_outputs(&mut self) -> Result<(), PinError> {
        for (index, out) in self.outputs.iter_mut().enumerate() {
            let want = self.armed
                && self
                    .rules
                    .iter()
                    .any(|(r, s, _)| s.active && r.output == Some(index));
            if want != out.active {
                out.pin
                    .set_state(level(want, out.active_low))
                    .map_err(|e| pin_error(&format!("output {index}"), e))?;
                out.active = want;
            }
        }
        Ok(())
    }

    /// Drives every output inactive and the LED off (service stop).
    pub fn shutdown(&mut self) -> Result<(), PinError> {
        for (index, out) in self.outputs.iter_mut().enumerate() {
            out.pin
                .set_state(level(false, out.active_low))
                .map_err(|e| pin_error(&format!("output {index}"), e))?;
            out.active = false;
        }
        if let Some(hb) = &mut self.heartbeat {
            hb.pin
                .set_low()
                .map_err(|e| pin_error("heartbeat LED", e))?;
            hb.on = false;
        }
        Ok(())
    }
}

/// Either way adding to the engine fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// Too many.
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    /// The pin could not be set to its inactive level.
    #[error(transparent)]
    Pin(#[from] PinError),
}

/// Electrical level of a logical state.
fn level(active: bool, active_low: bool) -> PinState {
    PinState::from(active != active_low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    const W: usize = 20;
    const H: usize = 10;
    const PERSON: u8 = 11;

    /// A label map where `fraction` of the pixels (in reading order) are `class`.
    fn labels(class: u8, fraction: f32) -> std::vec::Vec<u8> {
        let n = (fraction * (W * H) as f32).round() as usize;
        (0..W * H).map(|i| if i < n { class } else { 0 }).collect()
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn rule(output: Option<usize>) -> Rule {
        Rule {
            class: PERSON,
            region: Region::FULL,
            above: 0.05,
            below: 0.05,
            frames: 3,
            clear_frames: 2,
            hold: Duration::from_secs(2),
            output,
        }
    }

    fn kinds(engine: &mut RuleEngine<Mock, Mock>) -> std::vec::Vec<(EventKind, u64)> {
        std::iter::from_fn(|| engine.next_event())
            .map(|e| (e.kind, e.frame))
            .collect()
    }

    #[test]
    fn triggers_after_consecutive_frames_and_holds_before_release() {
        let pin = Mock::new(&[
            T::set(State::Low),  // inactive at start
            T::set(State::High), // triggered
            T::set(State::Low),  // released
        ]);
        let mut e = RuleEngine::<Mock, Mock>::new();
        let out = e.add_output(pin.clone(), false).unwrap();
        e.add_rule(rule(Some(out))).unwrap();
        let (on, off) = (labels(PERSON, 0.10), labels(PERSON, 0.0));
        // Two frames above, one below: the run starts over.
        for (f, l) in [(1, &on), (2, &on), (3, &off)] {
            e.on_frame(f, l, W, H, ms(100 * f)).unwrap();
        }
        assert!(kinds(&mut e).is_empty() && !e.is_active(0));
        for f in 4..=6 {
            e.on_frame(f, &on, W, H, ms(100 * f)).unwrap();
        }
        assert_eq!(kinds(&mut e), [(EventKind::Triggered, 6)]);
        assert!((e.coverage(0) - 0.10).abs() < 1e-6);
        // Clear for 2 frames, but the 2 s hold has not passed.
        for f in 7..=9 {
            e.on_frame(f, &off, W, H, ms(100 * f)).unwrap();
        }
        assert!(e.is_active(0) && kinds(&mut e).is_empty());
        // 2 s after the trigger (frame 6 at 0.6 s), still clear: released.
        e.on_frame(10, &off, W, H, ms(2600)).unwrap();
        assert_eq!(kinds(&mut e), [(EventKind::Released, 10)]);
        pin.clone().done();
    }

    #[test]
    fn hysteresis_band_keeps_the_rule_active() {
        let mut e = RuleEngine::<Mock, Mock>::new();
        e.add_rule(Rule {
            above: 0.10,
            below: 0.04,
            frames: 1,
            clear_frames: 1,
            hold: Duration::ZERO,
            ..rule(None)
        })
        .unwrap();
        e.on_frame(1, &labels(PERSON, 0.2), W, H, ms(0)).unwrap();
        // 6 %: below `above` but not below `below`: stays active.
        for f in 2..10 {
            e.on_frame(f, &labels(PERSON, 0.06), W, H, ms(f)).unwrap();
        }
        assert!(e.is_active(0));
        e.on_frame(10, &labels(PERSON, 0.03), W, H, ms(10)).unwrap();
        assert_eq!(
            kinds(&mut e),
            [(EventKind::Triggered, 1), (EventKind::Released, 10)]
        );
    }

    #[test]
    fn regions_only_see_their_part_of_the_frame() {
        let mut e = RuleEngine::<Mock, Mock>::new();
        let left = Region {
            x0: 0.0,
            y0: 0.0,
            x1: 0.5,
            y1: 1.0,
        };
        let right = Region {
            x0: 0.5,
            x1: 1.0,
            ..left
        };
        let one = |region| Rule {
            region,
            above: 0.5,
            frames: 1,
            ..rule(None)
        };
        e.add_rule(one(left)).unwrap();
        e.add_rule(one(right)).unwrap();
        // Persons fill the left 60 % of every row.
        let l: std::vec::Vec<u8> = (0..W * H)
            .map(|i| if i % W < W * 6 / 10 { PERSON } else { 0 })
            .collect();
        e.on_frame(1, &l, W, H, ms(0)).unwrap();
        assert!((e.coverage(0) - 1.0).abs() < 1e-6, "{}", e.coverage(0));
        assert!((e.coverage(1) - 0.2).abs() < 1e-6, "{}", e.coverage(1));
        assert!(e.is_active(0) && !e.is_active(1));
    }

    #[test]
    fn rules_sharing_a_pin_keep_it_active_until_both_release() {
        // One rising and one falling edge, though two rules fire.
        let pin = Mock::new(&[T::set(State::Low), T::set(State::High), T::set(State::Low)]);
        let mut e = RuleEngine::<Mock, Mock>::new();
        let out = e.add_output(pin.clone(), false).unwrap();
        let quick = Rule {
            frames: 1,
            clear_frames: 1,
            hold: Duration::ZERO,
            ..rule(Some(out))
        };
        e.add_rule(quick.clone()).unwrap();
        e.add_rule(Rule { class: 3, ..quick }).unwrap();
        let both: std::vec::Vec<u8> = (0..W * H).map(|i| [PERSON, 3][i % 2]).collect();
        let car_only = labels(3, 0.5);
        e.on_frame(1, &both, W, H, ms(0)).unwrap();
        e.on_frame(2, &car_only, W, H, ms(1)).unwrap();
        assert!(!e.is_active(0) && e.is_active(1));
        e.on_frame(3, &labels(0, 1.0), W, H, ms(2)).unwrap();
        assert_eq!(kinds(&mut e).len(), 4);
        pin.clone().done();
    }

    #[test]
    fn active_low_outputs_idle_high() {
        let pin = Mock::new(&[T::set(State::High), T::set(State::Low), T::set(State::High)]);
        let mut e = RuleEngine::<Mock, Mock>::new();
        let out = e.add_output(pin.clone(), true).unwrap();
        e.add_rule(Rule {
            frames: 1,
            ..rule(Some(out))
        })
        .unwrap();
        e.on_frame(1, &labels(PERSON, 0.5), W, H, ms(0)).unwrap();
        e.shutdown().unwrap();
        pin.clone().done();
    }

    #[test]
    fn button_is_debounced_and_disarming_releases_outputs() {
        let out = Mock::new(&[T::set(State::Low), T::set(State::High), T::set(State::Low)]);
        // Active-low button: high = released. A one-frame glitch, then a press
        // held for two frames, then released.
        let reads = [
            State::High,
            State::Low,
            State::High,
            State::Low,
            State::Low,
            State::High,
            State::High,
        ];
        let button = Mock::new(&reads.map(T::get));
        let mut e = RuleEngine::<Mock, Mock>::new();
        let o = e.add_output(out.clone(), false).unwrap();
        e.add_rule(Rule {
            frames: 1,
            ..rule(Some(o))
        })
        .unwrap();
        e.set_button(button.clone(), true, ButtonAction::ArmToggle);
        let person = labels(PERSON, 0.5);
        for f in 1..=reads.len() as u64 {
            e.on_frame(f, &person, W, H, ms(f)).unwrap();
        }
        assert!(!e.armed());
        assert!(!e.is_active(0), "disarming released the rule");
        assert_eq!(
            kinds(&mut e),
            [
                (EventKind::Triggered, 1),
                (EventKind::Disarmed, 5),
                (EventKind::Released, 5)
            ]
        );
        out.clone().done();
        button.clone().done();
    }

    #[test]
    fn heartbeat_toggles_every_half_period() {
        let led = Mock::new(&[
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
        ]);
        let mut e = RuleEngine::<Mock, Mock>::new();
        e.set_heartbeat(led.clone(), Duration::from_secs(1))
            .unwrap();
        let l = labels(0, 1.0);
        // Frames every 100 ms for 1.2 s: toggles at 0, 0.5 and 1.0 s.
        for f in 0..=12 {
            e.on_frame(f, &l, W, H, ms(100 * f)).unwrap();
        }
        led.clone().done();
    }

    #[test]
    fn capacities_are_enforced_and_lost_events_counted() {
        let mut e = RuleEngine::<Mock, Mock>::new();
        let pins: std::vec::Vec<Mock> = (0..MAX_OUTPUTS)
            .map(|_| Mock::new(&[T::set(State::Low)]))
            .collect();
        for p in &pins {
            e.add_output(p.clone(), false).unwrap();
        }
        // One too many is refused before the pin is touched.
        let mut extra = Mock::new(&[]);
        assert!(matches!(
            e.add_output(extra.clone(), false),
            Err(AddError::Capacity(CapacityError {
                max: MAX_OUTPUTS,
                ..
            }))
        ));
        extra.done();
        let toggling = Rule {
            frames: 1,
            clear_frames: 1,
            hold: Duration::ZERO,
            ..rule(None)
        };
        for _ in 0..MAX_RULES {
            e.add_rule(toggling.clone()).unwrap();
        }
        assert!(matches!(
            e.add_rule(toggling),
            Err(AddError::Capacity(CapacityError { max: MAX_RULES, .. }))
        ));
        // 16 rules trigger, then release: 32 events fill the queue exactly;
        // 16 more push the oldest out.
        let (on, off) = (labels(PERSON, 0.5), labels(0, 1.0));
        for (f, l) in [(1, &on), (2, &off), (3, &on)] {
            e.on_frame(f, l, W, H, ms(f)).unwrap();
        }
        assert_eq!(e.events_lost(), MAX_RULES as u64);
        let kept = kinds(&mut e);
        assert_eq!(kept.len(), EVENT_QUEUE);
        assert_eq!(kept[0], (EventKind::Released, 2), "oldest dropped first");
        for mut p in pins {
            p.done();
        }
    }
}
