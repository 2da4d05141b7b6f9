//! Where handler invocations run: on two runtimes of their own, one for gates and one for
//! observers, never on the runtime that accepts connections and dispatches events.
//!
//! Guest code yields to its executor every epoch tick, but a host call runs to its end on the
//! thread that made it. However bounded each call is (see `output.rs` and `state.rs`), a
//! handler in back-to-back host calls keeps a thread busy until its deadline. On their own
//! threads, such handlers compete with the server only for the CPU, as a spinning guest does,
//! and observers, which nobody waits for, never take a thread a gate needs.
//!
//! Crossing to another runtime costs two thread wake-ups (about 6 µs, more than half of a
//! trivial invocation), so the dispatcher starts each observer's worker on the observers'
//! runtime ([`handle`]), where its invocations run in place ([`run`]). A gate's producer waits
//! on the server's runtime and crosses: the caller's own timer must be able to cut the wait
//! off when every gate thread is held (see `Handler::on_event`).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use crate::config::Mode;

/// The runtime for handlers of `mode`, started on first use and kept for the process's life
/// (a runtime cannot be dropped from async code).
fn runtime(mode: Mode) -> &'static Runtime {
    static GATES: OnceLock<Runtime> = OnceLock::new();
    static OBSERVERS: OnceLock<Runtime> = OnceLock::new();
    let (cell, name) = match mode {
        Mode::Gate => (&GATES, "hookwasm-gate"),
        Mode::Observe => (&OBSERVERS, "hookwasm-observer"),
    };
    cell.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .on_thread_start(move || {
                RUNTIME_OF_THIS_THREAD.set(Some(mode));
                if mode == Mode::Observe {
                    lower_priority();
                }
            });
        builder
            .build()
            .expect("the OS refused to start the sandbox's threads")
    })
}

thread_local! {
    /// Which sandbox runtime the current thread belongs to, if any.
    static RUNTIME_OF_THIS_THREAD: Cell<Option<Mode>> = const { Cell::new(None) };
}

/// The runtime for handlers of `mode`, to start a task that invokes them on (an observer's
/// worker), so [`run`] finds it there and needs no crossing.
pub fn handle(mode: Mode) -> &'static Handle {
    runtime(mode).handle()
}

/// How much nicer than the server the observers' threads are: when the CPU is short, the
/// scheduler gives the server and gates about ten times their share.
const OBSERVER_NICENESS: i32 = 10;

/// Lowers the calling thread's priority (Linux keeps a nice value per thread). Best effort: a
/// system that refuses leaves observers at the server's priority, which is only slower.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority reads no memory; `who = 0` is the calling thread on Linux.
        #[allow(unsafe_code)]
        let refused = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, OBSERVER_NICENESS) } != 0;
        if refused {
            tracing::debug!("cannot lower the priority of an observer thread");
        }
    }
}

/// Runs `invocation` on the runtime for handlers of `mode` and waits for it: in place when
/// called from that runtime's threads, as a task there otherwise. Dropping the returned future
/// cancels the invocation, as dropping it in place would.
pub async fn run<F>(mode: Mode, invocation: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if RUNTIME_OF_THIS_THREAD.get() == Some(mode) {
        invocation.await
    } else {
        Running(runtime(mode).spawn(invocation)).await
    }
}

/// An invocation running on a sandbox runtime; see [`run`].
#[derive(Debug)]
struct Running<T>(JoinHandle<T>);

impl<T> Future for Running<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
            Ok(value) => value,
            // A panic in the host's own code: let it surface where the call was made.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a sandbox invocation was cancelled by its runtime: {e}"),
        })
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn invocations_run_on_their_own_threads_and_are_cancelled_with_their_caller() {
        let here = std::thread::current().id();
        let there = run(Mode::Gate, async { std::thread::current().id() }).await;
        assert_ne!(here, there);
        let name = run(Mode::Observe, async {
            std::thread::current().name().map(str::to_owned)
        })
        .await;
        assert_eq!(name.as_deref(), Some("hookwasm-observer"));

        // A blocking call on the observers' runtime does not hold the caller's thread.
        let started = std::time::Instant::now();
        let busy = run(Mode::Observe, async {
            std::thread::sleep(std::time::Duration::from_millis(300))
        });
        let quick = run(Mode::Gate, async { 1 }).await;
        assert_eq!(quick, 1);
        assert!(started.elapsed() < std::time::Duration::from_millis(250));
        drop(busy);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_invocation_made_on_its_runtime_runs_in_place() {
        let (outer, inner) = handle(Mode::Gate)
            .spawn(async {
                let outer = std::thread::current().id();
                let inner = run(Mode::Gate, async { std::thread::current().id() }).await;
                (outer, inner)
            })
            .await
            .expect("no panic");
        assert_eq!(outer, inner);
        // From the gates' runtime, an observer still crosses to its own.
        let name = handle(Mode::Gate)
            .spawn(run(Mode::Observe, async {
                std::thread::current().name().map(str::to_owned)
            }))
            .await
            .expect("no panic");
        assert_eq!(name.as_deref(), Some("hookwasm-observer"));
    }
}
