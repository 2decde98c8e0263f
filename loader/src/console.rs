//! The guest's console on the host: where QEMU's `-serial stdio` reads from.
//!
//! - Standard input is not a terminal (a pipe, a file): QEMU reads it
//!   itself. Its PL011 model takes a byte only when its receive FIFO has
//!   room, so the bytes reach the guest in order and none is lost.
//! - Standard input is the terminal, and splitvisor is in its foreground:
//!   the terminal goes to raw mode (restored on every way out: a normal
//!   end, a signal that stops the VM, a panic), and a thread passes every
//!   keystroke to QEMU through a pipe, except the escape: `Ctrl-a x` stops
//!   the VM, `Ctrl-a Ctrl-a` sends one `Ctrl-a`, `Ctrl-a h` lists these.
//!   Ctrl-C, Ctrl-Z and Ctrl-\ go to the guest, as on a serial line.
//! - Standard input is the terminal but splitvisor runs in the background:
//!   the guest gets no input (reading would stop splitvisor with SIGTTIN).
//!
//! The escape is splitvisor's, not QEMU's mux (`-chardev stdio,mux=on`):
//! QEMU ends with status 0 on its `Ctrl-a x`, which cannot be told from a
//! guest that powered off.
//!
//! QEMU sets `O_NONBLOCK` on its standard output, and when that is the
//! terminal (or a pipe) splitvisor shares, the flag is shared too: our
//! reads and writes of it wait with `poll` when they would block, and
//! [`StdioFlags`] puts the flags back when QEMU is gone.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use rustix::termios::{self, OptionalActions, OutputModes, Termios};

/// The escape character: Ctrl-a.
pub const ESCAPE: u8 = 0x01;
/// After the escape: stop the VM.
pub const ESCAPE_STOP: u8 = b'x';
/// After the escape: list the escapes.
pub const ESCAPE_HELP: u8 = b'h';
/// The help text (`\r\n`: the terminal is raw).
pub const ESCAPE_HELP_TEXT: &str = "\r\nsplitvisor: Ctrl-a x  stop the VM (exit status 130)\r\n\
     splitvisor: Ctrl-a Ctrl-a  send Ctrl-a to the guest\r\n\
     splitvisor: Ctrl-a h  this help\r\n";
/// How often a writer thread looks whether its QEMU is gone.
const WRITER_POLL: Duration = Duration::from_millis(50);

/// What an escape sequence asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscapeCommand {
    /// Stop the VM.
    Stop,
    /// Print the help.
    Help,
}

/// Finds the escape sequences in keyboard input.
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapeScanner {
    armed: bool,
}

impl EscapeScanner {
    /// Take one byte: what goes to the guest is appended to `forward`; an
    /// escape command is returned. A Ctrl-a followed by a key that is no
    /// command reaches the guest as both bytes.
    pub fn push(&mut self, byte: u8, forward: &mut Vec<u8>) -> Option<EscapeCommand> {
        if !self.armed {
            if byte == ESCAPE {
                self.armed = true;
            } else {
                forward.push(byte);
            }
            return None;
        }
        self.armed = false;
        match byte {
            ESCAPE_STOP => Some(EscapeCommand::Stop),
            ESCAPE_HELP => Some(EscapeCommand::Help),
            ESCAPE => {
                forward.push(ESCAPE);
                None
            }
            other => {
                forward.extend([ESCAPE, other]);
                None
            }
        }
    }
}

/// The terminal settings to restore, for the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();

fn restore_saved() {
    let saved = match SAVED.lock() {
        Ok(mut guard) => guard.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(saved) = saved {
        // Nothing more can be done if the terminal refuses.
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &saved);
    }
}

/// The terminal in raw mode; dropping it restores the settings it had.
pub struct RawTerminal {
    _private: (),
}

impl RawTerminal {
    /// Put standard input's terminal in raw mode (`cfmakeraw`, with output
    /// post-processing kept so that log lines still start at the left
    /// margin), and make a panic restore it too (splitvisor is built with
    /// `panic = "abort"`: no destructor runs then, the hook does).
    pub fn enter() -> std::io::Result<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        raw.output_modes |= OutputModes::OPOST | OutputModes::ONLCR;
        if let Ok(mut guard) = SAVED.lock() {
            *guard = Some(saved);
        }
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_saved();
                previous(info);
            }));
        });
        if let Err(e) = termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw) {
            restore_saved();
            return Err(e.into());
        }
        Ok(RawTerminal { _private: () })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_saved();
    }
}

/// Whether standard input is a terminal whose foreground process group is
/// ours (so that reading it and changing its mode do not stop us).
fn stdin_is_foreground_terminal() -> Option<bool> {
    let stdin = std::io::stdin();
    if !termios::isatty(stdin.as_fd()) {
        return None;
    }
    let foreground = termios::tcgetpgrp(stdin.as_fd()).ok();
    Some(foreground == Some(rustix::process::getpgrp()))
}

/// The console input of a whole `splitvisor run`, across VM restarts.
pub enum ConsoleInput {
    /// QEMU reads standard input itself.
    Inherit,
    /// The guest gets no input.
    Null,
    /// Keystrokes from the raw terminal, through a pipe.
    Terminal(TerminalInput),
}

impl ConsoleInput {
    /// Choose by what standard input is (see the module's documentation);
    /// a terminal that cannot be put in raw mode is read as it is.
    pub fn from_stdin() -> ConsoleInput {
        match stdin_is_foreground_terminal() {
            None => ConsoleInput::Inherit,
            Some(false) => {
                log::info!("running in the background: the guest console gets no input");
                ConsoleInput::Null
            }
            Some(true) => match RawTerminal::enter() {
                Ok(raw) => ConsoleInput::Terminal(TerminalInput::start(raw)),
                Err(e) => {
                    log::warn!("cannot put the terminal in raw mode ({e}); QEMU reads it as it is");
                    ConsoleInput::Inherit
                }
            },
        }
    }

    /// Whether the user asked to stop the VM from the terminal.
    pub fn stop_requested(&self) -> bool {
        match self {
            ConsoleInput::Terminal(t) => t.stop.load(Ordering::Relaxed),
            ConsoleInput::Inherit | ConsoleInput::Null => false,
        }
    }

    /// What QEMU's standard input is.
    pub fn qemu_stdin(&self) -> Stdio {
        match self {
            ConsoleInput::Inherit => Stdio::inherit(),
            ConsoleInput::Null => Stdio::null(),
            ConsoleInput::Terminal(_) => Stdio::piped(),
        }
    }

    /// Feed one QEMU's standard input (if piped) until the returned handle
    /// is dropped.
    pub fn attach(&self, stdin: Option<ChildStdin>) -> Option<Attached> {
        match (self, stdin) {
            (ConsoleInput::Terminal(t), Some(pipe)) => Some(t.attach(pipe)),
            _ => None,
        }
    }
}

/// Keystrokes read from the raw terminal by a thread that lives as long as
/// the process (a read of the terminal cannot be interrupted), handed to
/// whichever QEMU runs now.
pub struct TerminalInput {
    keys: Arc<Mutex<Receiver<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    _raw: RawTerminal,
}

impl TerminalInput {
    fn start(raw: RawTerminal) -> TerminalInput {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        thread::spawn(move || read_keys(tx, &flag));
        TerminalInput { keys: Arc::new(Mutex::new(rx)), stop, _raw: raw }
    }

    fn attach(&self, pipe: ChildStdin) -> Attached {
        attach_writer(Arc::clone(&self.keys), pipe)
    }
}

/// A thread writing the keystrokes of `keys` to one QEMU's `pipe`.
fn attach_writer(keys: Arc<Mutex<Receiver<Vec<u8>>>>, mut pipe: ChildStdin) -> Attached {
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    let thread = thread::spawn(move || {
        let Ok(keys) = keys.lock() else { return };
        while !finished.load(Ordering::Relaxed) {
            match keys.recv_timeout(WRITER_POLL) {
                Ok(bytes) => {
                    // QEMU gone: the VM is stopping or restarting, and what
                    // was typed meanwhile goes nowhere.
                    if pipe.write_all(&bytes).and_then(|()| pipe.flush()).is_err() {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    Attached { done, thread: Some(thread) }
}

/// The reader: keystrokes to the channel, escapes acted on.
fn read_keys(tx: Sender<Vec<u8>>, stop: &AtomicBool) {
    let mut scanner = EscapeScanner::default();
    let mut buf = [0u8; 256];
    let stdin = std::io::stdin();
    loop {
        let n = match read_blocking(stdin.as_fd(), &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut forward = Vec::with_capacity(n);
        for &byte in buf.get(..n).unwrap_or_default() {
            match scanner.push(byte, &mut forward) {
                Some(EscapeCommand::Stop) => stop.store(true, Ordering::Relaxed),
                Some(EscapeCommand::Help) => {
                    let _ = write_all_blocking(std::io::stderr().as_fd(), ESCAPE_HELP_TEXT.as_bytes());
                }
                None => {}
            }
        }
        if !forward.is_empty() && tx.send(forward).is_err() {
            return;
        }
    }
}

/// Wait until `fd` is ready for `events` (after it said it would block).
fn wait_ready(fd: BorrowedFd<'_>, events: PollFlags) -> std::io::Result<()> {
    let mut fds = [PollFd::new(&fd, events)];
    loop {
        match poll(&mut fds, None) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `read(2)` that waits when the descriptor is non-blocking.
pub fn read_blocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => wait_ready(fd, PollFlags::IN)?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Write all of `bytes`, waiting when the descriptor is non-blocking.
pub fn write_all_blocking(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => wait_ready(fd, PollFlags::OUT)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The file status flags (`O_NONBLOCK` among them) of standard input,
/// output and error, as they were before QEMU ran.
pub struct StdioFlags {
    saved: [Option<OFlags>; 3],
}

impl StdioFlags {
    /// Remember them.
    pub fn save() -> StdioFlags {
        let fds = stdio_fds();
        StdioFlags { saved: fds.map(|fd| fcntl_getfl(fd).ok()) }
    }

    /// Put them back.
    pub fn restore(&self) {
        for (fd, flags) in stdio_fds().into_iter().zip(self.saved) {
            if let Some(flags) = flags {
                // A descriptor that is gone has nothing to restore.
                let _ = fcntl_setfl(fd, flags);
            }
        }
    }
}

fn stdio_fds() -> [BorrowedFd<'static>; 3] {
    [rustix::stdio::stdin(), rustix::stdio::stdout(), rustix::stdio::stderr()]
}

/// A writer thread feeding one QEMU; dropping it ends the thread (QEMU must
/// be gone or going, so that a blocked write fails).
pub struct Attached {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(input: &[u8]) -> (Vec<u8>, Vec<EscapeCommand>) {
        let mut scanner = EscapeScanner::default();
        let mut forward = Vec::new();
        let commands = input.iter().filter_map(|&b| scanner.push(b, &mut forward)).collect();
        (forward, commands)
    }

    #[test]
    fn escapes() {
        assert_eq!(scan(b"ls\r"), (b"ls\r".to_vec(), vec![]));
        assert_eq!(scan(b"a\x01xb"), (b"ab".to_vec(), vec![EscapeCommand::Stop]));
        assert_eq!(scan(b"\x01\x01"), (vec![ESCAPE], vec![]));
        assert_eq!(scan(b"\x01h\x01x"), (vec![], vec![EscapeCommand::Help, EscapeCommand::Stop]));
        // Not a command: both bytes go through (Ctrl-a is a shell key too).
        assert_eq!(scan(b"\x01e"), (vec![ESCAPE, b'e'], vec![]));
        // Ctrl-C, Ctrl-Z are the guest's.
        assert_eq!(scan(b"\x03\x1a"), (vec![0x03, 0x1a], vec![]));
        // An escape split across reads still counts.
        let mut scanner = EscapeScanner::default();
        let mut forward = Vec::new();
        assert_eq!(scanner.push(ESCAPE, &mut forward), None);
        assert_eq!(scanner.push(b'x', &mut forward), Some(EscapeCommand::Stop));
        assert!(forward.is_empty());
    }

    #[test]
    fn blocking_io_on_a_non_blocking_pipe() {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        for fd in [&reader, &writer] {
            fcntl_setfl(fd, fcntl_getfl(fd).unwrap() | OFlags::NONBLOCK).unwrap();
        }
        // More than a pipe holds: the writer must wait for the reader.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let expected = data.clone();
        let writing = thread::spawn(move || write_all_blocking(writer.as_fd(), &data).map(|()| drop(writer)));
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match read_blocking(reader.as_fd(), &mut buf).unwrap() {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        writing.join().unwrap().unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn help_names_every_escape() {
        for key in ["Ctrl-a x", "Ctrl-a Ctrl-a", "Ctrl-a h", "130"] {
            assert!(ESCAPE_HELP_TEXT.contains(key), "{key}");
        }
        assert!(!ESCAPE_HELP_TEXT.contains("\r\r"));
    }

    #[test]
    fn a_writer_feeds_its_pipe_and_ends() {
        let (tx, rx) = mpsc::channel();
        let input = TerminalInputForTest { keys: Arc::new(Mutex::new(rx)) };
        let mut child = std::process::Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let attached = input.attach(child.stdin.take().unwrap());
        tx.send(b"first ".to_vec()).unwrap();
        tx.send(b"second".to_vec()).unwrap();
        // Let the writer take both, then end it: it drops the pipe, cat ends.
        thread::sleep(Duration::from_millis(300));
        drop(attached);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.stdout, b"first second");
        // A later writer gets what was sent after.
        tx.send(b"third".to_vec()).unwrap();
        let mut child = std::process::Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let attached = input.attach(child.stdin.take().unwrap());
        thread::sleep(Duration::from_millis(300));
        drop(attached);
        assert_eq!(child.wait_with_output().unwrap().stdout, b"third");
    }

    /// [`TerminalInput::attach`] without a terminal behind it.
    struct TerminalInputForTest {
        keys: Arc<Mutex<Receiver<Vec<u8>>>>,
    }

    impl TerminalInputForTest {
        fn attach(&self, pipe: ChildStdin) -> Attached {
            attach_writer(Arc::clone(&self.keys), pipe)
        }
    }
}
