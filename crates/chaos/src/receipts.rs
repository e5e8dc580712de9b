//! Which producers' events one subscriber received, by the producers' own
//! numbering (`data: {"producer": P, "n": N}`, id `pP-N`), and the check
//! of every acknowledged publish against it.
//!
//! Memory: per producer, the numbers received as merged ranges, so a
//! subscriber that got everything holds one range per producer, and one
//! that missed some holds one more range per hole.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::producer::topic_of;

/// What one producer had acknowledged (HTTP 2xx) when it stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acked {
    pub(crate) producer: u64,
    /// Its events `1..=count` were acknowledged.
    pub(crate) count: u64,
    /// Its events `1..=before_restart` were acknowledged before Redis came
    /// back from its restart without data (all of them if it never did):
    /// the only ones the restart may have wiped.
    pub(crate) before_restart: u64,
}

/// The numbers received of one producer: disjoint, non-adjacent inclusive
/// ranges, keyed by start.
#[derive(Debug, Default, Clone)]
struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    /// Adds `n`; false if it was already there.
    fn insert(&mut self, n: u64) -> bool {
        let before = self.0.range(..=n).next_back().map(|(&a, &b)| (a, b));
        if before.is_some_and(|(_, end)| end >= n) {
            return false;
        }
        let after = n.checked_add(1).and_then(|next| self.0.get(&next).copied());
        let start = match before {
            Some((a, end)) if end + 1 == n => a,
            _ => n,
        };
        let end = match after {
            Some(end) => {
                self.0.remove(&(n + 1));
                end
            }
            None => n,
        };
        self.0.insert(start, end);
        true
    }

    /// How many numbers are held.
    fn len(&self) -> u64 {
        self.0.iter().map(|(&a, &b)| b - a + 1).sum()
    }

    /// The numbers of `1..=upto` not held, as inclusive ranges.
    fn missing(&self, upto: u64) -> Vec<(u64, u64)> {
        let mut holes = Vec::new();
        let mut next = 1;
        for (&a, &b) in &self.0 {
            if a > upto {
                break;
            }
            if a > next {
                holes.push((next, a - 1));
            }
            next = next.max(b + 1);
        }
        if next <= upto {
            holes.push((next, upto));
        }
        holes
    }
}

/// The events one subscriber received, by producer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Receipts {
    by_producer: BTreeMap<u64, Ranges>,
    /// Events received again (the same producer and number).
    pub(crate) duplicated: u64,
    /// Events whose `data` names no producer and number.
    pub(crate) unidentified: u64,
}

/// How the acknowledged publishes reached one subscriber.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Distinct events received.
    pub(crate) received: u64,
    /// Acknowledged events never received, with no `epoch_changed` gap to
    /// excuse them.
    pub(crate) lost: u64,
    /// Acknowledged before the Redis restart, never received, on a topic
    /// where the subscriber got an `epoch_changed` gap: wiped with Redis's
    /// data, and announced.
    pub(crate) wiped: u64,
}

impl Receipts {
    /// An event's `data` arrived.
    pub(crate) fn event(&mut self, data: &Value) {
        let (Some(producer), Some(n)) = (data["producer"].as_u64(), data["n"].as_u64()) else {
            self.unidentified += 1;
            return;
        };
        if !self.by_producer.entry(producer).or_default().insert(n) {
            self.duplicated += 1;
        }
    }

    /// Checks every acknowledged event. One acknowledged before the Redis
    /// restart and never received is excused only if `told_epoch_changed`
    /// says the subscriber got an `epoch_changed` gap on its topic; any
    /// other missing event is lost.
    pub(crate) fn check(
        &self,
        acked: &[Acked],
        told_epoch_changed: impl Fn(&str) -> bool,
    ) -> Delivery {
        let none = Ranges::default();
        let mut delivery = Delivery {
            received: self.by_producer.values().map(Ranges::len).sum(),
            ..Delivery::default()
        };
        for a in acked {
            let got = self.by_producer.get(&a.producer).unwrap_or(&none);
            for (from, to) in got.missing(a.count) {
                for n in from..=to {
                    if n <= a.before_restart && told_epoch_changed(topic_of(a.producer, n)) {
                        delivery.wiped += 1;
                    } else {
                        delivery.lost += 1;
                    }
                }
            }
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn receipts(producer: u64, ns: impl IntoIterator<Item = u64>) -> Receipts {
        let mut r = Receipts::default();
        for n in ns {
            r.event(&json!({"producer": producer, "n": n}));
        }
        r
    }

    #[test]
    fn ranges_merge_and_report_holes() {
        let mut ranges = Ranges::default();
        for n in [3, 1, 2, 7, 5, 6] {
            assert!(ranges.insert(n));
        }
        assert!(!ranges.insert(6));
        assert_eq!(ranges.0.len(), 2);
        assert_eq!(ranges.len(), 6);
        assert_eq!(ranges.missing(9), vec![(4, 4), (8, 9)]);
    }

    #[test]
    fn every_acknowledged_event_must_arrive_exactly_once() {
        let mut r = receipts(0, [1, 2, 4, 4, 5]);
        r.event(&json!({"n": 3}));
        let acked = [Acked {
            producer: 0,
            count: 6,
            before_restart: 6,
        }];
        let delivery = r.check(&acked, |_| false);
        assert_eq!(
            (delivery.received, delivery.lost, delivery.wiped),
            (4, 2, 0)
        );
        assert_eq!((r.duplicated, r.unidentified), (1, 1));
    }

    #[test]
    fn only_events_before_the_restart_on_a_topic_told_epoch_changed_are_excused() {
        // Producer 0 missed 2..=9; the restart came after its event 5, and
        // the subscriber was told `epoch_changed` on one topic only.
        let r = receipts(0, [1, 10]);
        let told = topic_of(0, 2);
        let acked = [Acked {
            producer: 0,
            count: 10,
            before_restart: 5,
        }];
        let delivery = r.check(&acked, |topic| topic == told);
        let wiped = (2..=5).filter(|&n| topic_of(0, n) == told).count() as u64;
        assert_eq!(delivery.wiped, wiped);
        assert_eq!(delivery.lost, 8 - wiped);
        // Without the gap, nothing is excused.
        assert_eq!(r.check(&acked, |_| false).lost, 8);
    }

    #[test]
    fn a_producer_never_heard_from_is_lost_entirely() {
        let r = Receipts::default();
        let acked = [Acked {
            producer: 2,
            count: 3,
            before_restart: 0,
        }];
        assert_eq!(r.check(&acked, |_| true).lost, 3);
    }
}
