//! Counters and histograms, rendered in the Prometheus text format at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use herald_protocol::ErrorCode;

/// Upper bounds of the publish-to-send latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Buckets a [`Tally`] counts locally (later ones go straight to the histogram).
const TALLY_BUCKETS: usize = 16;

/// Observations counted locally and added to a [`Histogram`] when dropped:
/// a writer pays a few shared atomic adds per batch instead of three per frame.
#[derive(Debug)]
pub(crate) struct Tally<'h> {
    histogram: &'h Histogram,
    counts: [u64; TALLY_BUCKETS],
    sum_micros: u64,
    count: u64,
}

impl Tally<'_> {
    pub(crate) fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = self.histogram.bounds.iter().position(|b| seconds <= *b) {
            match self.counts.get_mut(i) {
                Some(count) => *count += 1,
                None => {
                    self.histogram.counts[i].fetch_add(1, Relaxed);
                }
            }
        }
        self.sum_micros += value.as_micros() as u64;
        self.count += 1;
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if self.count == 0 {
            return;
        }
        for (shared, &n) in self.histogram.counts.iter().zip(&self.counts) {
            if n > 0 {
                shared.fetch_add(n, Relaxed);
            }
        }
        self.histogram
            .sum_micros
            .fetch_add(self.sum_micros, Relaxed);
        self.histogram.count.fetch_add(self.count, Relaxed);
    }
}

/// A histogram with fixed buckets, lock-free.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub(crate) fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, value: Duration) {
        self.tally().observe(value);
    }

    /// A local tally whose observations reach this histogram when it drops.
    pub(crate) fn tally(&self) -> Tally<'_> {
        Tally {
            histogram: self,
            counts: [0; TALLY_BUCKETS],
            sum_micros: 0,
            count: 0,
        }
    }

    /// The counts now, to compare with a later reading.
    pub(crate) fn reading(&self) -> Reading {
        Reading {
            bounds: self.bounds,
            buckets: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            count: self.count.load(Relaxed),
        }
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// A [`Histogram`]'s counts at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative).
    buckets: Vec<u64>,
    /// Every observation, those above the last bound included.
    count: u64,
}

impl Reading {
    /// The `q` quantile (0 to 1) of what was observed between `earlier` and
    /// this reading, as the upper bound of the bucket it falls in (the last
    /// bound when it falls above every bound); `None` if nothing was observed.
    pub(crate) fn quantile_since(&self, earlier: &Reading, q: f64) -> Option<f64> {
        let total = self.count.saturating_sub(earlier.count);
        if total == 0 {
            return None;
        }
        let wanted = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            let now = self.buckets.get(i).copied().unwrap_or(0);
            let before = earlier.buckets.get(i).copied().unwrap_or(0);
            cumulative += now.saturating_sub(before);
            if cumulative >= wanted {
                return Some(*bound);
            }
        }
        self.bounds.last().copied()
    }
}

/// Every number the hub exports.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) connections_active: AtomicI64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) events_published: AtomicU64,
    pub(crate) events_duplicate: AtomicU64,
    pub(crate) events_delivered: AtomicU64,
    pub(crate) events_shed: AtomicU64,
    pub(crate) slow_consumer_closes: AtomicU64,
    pub(crate) unix_datagrams: AtomicU64,
    pub(crate) unix_datagrams_rejected: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    pub(crate) publish_to_send: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_active: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            events_published: AtomicU64::new(0),
            events_duplicate: AtomicU64::new(0),
            events_delivered: AtomicU64::new(0),
            events_shed: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            unix_datagrams: AtomicU64::new(0),
            unix_datagrams_rejected: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            publish_to_send: Histogram::new(&LATENCY_BUCKETS),
        }
    }
}

impl Metrics {
    /// Counts an error reported to a peer.
    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Renders everything in the Prometheus text format; `extra` adds gauges
    /// the caller computes at scrape time.
    pub(crate) fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, kind: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "herald_connections_active",
            "Open WebSocket connections.",
            "gauge",
            self.connections_active.load(Relaxed) as f64,
        );
        let counters = [
            (
                "herald_connections_total",
                "WebSocket connections accepted.",
                &self.connections_total,
            ),
            (
                "herald_connections_rejected_total",
                "WebSocket connections refused at the connection limit.",
                &self.connections_rejected,
            ),
            (
                "herald_frames_in_total",
                "Frames received from clients.",
                &self.frames_in,
            ),
            (
                "herald_bytes_in_total",
                "Bytes received from clients in frames.",
                &self.bytes_in,
            ),
            (
                "herald_frames_out_total",
                "Frames sent to clients.",
                &self.frames_out,
            ),
            (
                "herald_bytes_out_total",
                "Bytes sent to clients in frames.",
                &self.bytes_out,
            ),
            (
                "herald_events_published_total",
                "Events published.",
                &self.events_published,
            ),
            (
                "herald_events_duplicate_total",
                "Publishes answered from the idempotency window.",
                &self.events_duplicate,
            ),
            (
                "herald_events_delivered_total",
                "Event frames queued to connections.",
                &self.events_delivered,
            ),
            (
                "herald_events_shed_total",
                "Low and normal events dropped for slow consumers (told with a gap).",
                &self.events_shed,
            ),
            (
                "herald_slow_consumer_closes_total",
                "Connections closed with 1013 because a high or critical event would be lost.",
                &self.slow_consumer_closes,
            ),
            (
                "herald_unix_datagrams_total",
                "Datagrams received.",
                &self.unix_datagrams,
            ),
            (
                "herald_unix_datagrams_rejected_total",
                "Datagrams that were not valid events.",
                &self.unix_datagrams_rejected,
            ),
        ];
        for (name, help, counter) in counters {
            gauge(name, help, "counter", counter.load(Relaxed) as f64);
        }
        for (name, help, value) in extra {
            gauge(name, help, "gauge", *value);
        }
        let _ = writeln!(
            out,
            "# HELP herald_errors_total Errors reported to peers, by code.\n# TYPE herald_errors_total counter"
        );
        for (code, count) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "herald_errors_total{{code=\"{code}\"}} {}",
                count.load(Relaxed)
            );
        }
        self.publish_to_send.render(
            &mut out,
            "herald_publish_to_send_seconds",
            "Time from publish to the frame being written to the socket.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(histogram: &Histogram) -> String {
        let mut out = String::new();
        histogram.render(&mut out, "h", "help");
        out
    }

    #[test]
    fn a_tally_adds_its_observations_to_the_cumulative_buckets_once_dropped() {
        let histogram = Histogram::new(&LATENCY_BUCKETS);
        let mut tally = histogram.tally();
        for age in [
            Duration::from_micros(10),  // ≤ 50 µs
            Duration::from_micros(700), // ≤ 1 ms
            Duration::from_millis(30),  // ≤ 50 ms
            Duration::from_secs(5),     // above every bound: +Inf only
        ] {
            tally.observe(age);
        }
        assert!(
            rendered(&histogram).contains("h_count 0"),
            "nothing is added before the tally drops"
        );
        drop(tally);
        let out = rendered(&histogram);
        for line in [
            "h_bucket{le=\"0.00005\"} 1",
            "h_bucket{le=\"0.0005\"} 1",
            "h_bucket{le=\"0.001\"} 2",
            "h_bucket{le=\"0.025\"} 2",
            "h_bucket{le=\"0.05\"} 3",
            "h_bucket{le=\"1\"} 3",
            "h_bucket{le=\"+Inf\"} 4",
            "h_sum 5.03071",
            "h_count 4",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn the_quantile_of_a_window_is_the_bound_of_its_bucket() {
        let histogram = Histogram::new(&LATENCY_BUCKETS);
        histogram.observe(Duration::from_secs(3)); // before the window
        let earlier = histogram.reading();
        assert_eq!(histogram.reading().quantile_since(&earlier, 0.99), None);
        for _ in 0..98 {
            histogram.observe(Duration::from_micros(40)); // ≤ 50 µs
        }
        histogram.observe(Duration::from_micros(700)); // ≤ 1 ms
        histogram.observe(Duration::from_millis(20)); // ≤ 25 ms
        let now = histogram.reading();
        assert_eq!(now.quantile_since(&earlier, 0.5), Some(0.000_05));
        assert_eq!(now.quantile_since(&earlier, 0.99), Some(0.001));
        assert_eq!(now.quantile_since(&earlier, 1.0), Some(0.025));
        histogram.observe(Duration::from_secs(5));
        histogram.observe(Duration::from_secs(5));
        let later = histogram.reading();
        assert_eq!(
            later.quantile_since(&now, 0.99),
            Some(1.0),
            "above every bound reads as the last bound"
        );
    }

    #[test]
    fn a_tally_counts_buckets_beyond_its_local_array() {
        static MANY: [f64; TALLY_BUCKETS + 2] = {
            let mut bounds = [0.0; TALLY_BUCKETS + 2];
            let mut i = 0;
            while i < bounds.len() {
                bounds[i] = (i + 1) as f64;
                i += 1;
            }
            bounds
        };
        let histogram = Histogram::new(&MANY);
        {
            let mut tally = histogram.tally();
            for s in [0.5, 16.5, 17.5] {
                tally.observe(Duration::from_secs_f64(s));
            }
        }
        let out = rendered(&histogram);
        for line in [
            "h_bucket{le=\"1\"} 1",
            "h_bucket{le=\"16\"} 1",
            "h_bucket{le=\"17\"} 2",
            "h_bucket{le=\"18\"} 3",
            "h_count 3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }
}
