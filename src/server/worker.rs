//! The inference worker: one thread that owns a fixed number of session slots and advances every
//! active request one token at a time, round-robin, so concurrent clients all make progress.
//!
//! Requests wait in a bounded FIFO queue until a slot is free (a full queue is refused at once by
//! the HTTP side). A request whose client has gone away (its event receiver dropped) is skipped
//! when admitted and freed at its next token, so a disconnect releases the slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use crate::engine::Model;
use crate::session::{FinishReason, GenerateOptions, Generation, Session, Step};

/// A generation request, tokenized and checked against the context.
pub struct Job {
    /// The whole prompt.
    pub prompt: Vec<u32>,
    /// Sampling, length and stop strings.
    pub opts: GenerateOptions,
    /// Where the text and the outcome go.
    pub events: UnboundedSender<Event>,
}

/// What the worker reports about a job.
#[derive(Debug)]
pub enum Event {
    /// More generated text.
    Text(String),
    /// The job is over.
    Done {
        /// Why it ended.
        finish: FinishReason,
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// The job failed (the message is for the client).
    Error(String),
}

/// Why a job could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: the client should retry later.
    Busy,
    /// The worker has stopped.
    Stopped,
}

/// Counts the HTTP side can report (`GET /health`).
#[derive(Debug, Default)]
pub struct Load {
    /// Jobs waiting for a slot.
    pub waiting: AtomicUsize,
    /// Slots generating.
    pub busy: AtomicUsize,
    /// Slots in all.
    pub slots: AtomicUsize,
}

/// The HTTP side's handle on the worker.
#[derive(Clone)]
pub struct Queue {
    tx: SyncSender<Job>,
    /// Live counts of waiting jobs and busy slots.
    pub load: Arc<Load>,
}

impl Queue {
    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        // Counted before sending so the worker never decrements below zero.
        self.load.waiting.fetch_add(1, Ordering::SeqCst);
        self.tx.try_send(job).map_err(|e| {
            self.load.waiting.fetch_sub(1, Ordering::SeqCst);
            match e {
                TrySendError::Full(_) => SubmitError::Busy,
                TrySendError::Disconnected(_) => SubmitError::Stopped,
            }
        })
    }
}

/// Starts the worker thread with `n_slots` sessions of `n_ctx` tokens and a queue of `queue`
/// waiting jobs. Fails if the sessions cannot be allocated.
pub fn start(
    model: Arc<Model>,
    n_slots: usize,
    n_ctx: usize,
    queue: usize,
) -> crate::Result<Queue> {
    // Check the sizes here so an impossible context is reported before the server listens.
    model.session(n_ctx)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(queue);
    let n_slots = n_slots.max(1);
    let load = Arc::new(Load::default());
    load.slots.store(n_slots, Ordering::SeqCst);
    let worker_load = load.clone();
    std::thread::Builder::new()
        .name("torchless-worker".into())
        .spawn(move || run(&model, rx, n_slots, n_ctx, &worker_load))
        .map_err(|e| crate::Error::InvalidArgument(format!("cannot start the worker: {e}")))?;
    Ok(Queue { tx, load })
}

/// A job in a slot.
struct Active {
    job: Job,
    gen: Generation,
    started: bool,
}

fn run(model: &Model, rx: Receiver<Job>, n_slots: usize, n_ctx: usize, load: &Load) {
    let mut sessions: Vec<Session> = Vec::with_capacity(n_slots);
    let mut active: Vec<Option<Active>> = (0..n_slots).map(|_| None).collect();
    loop {
        // Admit queued jobs into free slots; block only when there is nothing to do.
        while active.iter().any(Option::is_none) {
            let job = if active.iter().all(Option::is_none) {
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            load.waiting.fetch_sub(1, Ordering::SeqCst);
            if job.events.is_closed() {
                continue;
            }
            // Prefer the free slot whose cache shares the longest prefix with this prompt.
            let slot = (0..n_slots)
                .filter(|&i| active[i].is_none())
                .max_by_key(|&i| {
                    let shared = sessions.get(i).map_or(0, |s| {
                        s.tokens()
                            .iter()
                            .zip(&job.prompt)
                            .take_while(|(a, b)| a == b)
                            .count()
                    });
                    // On a tie, the lowest slot: sessions are created only as needed.
                    (shared, std::cmp::Reverse(i))
                })
                .unwrap_or(0);
            if sessions.len() <= slot {
                // Slots are filled in order, so `slot` is the next one to create.
                match model.session(n_ctx) {
                    Ok(s) => sessions.push(s),
                    Err(e) => {
                        // Out of memory for another slot: fail this request, keep serving.
                        let _ = job.events.send(Event::Error(e.to_string()));
                        continue;
                    }
                }
            }
            let gen = Generation::new(&job.opts);
            load.busy.fetch_add(1, Ordering::SeqCst);
            active[slot] = Some(Active {
                job,
                gen,
                started: false,
            });
        }
        for (slot, session) in active.iter_mut().zip(sessions.iter_mut()) {
            let Some(a) = slot else { continue };
            if a.job.events.is_closed() {
                *slot = None;
                load.busy.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            if let Some(ev) = advance(a, session) {
                let _ = a.job.events.send(ev);
                *slot = None;
                load.busy.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Runs a slot's prompt (first time) or its next token; returns the final event when it ends.
fn advance(a: &mut Active, s: &mut Session) -> Option<Event> {
    if !a.started {
        a.started = true;
        if let Err(e) = s.set_prompt(&a.job.prompt) {
            return Some(Event::Error(e.to_string()));
        }
    }
    match a.gen.step(s) {
        Ok(Step::Text(t)) => {
            if !t.is_empty() {
                let _ = a.job.events.send(Event::Text(t));
            }
            None
        }
        Ok(Step::Done(finish, t)) => {
            if !t.is_empty() {
                let _ = a.job.events.send(Event::Text(t));
            }
            Some(Event::Done {
                finish,
                prompt_tokens: a.job.prompt.len(),
                completion_tokens: a.gen.generated(),
            })
        }
        Err(e) => Some(Event::Error(e.to_string())),
    }
}
