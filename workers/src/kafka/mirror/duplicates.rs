//! The audit's reads and reports: what others wrote to our target partitions between and after
//! our records (a paused former owner's late writes), read from the target and fed into each
//! partition's audit (`audit`), and the duplicates it finds logged, counted and shown in status.
//!
//! Reads only; never writes to the target.

use super::Mirror;
use crate::kafka::audit::DupRange;
use crate::kafka::error::MirrorError;
use crate::task::TaskContext;
use std::sync::atomic::Ordering;

/// Most stretches read for one partition in one audit step.
const READS_PER_STEP: usize = 16;

impl Mirror {
    /// Reads what others wrote between and after our records, for every partition whose audit
    /// waits on it, and reports the duplicates found (metric, log, status).
    /// `idle_check`: also ask the target where each idle partition ends (a request each).
    pub(super) fn audit_step(
        &mut self,
        ctx: &TaskContext,
        idle_check: bool,
    ) -> Result<(), MirrorError> {
        if !self.transactional {
            for i in 0..self.parts.len() {
                self.audit_partition(i, idle_check)?;
            }
        }
        for i in 0..self.parts.len() {
            let delivered = self.parts[i].delivered.clone();
            let (new, ranges) = {
                let mut audit = delivered.audit();
                let new = audit.take_unreported();
                (new, audit.ranges().copied().collect::<Vec<_>>())
            };
            if new > 0 {
                self.report_duplicates(ctx, i, new, &ranges);
            }
        }
        Ok(())
    }

    /// Reads the gaps partition `i`'s audit waits on (and, with `idle_check`, what was written
    /// after its end while nothing of ours is in flight), and feeds them in. Bounded: at most
    /// [`READS_PER_STEP`] reads per call; deliveries may open new gaps meanwhile.
    fn audit_partition(&mut self, i: usize, idle_check: bool) -> Result<(), MirrorError> {
        let delivered = self.parts[i].delivered.clone();
        let mut may_ask_end = idle_check;
        for _ in 0..READS_PER_STEP {
            let (gap, idle) = {
                let audit = delivered.audit();
                let idle = delivered.outstanding.load(Ordering::Relaxed) == 0 && audit.held() == 0;
                (audit.next_gap(), idle)
            };
            let gap = match gap {
                Some(g) => g,
                None if may_ask_end && idle => {
                    may_ask_end = false;
                    match self.idle_gap(i)? {
                        Some(g) => g,
                        None => break,
                    }
                }
                None => break,
            };
            let (from, to) = gap;
            let target_topic = self.parts[i].target_topic.clone();
            let partition = self.parts[i].partition;
            let mut read = Vec::new();
            self.read_target(&target_topic, partition, from, to, |o, s| read.push((o, s)))?;
            let mut audit = delivered.audit();
            for (o, s) in read {
                audit.read(o, s);
            }
            audit.read_to(to);
        }
        Ok(())
    }

    /// With nothing in flight for partition `i`: the stretch after the audit's end up to the
    /// target's high watermark, when someone else wrote there.
    fn idle_gap(&self, i: usize) -> Result<Option<(i64, i64)>, MirrorError> {
        let part = &self.parts[i];
        let (_, high) = self.target_watermarks(&part.target_topic, part.partition)?;
        Ok(part.delivered.audit().idle_gap(high))
    }

    /// Logs, counts and shows duplicates found at the target (a paused former owner's writes).
    fn report_duplicates(&self, ctx: &TaskContext, i: usize, new: u64, ranges: &[DupRange]) {
        let part = &self.parts[i];
        self.metrics
            .mirror_duplicates
            .with_label_values(&[
                &self.labels[0],
                &self.labels[1],
                &part.topic,
                &part.partition.to_string(),
            ])
            .inc_by(new);
        let shown: Vec<String> = ranges
            .iter()
            .rev()
            .take(4)
            .map(|r| {
                format!(
                    "target {}..={} = source {}..={} ({} records)",
                    r.target_from, r.target_to, r.source_from, r.source_to, r.records
                )
            })
            .collect();
        tracing::error!(
            topic = %part.topic,
            partition = part.partition,
            target_topic = %part.target_topic,
            duplicates = new,
            ranges = %shown.join("; "),
            fencing = self.fencing(),
            "DUPLICATES at the target: records repeat source offsets already mirrored (a paused former owner wrote after its lease)"
        );
        let message = format!(
            "duplicates: {}/{} at site {}: {new} record(s) repeat source offsets already mirrored (latest: {}); a former owner wrote after its lease",
            part.target_topic,
            part.partition,
            self.spec.site_name,
            shown.first().map(String::as_str).unwrap_or("")
        );
        ctx.progress.update(|t| t.message = message);
    }
}
