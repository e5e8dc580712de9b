//! What one subscriber saw of one topic, checked as it arrives: a seq not
//! after the last one is a duplicate; a jump past the next one, unless a
//! `gap` announced it, is a loss.

use std::collections::BTreeMap;

/// One topic, as one subscriber saw it.
#[derive(Debug, Default, Clone)]
pub(crate) struct TopicLedger {
    /// The stream's epoch, when a `subscribed` said it (a mid-stream
    /// `epoch_changed` gap leaves it unknown until the next one).
    pub(crate) epoch: Option<String>,
    /// The last seq received or announced; `None` before the first `subscribed`.
    pub(crate) last: Option<u64>,
    pub(crate) received: u64,
    pub(crate) duplicated: u64,
    pub(crate) lost: u64,
    /// Gaps announced, by reason.
    pub(crate) gaps: BTreeMap<String, u64>,
}

impl TopicLedger {
    /// `subscribed`: the stream and its head when the subscription started.
    pub(crate) fn subscribed(&mut self, epoch: &str, seq: u64) {
        match (&self.epoch, self.last) {
            // The first subscription: live from its head on.
            (_, None) => {
                self.last = Some(seq);
                self.epoch = Some(epoch.to_owned());
            }
            // The same stream again (a reconnect): the replay continues it.
            (Some(known), Some(_)) if known == epoch => {}
            // The stream an `epoch_changed` gap announced, or another one
            // (whose gap moves `last`).
            _ => self.epoch = Some(epoch.to_owned()),
        }
    }

    pub(crate) fn event(&mut self, seq: u64) {
        let last = self.last.unwrap_or(0);
        if seq <= last {
            self.duplicated += 1;
            return;
        }
        self.lost += seq - last - 1;
        self.last = Some(seq);
        self.received += 1;
    }

    pub(crate) fn gap(&mut self, from_seq: u64, to_seq: u64, reason: &str) {
        *self.gaps.entry(reason.to_owned()).or_default() += 1;
        if reason == "epoch_changed" {
            // Another stream, whose epoch the next `subscribed` tells:
            // everything up to `to_seq` of it is announced.
            self.last = Some(to_seq);
            self.epoch = None;
            return;
        }
        let last = self.last.unwrap_or(0);
        if from_seq > last + 1 {
            self.lost += from_seq - last - 1;
        }
        self.last = Some(last.max(to_seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_a_duplicate_and_an_unannounced_jump_a_loss() {
        let mut ledger = TopicLedger::default();
        ledger.subscribed("e1", 0);
        for seq in [1, 2, 2, 5] {
            ledger.event(seq);
        }
        assert_eq!((ledger.received, ledger.duplicated, ledger.lost), (3, 1, 2));
    }

    #[test]
    fn announced_gaps_and_a_new_stream_are_not_losses() {
        let mut ledger = TopicLedger::default();
        ledger.subscribed("e1", 3);
        ledger.event(4);
        ledger.gap(5, 7, "trimmed");
        ledger.event(8);
        ledger.gap(1, 0, "epoch_changed");
        assert_eq!(ledger.epoch, None);
        ledger.event(1);
        ledger.subscribed("e2", 1);
        ledger.event(2);
        assert_eq!((ledger.received, ledger.duplicated, ledger.lost), (4, 0, 0));
        assert_eq!(ledger.gaps.get("epoch_changed"), Some(&1));
    }
}
