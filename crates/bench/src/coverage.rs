//! Which of a client's missing events a `gap` frame announced.
//!
//! A `gap` names the hub seqs (`from_seq..=to_seq`) a client will not get;
//! it excuses those seqs and no others. [`GapCoverage`] keeps, for one
//! client of one topic, the announced ranges it has not yet passed (merged,
//! so memory grows with the gaps still ahead, not with the run) and counts
//! every hub seq the client skipped as covered or not covered by them.
//!
//! Herald queues a `gap` where the events it replaces would have been, so a
//! gap arrives before the event that follows the hole; a range the client
//! has passed is dropped, since hub seqs only grow.

/// The most announced ranges kept ahead of a client's position. Past it the
/// farthest is dropped: that can only leave a later loss unexcused (a
/// stricter verdict), never excuse one.
const MAX_RANGES: usize = 1024;

/// One client's view of one topic's hub seqs and the gaps announced in it.
#[derive(Debug, Default, Clone)]
pub struct GapCoverage {
    /// Announced ranges (inclusive) not yet passed, sorted, disjoint and
    /// not adjacent.
    ranges: Vec<(u64, u64)>,
    /// The last hub seq received (0: none yet).
    last: u64,
    /// Hub seqs skipped inside an announced range.
    pub covered: u64,
    /// Hub seqs skipped outside every announced range.
    pub uncovered: u64,
}

impl GapCoverage {
    /// A `gap` frame announced `from..=to`.
    pub fn gap(&mut self, from: u64, to: u64) {
        if from > to || to <= self.last {
            return;
        }
        let (mut from, mut to) = (from.max(self.last + 1), to);
        // Merge with every range it overlaps or touches.
        let start = self
            .ranges
            .partition_point(|&(_, end)| end.saturating_add(1) < from);
        let mut end = start;
        while end < self.ranges.len() && self.ranges[end].0 <= to.saturating_add(1) {
            from = from.min(self.ranges[end].0);
            to = to.max(self.ranges[end].1);
            end += 1;
        }
        self.ranges.splice(start..end, [(from, to)]);
        if self.ranges.len() > MAX_RANGES {
            self.ranges.pop();
        }
    }

    /// An event with hub seq `seq` arrived. Seqs skipped since the last
    /// one count as covered or uncovered; before the first event, only
    /// what a gap announced counts (covered), since the client's start in
    /// the stream is not a loss.
    pub fn event(&mut self, seq: u64) {
        if seq <= self.last {
            return;
        }
        let skipped_from = self.last + 1;
        let inside = self.announced_within(skipped_from, seq - 1);
        self.covered += inside;
        if self.last > 0 {
            self.uncovered += (seq - skipped_from) - inside;
        }
        self.last = seq;
        let passed = self.ranges.partition_point(|&(_, end)| end <= seq);
        self.ranges.drain(..passed);
        if let Some(first) = self.ranges.first_mut() {
            first.0 = first.0.max(seq + 1);
        }
    }

    /// Announced seqs after the last one received: the events a client
    /// never got at the end that a gap excused.
    pub fn announced_ahead(&self) -> u64 {
        self.announced_within(self.last + 1, u64::MAX)
    }

    /// How many seqs of `from..=to` the ranges kept cover.
    fn announced_within(&self, from: u64, to: u64) -> u64 {
        if from > to {
            return 0;
        }
        self.ranges
            .iter()
            .map(|&(a, b)| {
                let (lo, hi) = (a.max(from), b.min(to));
                if lo <= hi { hi - lo + 1 } else { 0 }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_covers_only_the_seqs_it_names() {
        let mut c = GapCoverage::default();
        c.event(1);
        c.gap(3, 4);
        // 2 was skipped without a gap; 3 and 4 were announced.
        c.event(5);
        assert_eq!((c.covered, c.uncovered), (2, 1));
    }

    #[test]
    fn an_unrelated_gap_does_not_cover_a_later_hole() {
        let mut c = GapCoverage::default();
        c.event(1);
        c.gap(2, 2);
        c.event(3);
        c.event(10);
        assert_eq!((c.covered, c.uncovered), (1, 6));
        assert_eq!(c.announced_ahead(), 0);
    }

    #[test]
    fn overlapping_and_touching_gaps_merge_and_passed_ones_are_dropped() {
        let mut c = GapCoverage::default();
        c.event(1);
        c.gap(5, 7);
        c.gap(2, 3);
        c.gap(4, 4);
        c.gap(6, 9);
        assert_eq!(c.ranges, vec![(2, 9)]);
        c.event(10);
        assert!(c.ranges.is_empty());
        assert_eq!((c.covered, c.uncovered), (8, 0));
        // A gap behind the client's position changes nothing.
        c.gap(3, 8);
        assert!(c.ranges.is_empty());
    }

    #[test]
    fn a_gap_ahead_of_the_last_event_excuses_only_its_own_tail() {
        let mut c = GapCoverage::default();
        c.event(1);
        c.gap(5, 6);
        assert_eq!(c.announced_ahead(), 2);
        c.event(3);
        assert_eq!((c.covered, c.uncovered, c.announced_ahead()), (0, 1, 2));
    }

    #[test]
    fn before_the_first_event_only_an_announced_start_counts() {
        let mut c = GapCoverage::default();
        c.gap(1, 3);
        c.event(7);
        assert_eq!((c.covered, c.uncovered), (3, 0));
    }
}
