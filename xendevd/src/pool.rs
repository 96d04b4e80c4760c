//! A small pool of worker threads so a burst of events is handled in parallel and one slow
//! event (a stuck OVSDB, a slow xenstored) does not hold up all the others.
//!
//! Events are sharded by interface name: the online and offline of one vif always go to the
//! same worker, in order, while different vifs proceed in parallel.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};

use crate::handler::{Done, Handler};
use crate::uevent::VifEvent;

/// The result of one event, with its timings.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub event: VifEvent,
    pub result: Result<Done, String>,
    /// From reception to a worker picking it up.
    pub queued: Duration,
    /// Handling time.
    pub took: Duration,
}

struct Job {
    event: VifEvent,
    received: Instant,
}

#[derive(Debug)]
pub struct Pool {
    shards: Vec<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads (at least one). Each outcome is logged and, if `report` is
    /// given, sent there too (tests and benchmarks).
    pub fn new(
        workers: usize,
        handler: Arc<Handler>,
        report: Option<Sender<Outcome>>,
    ) -> std::io::Result<Pool> {
        let mut shards = Vec::new();
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = unbounded::<Job>();
            let handler = handler.clone();
            let report = report.clone();
            let handle = std::thread::Builder::new()
                .name(format!("xendevd-worker-{i}"))
                .spawn(move || {
                    for job in rx {
                        let outcome = run(&handler, job);
                        if let Some(r) = &report {
                            // The receiver going away only means nobody is watching any more.
                            let _ = r.send(outcome);
                        }
                    }
                })?;
            shards.push(tx);
            handles.push(handle);
        }
        Ok(Pool {
            shards,
            workers: handles,
        })
    }

    /// Queues an event received at `received`.
    pub fn submit_at(&self, event: VifEvent, received: Instant) {
        let mut h = DefaultHasher::new();
        event.vif.hash(&mut h);
        let shard = (h.finish() % self.shards.len() as u64) as usize;
        if self.shards[shard].send(Job { event, received }).is_err() {
            log::error!("worker {shard} is gone; event dropped");
        }
    }

    pub fn submit(&self, event: VifEvent) {
        self.submit_at(event, Instant::now())
    }

    /// Finishes the queued events and stops the workers.
    pub fn shutdown(self) {
        drop(self.shards);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

fn run(handler: &Handler, job: Job) -> Outcome {
    let start = Instant::now();
    let queued = start.duration_since(job.received);
    let ev = &job.event;
    // A bug in one event's handling must not take the worker (and its shard) down.
    let result = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(ev))) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("internal error (panic) while handling the event".to_string()),
    };
    let took = start.elapsed();
    match &result {
        Ok(done) => log::info!(
            "{} {}: {} {} ({}) in {:.3} ms, queued {:.3} ms",
            ev.vif,
            ev.action,
            if ev.action == crate::uevent::Action::Online {
                "attached to"
            } else {
                "detached from"
            },
            done.bridge,
            done.kind,
            took.as_secs_f64() * 1e3,
            queued.as_secs_f64() * 1e3
        ),
        Err(e) => log::error!(
            "{} {}: failed after {:.3} ms: {e}",
            ev.vif,
            ev.action,
            took.as_secs_f64() * 1e3
        ),
    }
    Outcome {
        event: job.event,
        result,
        queued,
        took,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Config, StoreSource};
    use crate::uevent::{Action, Control};
    use xenstore::{MemStore, TxId, Xenstore};

    #[test]
    fn every_event_gets_an_outcome_and_shutdown_drains_the_queue() {
        let xs = Arc::new(MemStore::new());
        let config = Config {
            ovsdb_socket: "/nonexistent".into(),
            ..Config::default()
        };
        let handler = Arc::new(Handler::new(config, StoreSource::Fixed(xs.clone())));
        let (tx, rx) = unbounded();
        let pool = Pool::new(3, handler, Some(tx)).unwrap();
        for i in 0..50 {
            pool.submit(VifEvent {
                action: Action::Online,
                vif: format!("nosuch{i}"),
                control: Control::Xenstore {
                    backend_path: format!("backend/vif/{i}/0"),
                },
            });
        }
        pool.shutdown();
        let outcomes: Vec<Outcome> = rx.iter().collect();
        assert_eq!(outcomes.len(), 50);
        // No bridge exists here, so every one failed and said so in Xenstore.
        assert!(outcomes.iter().all(|o| o.result.is_err()));
        for i in 0..50 {
            let status = xs.read(
                TxId::NONE,
                &format!("/local/domain/0/backend/vif/{i}/0/hotplug-status"),
            );
            assert_eq!(status.unwrap().as_deref(), Some(&b"error"[..]));
        }
    }

    #[test]
    fn events_of_one_vif_are_handled_in_order() {
        let config = Config {
            ovsdb_socket: "/nonexistent".into(),
            ..Config::default()
        };
        let handler = Arc::new(Handler::new(
            config,
            StoreSource::Fixed(Arc::new(MemStore::new())),
        ));
        let (tx, rx) = unbounded();
        let pool = Pool::new(4, handler, Some(tx)).unwrap();
        // Five vifs, fifty events each, interleaved; the bridge name tags each event with its
        // rank (no such bridge exists, so each fails at once, which is all the test needs).
        for seq in 0..50 {
            for vif in 0..5 {
                pool.submit(VifEvent {
                    action: if seq % 2 == 0 {
                        Action::Online
                    } else {
                        Action::Offline
                    },
                    vif: format!("vif{vif}.0"),
                    control: Control::Noxs {
                        bridge: Some(format!("br{seq}")),
                    },
                });
            }
        }
        pool.shutdown();
        let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
        for o in rx.iter() {
            let Control::Noxs { bridge: Some(b) } = o.event.control else {
                panic!("unexpected event {:?}", o.event)
            };
            seen.entry(o.event.vif).or_default().push(b);
        }
        let want: Vec<String> = (0..50).map(|seq| format!("br{seq}")).collect();
        assert_eq!(seen.len(), 5);
        for (vif, order) in seen {
            assert_eq!(order, want, "{vif}");
        }
    }
}
