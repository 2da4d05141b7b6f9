//! Guest output: `stdout`, `stderr` and the `host.log` import, forwarded to the host's log.
//!
//! Every line is a `tracing` event tagged with the handler's name and the event id. A guest
//! cannot flood the host: lines are cut at [`MAX_LINE_BYTES`], and after [`MAX_LINES`] lines in
//! one invocation the rest are counted and reported once. The tail of `stderr` is kept so a trap
//! can be reported with the guest's panic message.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::wit::Level;

/// Lines one invocation may write (stdout, stderr and `host.log` together).
pub const MAX_LINES: usize = 1_000;
/// Longest line forwarded; longer ones are cut and marked.
pub const MAX_LINE_BYTES: usize = 4_096;
/// Most bytes one write may carry: what `check-write` permits, enforced, so one host call
/// does a bounded amount of work.
pub const MAX_WRITE_BYTES: usize = 64 * 1024;
/// How much of `stderr` is kept for the trap report.
const STDERR_TAIL_BYTES: usize = 4_096;

/// A guest wrote output after its deadline: the invocation ends as a `timeout` (see
/// `status.rs`), from inside the host call, instead of after its next guest instruction.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("wrote output after its deadline")]
pub struct DeadlinePassed;

/// Where a line came from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Stdout,
    Stderr,
    Log(Level),
}

/// The output of one invocation of one handler. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct GuestOutput(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    handler: Arc<str>,
    /// When the invocation must be done; output after it ends the invocation.
    deadline: Option<Instant>,
    event_id: Option<Arc<str>>,
    lines: usize,
    dropped: usize,
    /// Bytes of `host.log` messages past [`MAX_WRITE_BYTES`], not read.
    cut_bytes: usize,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
    stderr_tail: Vec<u8>,
}

impl GuestOutput {
    /// Output for one invocation; `event_id` is `None` while `init` runs.
    pub fn new(handler: Arc<str>, event_id: Option<Arc<str>>) -> GuestOutput {
        GuestOutput(Arc::new(Mutex::new(State {
            handler,
            deadline: None,
            event_id,
            lines: 0,
            dropped: 0,
            cut_bytes: 0,
            partial_stdout: Vec::new(),
            partial_stderr: Vec::new(),
            stderr_tail: Vec::new(),
        })))
    }

    /// The same output, refusing writes once `deadline` has passed.
    pub fn with_deadline(self, deadline: Instant) -> GuestOutput {
        self.lock().deadline = Some(deadline);
        self
    }

    /// `Err` once the deadline has passed.
    fn check_deadline(&self) -> Result<(), DeadlinePassed> {
        match self.lock().deadline {
            Some(deadline) if Instant::now() >= deadline => Err(DeadlinePassed),
            _ => Ok(()),
        }
    }

    /// The stream to give the guest as its stdout.
    pub fn stdout(&self) -> GuestStream {
        GuestStream {
            output: self.clone(),
            stderr: false,
        }
    }

    /// The stream to give the guest as its stderr.
    pub fn stderr(&self) -> GuestStream {
        GuestStream {
            output: self.clone(),
            stderr: true,
        }
    }

    /// A `host.log` call. Only the first [`MAX_WRITE_BYTES`] of a message are read, so one
    /// call does a bounded amount of work; the rest is counted and reported once.
    pub fn log(&self, level: Level, message: &str) -> wasmtime::Result<()> {
        self.check_deadline()?;
        let mut state = self.lock();
        let mut end = message.len().min(MAX_WRITE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        state.cut_bytes += message.len() - end;
        for line in message[..end].lines() {
            state.emit(Source::Log(level), line.as_bytes());
        }
        Ok(())
    }

    /// Flushes unterminated lines and reports dropped ones; returns the guest's panic message,
    /// if its stderr holds one.
    pub fn finish(&self) -> Option<String> {
        let mut state = self.lock();
        for stderr in [false, true] {
            let partial = std::mem::take(state.partial(stderr));
            if !partial.is_empty() {
                state.emit(
                    if stderr {
                        Source::Stderr
                    } else {
                        Source::Stdout
                    },
                    &partial,
                );
            }
        }
        if state.dropped > 0 {
            tracing::warn!(
                handler = %state.handler,
                event = state.event_id.as_deref().unwrap_or("-"),
                "dropped {} lines of guest output over the limit of {MAX_LINES} per invocation",
                state.dropped
            );
            state.dropped = 0;
        }
        if state.cut_bytes > 0 {
            tracing::warn!(
                handler = %state.handler,
                event = state.event_id.as_deref().unwrap_or("-"),
                "ignored {} bytes of log messages past the limit of {MAX_WRITE_BYTES} bytes per call",
                state.cut_bytes
            );
            state.cut_bytes = 0;
        }
        panic_message(&String::from_utf8_lossy(&state.stderr_tail))
    }

    fn write(&self, stderr: bool, bytes: &[u8]) {
        let mut state = self.lock();
        if stderr {
            let tail = &mut state.stderr_tail;
            tail.extend_from_slice(bytes);
            if tail.len() > STDERR_TAIL_BYTES {
                tail.drain(..tail.len() - STDERR_TAIL_BYTES);
            }
        }
        let source = if stderr {
            Source::Stderr
        } else {
            Source::Stdout
        };
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(newline);
            rest = &after[1..];
            let mut partial = std::mem::take(state.partial(stderr));
            partial.extend_from_slice(line);
            state.emit(source, &partial);
        }
        let partial = state.partial(stderr);
        // A line that never ends is still bounded: keep only what could be printed.
        let room = (MAX_LINE_BYTES + 1).saturating_sub(partial.len());
        partial.extend_from_slice(&rest[..rest.len().min(room)]);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-write; the buffers are still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn partial(&mut self, stderr: bool) -> &mut Vec<u8> {
        if stderr {
            &mut self.partial_stderr
        } else {
            &mut self.partial_stdout
        }
    }

    fn emit(&mut self, source: Source, line: &[u8]) {
        if self.lines >= MAX_LINES {
            self.dropped += 1;
            return;
        }
        self.lines += 1;
        let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE_BYTES)]);
        // A guest's `\r`, NUL or escape sequence must not forge a line of the host's own.
        let text = crate::escape::escape(&text);
        let cut = if line.len() > MAX_LINE_BYTES {
            " …[cut]"
        } else {
            ""
        };
        let handler = &*self.handler;
        let event = self.event_id.as_deref().unwrap_or("-");
        match source {
            Source::Stdout => tracing::info!(handler, event, stream = "stdout", "{text}{cut}"),
            Source::Stderr => tracing::warn!(handler, event, stream = "stderr", "{text}{cut}"),
            Source::Log(Level::Trace) => tracing::trace!(handler, event, "{text}{cut}"),
            Source::Log(Level::Debug) => tracing::debug!(handler, event, "{text}{cut}"),
            Source::Log(Level::Info) => tracing::info!(handler, event, "{text}{cut}"),
            Source::Log(Level::Warn) => tracing::warn!(handler, event, "{text}{cut}"),
            Source::Log(Level::Error) => tracing::error!(handler, event, "{text}{cut}"),
        }
    }
}

/// Rust's panic hook prints `panicked at <file>:<line>:<col>:` and then the message.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let mut lines = stderr[start..].lines();
    let location = lines
        .next()?
        .trim_start_matches("panicked at ")
        .trim_end_matches(':');
    let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note: ")).collect();
    Some(format!("{} (at {location})", message.join(" ").trim()))
}

/// One of a guest's output streams.
#[derive(Debug, Clone)]
pub struct GuestStream {
    output: GuestOutput,
    stderr: bool,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > MAX_WRITE_BYTES {
            // WASI makes a write past `check-write` an error; a guest that ignores it is cut.
            return Err(wasmtime_wasi::p2::StreamError::trap(&format!(
                "wrote {} bytes in one call to {}; the limit is {MAX_WRITE_BYTES} (check-write)",
                bytes.len(),
                if self.stderr { "stderr" } else { "stdout" }
            )));
        }
        self.output
            .check_deadline()
            .map_err(|e| wasmtime_wasi::p2::StreamError::Trap(e.into()))?;
        self.output.write(self.stderr, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_WRITE_BYTES)
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // A partial write: the caller writes the rest in further, equally bounded, calls.
        let taken = &buf[..buf.len().min(MAX_WRITE_BYTES)];
        self.output.write(self.stderr, taken);
        Poll::Ready(Ok(taken.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_found_in_stderr() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:42:9:\nchaos: asked to panic\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("chaos: asked to panic (at src/lib.rs:42:9)")
        );
        assert_eq!(panic_message("just a warning\n"), None);
    }

    #[test]
    fn a_write_past_check_write_is_refused_and_nothing_of_it_is_kept() {
        let output = GuestOutput::new("t".into(), None);
        let mut stream = output.stdout();
        assert_eq!(stream.check_write().ok(), Some(MAX_WRITE_BYTES));
        let fits = Bytes::from(vec![b'x'; MAX_WRITE_BYTES]);
        assert!(OutputStream::write(&mut stream, fits).is_ok());
        let huge = Bytes::from(vec![b'y'; 8 << 20]);
        let started = Instant::now();
        let refused = OutputStream::write(&mut stream, huge);
        println!("an 8 MiB write refused in {:?}", started.elapsed());
        assert!(
            matches!(refused, Err(wasmtime_wasi::p2::StreamError::Trap(ref e)) if e.to_string().contains("the limit is 65536")),
            "{refused:?}"
        );
        assert!(!output.lock().partial_stdout.contains(&b'y'));
    }

    #[test]
    fn a_log_message_is_read_up_to_the_write_limit_only() {
        let output = GuestOutput::new("t".into(), None);
        let huge = "é".repeat(MAX_WRITE_BYTES); // two bytes each: cut inside the text
        output.log(Level::Info, &huge).expect("no deadline");
        let state = output.lock();
        assert_eq!(state.cut_bytes, huge.len() - MAX_WRITE_BYTES);
        assert_eq!(state.lines, 1);
    }

    #[test]
    fn lines_over_the_limit_are_counted_not_kept() {
        let output = GuestOutput::new("t".into(), None);
        for _ in 0..MAX_LINES + 5 {
            output.write(false, b"line\n");
        }
        let state = output.lock();
        assert_eq!((state.lines, state.dropped), (MAX_LINES, 5));
    }
}
