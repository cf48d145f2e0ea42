//! Per-class coverage of the whole frame, offered to the links at a low,
//! configured rate (Home Assistant sensors; dashboards): a sink that costs
//! one comparison per frame between reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dla_runtime::sink::{Output, Sink};

use super::message::{now_rfc3339, CoverageBody, Message};
use super::Outlets;

/// Offers a [`Message::Coverage`] every `every`.
pub struct CoverageSink {
    outlets: Arc<Outlets>,
    device: String,
    every: Duration,
    next: Instant,
}

impl CoverageSink {
    /// The first report goes with the first frame.
    pub fn new(outlets: Arc<Outlets>, device: String, every: Duration) -> CoverageSink {
        CoverageSink {
            outlets,
            device,
            every,
            next: Instant::now(),
        }
    }
}

impl Sink for CoverageSink {
    fn name(&self) -> String {
        "coverage".into()
    }

    fn write(&mut self, out: &Output<'_>) -> dla_runtime::Result<()> {
        let now = Instant::now();
        if now < self.next {
            return Ok(());
        }
        self.next = now + self.every;
        let classes: BTreeMap<String, f32> = out
            .classes
            .iter()
            .zip(out.coverage)
            .map(|(c, &f)| (c.name.clone(), (f * 1000.0).round() / 10.0))
            .collect();
        self.outlets
            .offer(&Message::Coverage(Arc::new(CoverageBody {
                device: self.device.clone(),
                frame: out.index,
                time: now_rfc3339(),
                classes,
            })));
        Ok(())
    }
}
