//! How this task fences a former owner: by Kafka transactions (a new owner's InitProducerId
//! aborts a paused owner's open transaction and fences its epoch) or by leases alone. With
//! `fencing = "auto"`, one probe finds out whether the target fences at all; a target that does
//! not runs on leases alone, said in the log, status and a metric.
//!
//! Owns the first transaction of a run; never the transactions of the loop (`produce`).

use super::delivery::make_producer;
use super::{Mirror, TIMEOUT};
use crate::kafka::checkpoint::PROGRESS_TOPIC;
use crate::kafka::client_config;
use crate::kafka::error::MirrorError;
use lockstep_config::Fencing;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

impl Mirror {
    /// "transactions" or "leases": how this task fences a former owner.
    pub(super) fn fencing(&self) -> &'static str {
        if self.transactional {
            "transactions"
        } else {
            "leases"
        }
    }

    /// Opens the first transaction; with `fencing = "auto"`, first finds out whether the target
    /// fences by producer epoch (`probe_fencing`), and runs on leases alone when it does not.
    pub(super) fn settle_fencing(&mut self) -> Result<(), MirrorError> {
        if self.transactional && self.spec.flow.fencing == Fencing::Auto {
            if let Err(why) = self.probe_fencing() {
                tracing::warn!(
                    error = %why,
                    "the target does not fence with Kafka transactions: running with lease fencing only (a paused former owner's late writes are detected and reported, not prevented)"
                );
                self.transactional = false;
                self.producer = make_producer(&self.spec, &self.shared, false)?;
            }
        }
        if self.transactional {
            self.producer
                .init_transactions(TIMEOUT)
                .map_err(self.producer_err("init_transactions (fencing by transactions)"))?;
            self.producer
                .begin_transaction()
                .map_err(self.producer_err("begin_transaction"))?;
        }
        let mode = self.fencing();
        self.metrics
            .set_fencing(&self.spec.flow_name, &self.spec.site_name, mode);
        tracing::info!(fencing = mode, "fencing settled");
        Ok(())
    }

    /// Proves that the target fences an older producer with transactions, as a new owner
    /// fences a paused one: producer A opens a transaction with a probe record; producer B
    /// initialises the same `transactional.id` and commits one; A's commit must then be
    /// refused. A broker without transactions fails B's commit (tansu 0.6: no EndTxn); one that
    /// commits without fencing accepts A's (librdkafka's mock cluster). The error says which
    /// (it is logged, never a failure of the task).
    fn probe_fencing(&mut self) -> Result<(), String> {
        self.ensure_single_partition_topic(PROGRESS_TOPIC, ("cleanup.policy", "compact"))
            .map_err(|e| e.to_string())?;
        let id = format!(
            "lockstep.{}.{}.{}.probe",
            self.spec.flow_name, self.spec.site_name, self.spec.index
        );
        let make = || -> Result<ThreadedProducer<DefaultProducerContext>, String> {
            let mut p = client_config(&self.spec.target);
            p.set("enable.idempotence", "true")
                .set("transactional.id", &id);
            p.create().map_err(|e| format!("probe producer: {e}"))
        };
        let key = format!(
            "probe|{}|{}|{}",
            self.spec.flow_name, self.spec.site_name, self.spec.index
        );
        let open = |p: &ThreadedProducer<DefaultProducerContext>, who: &str| {
            p.init_transactions(TIMEOUT)
                .map_err(|e| format!("{who}: init_transactions: {e}"))?;
            p.begin_transaction()
                .map_err(|e| format!("{who}: begin_transaction: {e}"))?;
            p.send(
                BaseRecord::<[u8], [u8]>::to(PROGRESS_TOPIC)
                    .partition(0)
                    .key(key.as_bytes())
                    .payload(b"probe".as_slice()),
            )
            .map_err(|(e, _)| format!("{who}: probe record: {e}"))
        };
        // First one transaction alone: a broker without transactions refuses its commit, and is
        // asked nothing more (tansu 0.6's storage fails on a second producer epoch's produce).
        let older = make()?;
        open(&older, "probe producer")?;
        older
            .commit_transaction(TIMEOUT)
            .map_err(|e| format!("probe producer: commit_transaction: {e}"))?;
        older
            .begin_transaction()
            .map_err(|e| format!("probe producer: begin_transaction: {e}"))?;
        older
            .send(
                BaseRecord::<[u8], [u8]>::to(PROGRESS_TOPIC)
                    .partition(0)
                    .key(key.as_bytes())
                    .payload(b"probe".as_slice()),
            )
            .map_err(|(e, _)| format!("probe producer: probe record: {e}"))?;
        older
            .flush(TIMEOUT)
            .map_err(|e| format!("probe producer: flush: {e}"))?;
        // Then a newer producer of the same id, as a successor: the older one must be fenced.
        let newer = make()?;
        open(&newer, "newer producer")?;
        newer
            .commit_transaction(TIMEOUT)
            .map_err(|e| format!("newer producer: commit_transaction: {e}"))?;
        match older.commit_transaction(TIMEOUT) {
            Ok(()) => Err("the broker committed a transaction of a fenced producer epoch (it accepts transactions but does not fence)".into()),
            Err(_) => Ok(()),
        }
    }
}
