//! Running a program under a time limit while capturing what it prints.
//!
//! The program gets its own process group, so that whatever it starts in
//! turn (`splitvisor` starts QEMU and cargo) is stopped with it: on a time
//! limit, on a stop marker, and after it exits (so that no stray child
//! keeps the output pipes, and the test, alive).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, waitid, Pid, Signal, WaitId, WaitIdOptions};

use crate::HarnessError;

/// How often the runner looks at the program.
const POLL: Duration = Duration::from_millis(20);

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The program exited by itself.
    Exited(ExitStatus),
    /// The time limit elapsed and the program was killed.
    TimedOut,
    /// The stop marker appeared in its output and the program was killed.
    Stopped,
}

/// What a run printed and how it ended.
#[derive(Clone, Debug)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// Standard output (lossily decoded).
    pub stdout: String,
    /// Standard error (lossily decoded).
    pub stderr: String,
    /// How it ended.
    pub end: End,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Run {
    /// The exit code, if the program exited by itself with one.
    pub fn code(&self) -> Option<i32> {
        match self.end {
            End::Exited(status) => status.code(),
            End::TimedOut | End::Stopped => None,
        }
    }

    /// Standard output, then standard error.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The rows of `splitvisor run --stats`' table under `title` (`traps by
    /// kind`, `ticks`, ...), wherever it was printed: (name, count), the
    /// zero ones (`none: ...`) with 0. Empty when there is no such section.
    pub fn stats_section(&self, title: &str) -> Vec<(String, u64)> {
        let text = self.combined();
        let heading = format!("  {title}");
        let mut lines = text.lines().skip_while(|l| l.trim_end() != heading).skip(1);
        let mut rows = Vec::new();
        for line in lines.by_ref().take_while(|l| l.starts_with("    ")) {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("none:"), first) => rows.extend(first.into_iter().chain(words).map(|n| (n.to_string(), 0))),
                (Some(name), Some(count)) => rows.push((name.to_string(), count.parse().unwrap_or(0))),
                _ => {}
            }
        }
        rows
    }

    /// Everything about the run, for a failing assertion's message.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nended: {:?} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
            self.command, self.end, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// A pipe being read to its end on a thread.
struct Capture {
    text: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

impl Capture {
    fn start(mut pipe: impl Read + Send + 'static) -> Self {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&text);
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            // A read error ends the capture like EOF does.
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                if let (Ok(mut buf), Some(bytes)) = (sink.lock(), chunk.get(..n)) {
                    buf.extend_from_slice(bytes);
                }
            }
        });
        Capture { text, thread }
    }

    fn snapshot(&self) -> String {
        self.text.lock().map(|buf| String::from_utf8_lossy(&buf).into_owned()).unwrap_or_default()
    }

    fn finish(self) -> String {
        let Capture { text, thread } = self;
        // The thread only ends with its pipe; a panic in it loses nothing
        // already captured.
        let _ = thread.join();
        let bytes = text.lock().map(|buf| buf.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Runs `cmd` with standard input closed until it exits, `limit` elapses,
/// or (if given) `stop_at` appears in its standard output or error.
pub fn run(cmd: &mut Command, limit: Duration, stop_at: Option<&str>) -> Result<Run, HarnessError> {
    let command = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| HarnessError::Spawn { program: command.clone(), source })?;
    let wait_error = |source: std::io::Error| HarnessError::Wait { program: command.clone(), source };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(wait_error(std::io::Error::other("the output pipes were not created")));
    };
    let out = Capture::start(stdout);
    let err = Capture::start(stderr);

    let end = loop {
        if has_exited(&child).map_err(wait_error)? {
            break None;
        }
        if started.elapsed() >= limit {
            break Some(End::TimedOut);
        }
        if let Some(marker) = stop_at {
            if out.snapshot().contains(marker) || err.snapshot().contains(marker) {
                break Some(End::Stopped);
            }
        }
        std::thread::sleep(POLL);
    };
    // The program is a zombie or still running: either way its process
    // group exists, so this reaches only what it started.
    kill_group(&child);
    let status = child.wait().map_err(wait_error)?;
    let elapsed = started.elapsed();
    Ok(Run { command, stdout: out.finish(), stderr: err.finish(), end: end.unwrap_or(End::Exited(status)), elapsed })
}

/// Whether the child has exited, without reaping it (so that its process
/// group id cannot be reused before [`kill_group`]).
fn has_exited(child: &Child) -> std::io::Result<bool> {
    let Some(pid) = Pid::from_raw(child.id() as i32) else {
        return Err(std::io::Error::other("child pid 0"));
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    Ok(waitid(WaitId::Pid(pid), options)?.is_some())
}

/// Kills the child's process group (the child and everything it started
/// that is still running).
fn kill_group(child: &Child) {
    if let Some(pgid) = Pid::from_raw(child.id() as i32) {
        // ESRCH (nothing left in the group) is the normal case.
        let _ = kill_process_group(pgid, Signal::KILL);
    }
}
