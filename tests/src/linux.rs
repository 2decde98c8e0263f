//! Driving a guest's serial console from a test, as a person at a terminal
//! would, but through pipes: start a program (`splitvisor run` or plain
//! QEMU) in its own process group, wait for a line to appear on its
//! standard output, type a line on its standard input, and note when each
//! piece of output arrived (for boot times and the guest's clock).
//!
//! Used by `tests/tests/linux.rs` (included there with `#[path]`, so that the
//! harness library stays as it is).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, waitid, Pid, Signal, WaitId, WaitIdOptions};

/// How often the console looks at the output and the process.
const POLL: Duration = Duration::from_millis(20);

/// Bytes read from a pipe, with the time each chunk arrived.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    /// (offset of the chunk's end, when it arrived)
    arrivals: Vec<(usize, Instant)>,
}

fn capture(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Captured>>, JoinHandle<()>) {
    let shared = Arc::new(Mutex::new(Captured::default()));
    let sink = Arc::clone(&shared);
    let thread = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            if let (Ok(mut c), Some(bytes)) = (sink.lock(), chunk.get(..n)) {
                c.bytes.extend_from_slice(bytes);
                let end = c.bytes.len();
                c.arrivals.push((end, Instant::now()));
            }
        }
    });
    (shared, thread)
}

/// Where a line was found and when it had arrived.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    /// Byte offset just past the match in standard output.
    pub end: usize,
    /// When the chunk holding the match's last byte arrived.
    pub at: Instant,
}

/// A program whose console the test drives. Dropping it kills its process
/// group (whatever it started, QEMU included).
pub struct Console {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Captured>>,
    err: Arc<Mutex<Captured>>,
    threads: Vec<JoinHandle<()>>,
    /// When it was started.
    pub started: Instant,
}

impl Console {
    /// Start `cmd` with piped standard streams in a new process group.
    pub fn spawn(cmd: &mut Command) -> Result<Console, String> {
        let command = format!("{cmd:?}");
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {command}: {e}"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(format!("{command}: no output pipes"));
        };
        let (out, t1) = capture(stdout);
        let (err, t2) = capture(stderr);
        Ok(Console { command, stdin: child.stdin.take(), child, out, err, threads: vec![t1, t2], started })
    }

    /// Standard output so far.
    pub fn stdout(&self) -> String {
        self.out.lock().map(|c| String::from_utf8_lossy(&c.bytes).into_owned()).unwrap_or_default()
    }

    /// Standard error so far.
    pub fn stderr(&self) -> String {
        self.err.lock().map(|c| String::from_utf8_lossy(&c.bytes).into_owned()).unwrap_or_default()
    }

    /// Everything about the run, for a failing assertion.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nran {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
            self.command,
            self.started.elapsed(),
            self.stdout(),
            self.stderr()
        )
    }

    fn find(&self, needle: &str, from: usize) -> Option<Seen> {
        let c = self.out.lock().ok()?;
        let hay = c.bytes.get(from..)?;
        let pos = hay.windows(needle.len().max(1)).position(|w| w == needle.as_bytes())?;
        let end = from + pos + needle.len();
        let at = c.arrivals.iter().find(|(off, _)| *off >= end).map(|(_, t)| *t)?;
        Some(Seen { end, at })
    }

    /// Wait until `needle` appears on standard output after byte `from`,
    /// for at most `limit`; an error (with the whole run) if the program
    /// ends first or time runs out.
    pub fn expect(&mut self, needle: &str, from: usize, limit: Duration) -> Result<Seen, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(seen) = self.find(needle, from) {
                return Ok(seen);
            }
            if self.has_exited() {
                // Let the readers catch the last output before the verdict.
                std::thread::sleep(POLL * 5);
                if let Some(seen) = self.find(needle, from) {
                    return Ok(seen);
                }
                return Err(format!("{needle:?} never appeared: the program ended\n{}", self.describe()));
            }
            if Instant::now() >= deadline {
                return Err(format!("{needle:?} did not appear within {limit:?}\n{}", self.describe()));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Type `text` on standard input.
    pub fn send(&mut self, text: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("standard input already closed")?;
        stdin.write_all(text.as_bytes()).and_then(|()| stdin.flush()).map_err(|e| format!("typing {text:?}: {e}"))
    }

    /// Close standard input and wait up to `limit` for the program to end;
    /// `None` if it did not (it is killed then).
    pub fn finish(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.stdin = None;
        let deadline = Instant::now() + limit;
        loop {
            let exited = self.has_exited();
            if exited || Instant::now() >= deadline {
                // Before reaping it, so that its process group id cannot be
                // reused by then.
                self.kill_group();
                let status = self.child.wait().ok();
                for t in self.threads.drain(..) {
                    let _ = t.join();
                }
                return status.filter(|_| exited);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether the program has exited, without reaping it.
    fn has_exited(&self) -> bool {
        let Some(pid) = Pid::from_raw(self.child.id() as i32) else { return true };
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        !matches!(waitid(WaitId::Pid(pid), options), Ok(None))
    }

    fn kill_group(&self) {
        if let Some(pgid) = Pid::from_raw(self.child.id() as i32) {
            // ESRCH (nothing left in the group) is the normal case.
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return; // finished: reaped and its group killed
        }
        self.kill_group();
        let _ = self.child.wait();
    }
}
