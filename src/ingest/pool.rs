//! The mapping threads of an ingest run: each owns a [`Mapper`] and takes jobs (a chunk of JSON
//! lines, or records built in memory) in turn; results come back in the order the jobs went in,
//! so the committing thread sees the same sequence whatever the number of threads.

use super::readers::{map_lines, LinesOut};
use super::run::{Mapper, Outcome, Pos, Prepared};
use crate::lake::LakeError;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender};

/// Work for one thread.
pub(super) enum Job {
    /// Whole JSON lines (only an input's last may lack its newline).
    Lines(super::chunks::Chunk),
    /// Records built in memory as trees, the first one record `first` of its input.
    Values { first: u64, values: Vec<Value> },
}

/// What a job produced.
pub(super) enum Done {
    Lines(LinesOut),
    Values(Result<Prepared, LakeError>),
}

fn work(mapper: &mut Mapper, job: Job) -> Done {
    match job {
        Job::Lines(chunk) => Done::Lines(map_lines(mapper, chunk)),
        Job::Values { first, values } => map_values(mapper, first, values),
    }
}

/// Maps records built as trees, the first one record `first` of its input.
pub(super) fn map_values(mapper: &mut Mapper, first: u64, values: Vec<Value>) -> Done {
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(values.len());
    for (k, v) in values.iter().enumerate() {
        mapper.generated(Pos::Record(first + k as u64), v, &mut outcomes);
    }
    Done::Values(Prepared::new(outcomes))
}

/// Threads that map jobs in parallel: job k goes to thread k mod n; at most two jobs per thread
/// are in flight.
pub(super) struct Pool {
    to: Vec<Sender<Job>>,
    from: Vec<Receiver<Done>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    in_flight: VecDeque<usize>,
    seq: usize,
}

impl Pool {
    /// One thread per mapper.
    pub(super) fn start(mappers: Vec<Mapper>) -> Pool {
        let (mut to, mut from, mut threads) = (Vec::new(), Vec::new(), Vec::new());
        for (k, mut mapper) in mappers.into_iter().enumerate() {
            let (tx, rx) = channel::<Job>();
            let (done_tx, done_rx) = channel::<Done>();
            let t = std::thread::Builder::new()
                .name(format!("wisp-map-{k}"))
                .spawn(move || {
                    for job in rx {
                        if done_tx.send(work(&mut mapper, job)).is_err() {
                            break;
                        }
                    }
                })
                .expect("a mapping thread starts");
            to.push(tx);
            from.push(done_rx);
            threads.push(t);
        }
        Pool { to, from, threads, in_flight: VecDeque::new(), seq: 0 }
    }

    /// Hands a job to the next thread. Returns the oldest result when enough are in flight
    /// (the caller commits it before reading more).
    pub(super) fn submit(&mut self, job: Job) -> Option<Done> {
        let w = self.seq % self.to.len();
        self.seq += 1;
        if self.to[w].send(job).is_err() {
            self.died();
        }
        self.in_flight.push_back(w);
        (self.in_flight.len() >= 2 * self.to.len()).then(|| self.next()).flatten()
    }

    /// The oldest result still in flight, waiting for it; None when none is.
    pub(super) fn next(&mut self) -> Option<Done> {
        let w = self.in_flight.pop_front()?;
        match self.from[w].recv() {
            Ok(done) => Some(done),
            Err(_) => self.died(),
        }
    }

    /// A mapping thread stopped: it panicked; its panic goes on here.
    fn died(&mut self) -> ! {
        self.to.clear();
        for t in self.threads.drain(..) {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        panic!("an ingest mapping thread stopped");
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.to.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
