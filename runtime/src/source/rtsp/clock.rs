//! When the camera took each picture, by the camera's clock: RTCP sender
//! reports pair an RTP timestamp with the camera's NTP wall-clock time, and
//! a frame's RTP timestamp is its sampling instant (RFC 3550, 6.4.1). With
//! both clocks NTP-synced, labels time minus this is glass to labels.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use retina::rtcp::ReceivedCompoundPacket;
use retina::{NtpTimestamp, Timestamp};

/// Seconds from the NTP era (1900) to the Unix epoch (1970).
const NTP_TO_UNIX_SECS: u64 = 2_208_988_800;

/// The newest sender report of one stream, as (RTP time, camera time).
#[derive(Debug, Default)]
pub struct CameraClock {
    anchor: Option<(i64, SystemTime)>,
}

impl CameraClock {
    /// Takes the sender report in `rtcp`, if it has one.
    pub fn observe(&mut self, rtcp: &ReceivedCompoundPacket) {
        let Some(rtp) = rtcp.rtp_timestamp() else {
            return;
        };
        let report = rtcp
            .pkts()
            .find_map(|p| p.as_sender_report().ok().flatten());
        if let Some(at) = report.and_then(|r| unix_time(r.ntp_timestamp())) {
            self.anchor = Some((rtp.timestamp(), at));
        }
    }

    /// The camera's time of the picture stamped `ts`; `None` before the
    /// first sender report.
    pub fn time_of(&self, ts: Timestamp) -> Option<SystemTime> {
        let (rtp, at) = self.anchor?;
        let ticks = ts.timestamp() - rtp;
        let offset =
            Duration::from_secs_f64(ticks.unsigned_abs() as f64 / ts.clock_rate().get() as f64);
        if ticks >= 0 {
            at.checked_add(offset)
        } else {
            at.checked_sub(offset)
        }
    }
}

/// An NTP timestamp (32.32 fixed point since 1900) as a `SystemTime`;
/// `None` for times before 1970 (a camera whose clock was never set).
fn unix_time(ntp: NtpTimestamp) -> Option<SystemTime> {
    let secs = (ntp.0 >> 32).checked_sub(NTP_TO_UNIX_SECS)?;
    let nanos = ((ntp.0 & 0xFFFF_FFFF) * 1_000_000_000) >> 32;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    /// A sender report: header, SSRC, NTP time, RTP time, counts.
    fn sender_report(ntp: u64, rtp: u32) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend(0x1234_5678u32.to_be_bytes());
        p.extend(ntp.to_be_bytes());
        p.extend(rtp.to_be_bytes());
        p.extend([0u8; 8]);
        p
    }

    #[test]
    fn frames_get_the_camera_time_of_their_rtp_timestamp() {
        let rate = NonZeroU32::new(90_000).unwrap();
        // 2026-12-06T12:00:00.5Z in NTP time, at RTP time 900 000.
        let unix = 1_796_558_400u64;
        let ntp = ((unix + NTP_TO_UNIX_SECS) << 32) | (1u64 << 31);
        let sr_ts = Timestamp::new(900_000, rate, 0).unwrap();
        let rtcp = ReceivedCompoundPacket::dummy(Some(sr_ts), &sender_report(ntp, 900_000));
        let mut clock = CameraClock::default();
        let frame = Timestamp::new(900_000 + 4_500, rate, 0).unwrap();
        assert_eq!(clock.time_of(frame), None, "no report yet");
        clock.observe(&rtcp);
        let at = |secs: f64| UNIX_EPOCH + Duration::from_secs_f64(secs);
        let got = clock.time_of(frame).unwrap();
        let want = at(unix as f64 + 0.5 + 0.05);
        let error = got.duration_since(want).unwrap_or_else(|e| e.duration());
        assert!(error < Duration::from_micros(1), "{got:?} vs {want:?}");
        // A frame stamped before the report (reordering, B frames).
        let earlier = Timestamp::new(900_000 - 9_000, rate, 0).unwrap();
        let got = clock.time_of(earlier).unwrap();
        let error = got
            .duration_since(at(unix as f64 + 0.4))
            .unwrap_or_else(|e| e.duration());
        assert!(error < Duration::from_micros(1));
    }

    #[test]
    fn a_camera_clock_before_1970_gives_no_time() {
        assert_eq!(unix_time(NtpTimestamp(5 << 32)), None);
        assert_eq!(
            unix_time(NtpTimestamp(NTP_TO_UNIX_SECS << 32)),
            Some(UNIX_EPOCH)
        );
    }
}
