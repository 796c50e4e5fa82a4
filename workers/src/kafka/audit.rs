//! The audit of one target partition: finds records that repeat a source offset already
//! mirrored (a paused former owner's late writes) and keeps the resume point from going back.
//!
//! The rule, one definition for the resume scan, the running mirror and the tests: reading the
//! target partition in offset order, a record from this flow's source whose source offset is
//! not above every source offset read before it is a duplicate. The audit walks the partition
//! once, in order: the task's own deliveries arrive in order from the producer; a stretch it
//! did not write itself (a gap between two of its deliveries, or the end of the partition
//! while it writes nothing) is read from the target and fed in before the deliveries behind it.
//!
//! Pure state, no I/O: the mirror reads the target and feeds the records in.

use std::collections::VecDeque;

/// Most duplicate ranges kept for status; the count goes on past it.
pub const MAX_RANGES: usize = 32;

/// A run of duplicates: target offsets `target_from..=target_to` repeat source offsets
/// `source_from..=source_to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DupRange {
    pub target_from: i64,
    pub target_to: i64,
    pub source_from: i64,
    pub source_to: i64,
    pub records: u64,
}

#[derive(Debug, Clone)]
pub struct Audit {
    /// Read gaps from the target (leases mode). With broker fencing, gaps are transaction
    /// markers and foreign records: the task's deliveries are taken as the whole truth.
    inspect_gaps: bool,
    /// Every target offset below this one has been audited.
    audited_to: i64,
    /// The highest source offset among the audited records (-1: none).
    max_source: i64,
    /// Own deliveries waiting behind an unread gap: (target offset, source offset).
    held: VecDeque<(i64, i64)>,
    duplicates: u64,
    unreported: u64,
    ranges: VecDeque<DupRange>,
}

impl Audit {
    /// An audit that has read everything below `audited_to`, the highest source offset there
    /// being `max_source`.
    pub fn new(audited_to: i64, max_source: i64, inspect_gaps: bool) -> Self {
        Audit {
            inspect_gaps,
            audited_to,
            max_source,
            held: VecDeque::new(),
            duplicates: 0,
            unreported: 0,
            ranges: VecDeque::new(),
        }
    }

    /// One of the task's own records landed at `target` (called in delivery order, which is
    /// the partition's order).
    pub fn delivered(&mut self, target: i64, source: i64) {
        if target < self.audited_to {
            return; // already read from the target
        }
        if !self.inspect_gaps || (self.held.is_empty() && target == self.audited_to) {
            self.see(target, source);
            self.audited_to = target + 1;
        } else {
            self.held.push_back((target, source));
        }
    }

    /// The first stretch of the partition that must be read before the audit can go on:
    /// `[from, to)` up to the first held delivery.
    pub fn next_gap(&self) -> Option<(i64, i64)> {
        let &(t, _) = self.held.front()?;
        (t > self.audited_to).then_some((self.audited_to, t))
    }

    /// With nothing of the task's in flight and the partition ending at `high`: the stretch
    /// written by someone else since the audit's end, if any.
    pub fn idle_gap(&self, high: i64) -> Option<(i64, i64)> {
        (self.inspect_gaps && self.held.is_empty() && high > self.audited_to)
            .then_some((self.audited_to, high))
    }

    /// Feeds a record read from the target at `target` (`source`: its source offset when it
    /// came from this flow's source, None for other records). Records must come in order,
    /// starting at the audit's end; the audit then moves past them.
    pub fn read(&mut self, target: i64, source: Option<i64>) {
        if target < self.audited_to {
            return;
        }
        if let Some(s) = source {
            self.see(target, s);
        }
        self.audited_to = target + 1;
        self.drain_held();
    }

    /// Everything below `to` has been read (markers and compacted-away offsets included).
    pub fn read_to(&mut self, to: i64) {
        if to > self.audited_to {
            self.audited_to = to;
        }
        self.drain_held();
    }

    fn drain_held(&mut self) {
        while let Some(&(t, s)) = self.held.front() {
            if t > self.audited_to {
                break;
            }
            self.held.pop_front();
            if t == self.audited_to {
                self.see(t, s);
                self.audited_to = t + 1;
            }
        }
    }

    fn see(&mut self, target: i64, source: i64) {
        if source > self.max_source {
            self.max_source = source;
            return;
        }
        self.duplicates += 1;
        self.unreported += 1;
        if let Some(last) = self.ranges.back_mut() {
            if target == last.target_to + 1 && source == last.source_to + 1 {
                last.target_to = target;
                last.source_to = source;
                last.records += 1;
                return;
            }
        }
        if self.ranges.len() == MAX_RANGES {
            self.ranges.pop_front();
        }
        self.ranges.push_back(DupRange {
            target_from: target,
            target_to: target,
            source_from: source,
            source_to: source,
            records: 1,
        });
    }

    /// Counts every source offset up to `source` as mirrored (the resume point chosen).
    pub fn raise(&mut self, source: i64) {
        self.max_source = self.max_source.max(source);
    }

    /// The next source offset to mirror: one past the highest read.
    pub fn next_source(&self) -> i64 {
        self.max_source + 1
    }

    /// Where the audit stands: (one past the highest source offset, first unaudited target
    /// offset). The resume checkpoint.
    pub fn position(&self) -> (i64, i64) {
        (self.max_source + 1, self.audited_to)
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Duplicates found since the last call.
    pub fn take_unreported(&mut self) -> u64 {
        std::mem::take(&mut self.unreported)
    }

    pub fn ranges(&self) -> impl Iterator<Item = &DupRange> {
        self.ranges.iter()
    }

    /// Own deliveries waiting behind an unread gap.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_own_deliveries_need_no_read() {
        let mut a = Audit::new(10, 99, true);
        for i in 0..5 {
            a.delivered(10 + i, 100 + i);
        }
        assert_eq!(a.next_gap(), None);
        assert_eq!(a.position(), (105, 15));
        assert_eq!(a.duplicates(), 0);
    }

    #[test]
    fn a_late_batch_between_deliveries_is_found_exactly() {
        // Ours: source 0..=9 at target 0..=9; a zombie writes source 3..=7 at 10..=14; ours
        // go on with source 10.. at 15..
        let mut a = Audit::new(0, -1, true);
        for i in 0..10 {
            a.delivered(i, i);
        }
        for i in 0..3 {
            a.delivered(15 + i, 10 + i);
        }
        assert_eq!(a.next_gap(), Some((10, 15)));
        assert_eq!(a.held(), 3);
        for (t, s) in (10..15).zip(3..8) {
            a.read(t, Some(s));
        }
        assert_eq!(a.next_gap(), None);
        assert_eq!(a.duplicates(), 5);
        assert_eq!(
            a.ranges().copied().collect::<Vec<_>>(),
            vec![DupRange {
                target_from: 10,
                target_to: 14,
                source_from: 3,
                source_to: 7,
                records: 5
            }]
        );
        assert_eq!(a.position(), (13, 18));
        assert_eq!(a.take_unreported(), 5);
        assert_eq!(a.take_unreported(), 0);
    }

    #[test]
    fn a_zombie_ahead_makes_the_later_copies_the_duplicates() {
        // The zombie lands source 5..=9 first, at 5..=9; ours then write 5..=9 at 10..=14.
        let mut a = Audit::new(0, -1, true);
        for i in 0..5 {
            a.delivered(i, i);
        }
        a.delivered(10, 5);
        for t in 5..10 {
            a.read(t, Some(t));
        }
        for (t, s) in (11..15).zip(6..10) {
            a.delivered(t, s);
        }
        assert_eq!(a.duplicates(), 5);
        let r: Vec<_> = a.ranges().copied().collect();
        assert_eq!((r[0].target_from, r[0].target_to), (10, 14));
        assert_eq!(a.next_source(), 10);
    }

    #[test]
    fn foreign_records_and_markers_are_not_duplicates() {
        let mut a = Audit::new(0, -1, true);
        a.delivered(0, 0);
        a.delivered(3, 1);
        a.read(1, None);
        a.read_to(3); // offset 2: a marker or compacted away
        assert_eq!(a.duplicates(), 0);
        assert_eq!(a.position(), (2, 4));
        assert_eq!(a.idle_gap(4), None);
        assert_eq!(a.idle_gap(7), Some((4, 7)));
    }

    #[test]
    fn without_gap_inspection_deliveries_are_the_truth() {
        let mut a = Audit::new(0, -1, false);
        a.delivered(0, 0);
        a.delivered(2, 1);
        assert_eq!(a.next_gap(), None);
        assert_eq!(a.idle_gap(10), None);
        assert_eq!(a.position(), (2, 3));
    }

    #[test]
    fn ranges_are_bounded_and_the_count_goes_on() {
        let mut a = Audit::new(0, 1_000, true);
        for i in 0..(MAX_RANGES as i64 + 10) {
            a.read(i * 2, Some(i * 3));
            a.read(i * 2 + 1, None);
        }
        assert_eq!(a.ranges().count(), MAX_RANGES);
        assert_eq!(a.duplicates(), MAX_RANGES as u64 + 10);
    }
}
