//! Bookkeeping of a guest's checks and the verdict it ends with.
//!
//! Output format, one line each, which the integration tests match:
//! - `PASS: <what held>` and `FAIL: <what did not, and why>`;
//! - `<guest>: <information>`;
//! - `NO-DTB: ...` when no device tree was passed (see `rt::init`);
//! - finally `RESULT: PASS <guest>`, `RESULT: FAIL <guest> (<n> failed)` or
//!   `RESULT: NO-DTB <guest>`.
//!
//! A passing guest powers off with PSCI SYSTEM_OFF; every other verdict ends
//! with SYSTEM_RESET, so that an exit status alone already tells them apart
//! (splitvisor gives a reset its own non-zero status).

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::{outln, rt};

/// Failures recorded by [`shared_check`] on any CPU; the report of CPU 0
/// counts them when it finishes.
static SHARED_FAILURES: AtomicU32 = AtomicU32::new(0);

/// A check made on any CPU (secondaries have no [`Report`]): prints its
/// `PASS:`/`FAIL:` line and counts a failure for the final verdict.
pub fn shared_check(ok: bool, what: fmt::Arguments<'_>) {
    if ok {
        outln!("PASS: {what}");
    } else {
        SHARED_FAILURES.fetch_add(1, Ordering::SeqCst);
        outln!("FAIL: {what}");
    }
}

/// The checks of one guest run.
pub struct Report {
    guest: &'static str,
    failures: u32,
    no_dtb: bool,
    psci_allowed: bool,
}

impl Report {
    /// A report for `guest`; `no_dtb` when the guest got no device tree.
    pub const fn new(guest: &'static str, no_dtb: bool) -> Self {
        Self { guest, failures: 0, no_dtb, psci_allowed: true }
    }

    /// The guest's name.
    pub const fn guest(&self) -> &'static str {
        self.guest
    }

    /// How many checks failed so far (on any CPU).
    pub fn failures(&self) -> u32 {
        self.failures.saturating_add(SHARED_FAILURES.load(Ordering::SeqCst))
    }

    /// Whether the guest runs without a device tree.
    pub const fn no_dtb(&self) -> bool {
        self.no_dtb
    }

    /// Whether PSCI calls can be made (the guest runs in a PL1 mode).
    pub const fn psci_allowed(&self) -> bool {
        self.psci_allowed
    }

    /// Records that PSCI cannot be called: the run ends by halting.
    pub fn forbid_psci(&mut self) {
        self.psci_allowed = false;
    }

    /// Prints `PASS: ...`.
    pub fn pass(&mut self, what: fmt::Arguments<'_>) {
        outln!("PASS: {what}");
    }

    /// Prints `FAIL: ...` and counts it.
    pub fn fail(&mut self, what: fmt::Arguments<'_>) {
        self.failures = self.failures.saturating_add(1);
        outln!("FAIL: {what}");
    }

    /// Passes or fails with the same description.
    pub fn check(&mut self, ok: bool, what: fmt::Arguments<'_>) {
        if ok {
            self.pass(what);
        } else {
            self.fail(what);
        }
    }

    /// Prints `<guest>: ...`.
    pub fn info(&self, what: fmt::Arguments<'_>) {
        outln!("{}: {what}", self.guest);
    }

    /// Prints the verdict and ends the run: SYSTEM_OFF if everything passed
    /// with a device tree, SYSTEM_RESET otherwise, a halt when PSCI cannot
    /// be reached.
    pub fn finish(mut self) -> ! {
        self.finish_now()
    }

    /// [`finish`](Self::finish) through a borrow, for code that holds the
    /// report by reference.
    pub fn finish_now(&mut self) -> ! {
        self.failures = self.failures.saturating_add(SHARED_FAILURES.swap(0, Ordering::SeqCst));
        if self.failures > 0 {
            outln!("RESULT: FAIL {} ({} failed)", self.guest, self.failures);
        } else if self.no_dtb {
            outln!("RESULT: NO-DTB {}", self.guest);
        } else {
            outln!("RESULT: PASS {}", self.guest);
        }
        if !self.psci_allowed {
            self.info(format_args!("halting: PSCI is out of reach"));
            rt::halt()
        }
        if self.failures == 0 && !self.no_dtb {
            self.info(format_args!("SYSTEM_OFF"));
            rt::system_off()
        }
        self.info(format_args!("SYSTEM_RESET"));
        rt::system_reset()
    }
}
