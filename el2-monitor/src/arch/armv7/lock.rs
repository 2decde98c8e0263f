//! The lock around state the CPUs share (each server), which sleeps in WFI
//! instead of spinning when it has to wait long.
//!
//! Why not a plain spin lock: on hardware with 1:1 placement a holder is
//! never preempted (Hyp runs with IRQs masked), so waits are short. Under
//! QEMU's multi-threaded TCG, though, each CPU is a host thread, and with
//! more CPUs than host cores the host scheduler can stop a holder for a
//! whole time slice; spinners then burn the cores the holder needs (YIELD
//! and WFE are no-ops there), and the 4-CPU timer test fell from 4,000 to
//! under 300 ticks a second. WFI is the one instruction that gives the core
//! back, so a waiter that has spun a little registers itself and sleeps in
//! WFI, and the releaser sends each registered waiter the wake SGI.
//! `spin`'s locks (and Linux's WFE/SEV locks) have no such sleep; this is
//! written here for that reason.
//!
//! No wake-up is lost: a waiter publishes its bit and then tries the lock
//! again; a releaser releases and then reads the bits; with a full barrier
//! between each pair, either the waiter's retry succeeds or the releaser
//! sees the bit and sends the SGI, which stays pending until the waiter's
//! WFI (a pending interrupt ends WFI at once, even with IRQs masked).

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{fence, AtomicU32, Ordering};

use spin::{Mutex, MutexGuard};

/// Attempts before a waiter goes to sleep. Few: under QEMU a holder keeps
/// its lock for several microseconds of host time (a domain switch's TLB
/// invalidations), longer than any spin, so spinning only burns
/// instructions. With 64, the wrapper that takes the servers' locks ran
/// 3.8-7.3 M instructions in a Debian boot (of 37-42 M in the hypervisor);
/// with 8, 3.2-4.4 M, and the boot took as long.
const SPINS: u32 = 8;

/// How the lock finds the current CPU and wakes others: the arch module.
pub trait Waker {
    /// Whether waking works yet (the GIC is set up); before that, waiters spin.
    fn ready() -> bool;
    /// This CPU's index.
    fn current() -> usize;
    /// Send the wake SGI to every CPU whose bit is set in `cpus`.
    fn wake(cpus: u32);
    /// Sleep until a wake SGI is pending (other interrupts pending stay so
    /// and do not end the sleep), and take the wake SGIs that are pending.
    /// It may end early; the waiter then tries the lock again.
    fn sleep();
}

/// A lock that sleeps its waiters.
pub struct SleepLock<T, W: Waker> {
    inner: Mutex<T>,
    /// One bit per CPU waiting in WFI for this lock.
    waiters: AtomicU32,
    waker: core::marker::PhantomData<W>,
}

/// Access to the locked value; releasing wakes the waiters.
pub struct Guard<'a, T, W: Waker> {
    guard: Option<MutexGuard<'a, T>>,
    waiters: &'a AtomicU32,
    waker: core::marker::PhantomData<W>,
}

impl<T, W: Waker> SleepLock<T, W> {
    /// A lock around `value`.
    pub const fn new(value: T) -> Self {
        Self { inner: Mutex::new(value), waiters: AtomicU32::new(0), waker: core::marker::PhantomData }
    }

    /// Take the lock, sleeping while another CPU holds it long.
    pub fn lock(&self) -> Guard<'_, T, W> {
        let me = 1u32.checked_shl(W::current() as u32).unwrap_or(0);
        let mut spins = 0;
        loop {
            if let Some(guard) = self.inner.try_lock() {
                return self.guard(guard);
            }
            if spins < SPINS || me == 0 || !W::ready() {
                spins += 1;
                core::hint::spin_loop();
                continue;
            }
            self.waiters.fetch_or(me, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if let Some(guard) = self.inner.try_lock() {
                self.waiters.fetch_and(!me, Ordering::SeqCst);
                return self.guard(guard);
            }
            W::sleep();
            self.waiters.fetch_and(!me, Ordering::SeqCst);
            spins = 0;
        }
    }

    fn guard<'a>(&'a self, guard: MutexGuard<'a, T>) -> Guard<'a, T, W> {
        Guard { guard: Some(guard), waiters: &self.waiters, waker: core::marker::PhantomData }
    }
}

impl<T, W: Waker> Drop for Guard<'_, T, W> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // The fence orders the release before the look at the waiters (and
        // pairs with the waiter's fence between its bit and its retry), so
        // the look itself needs no ordering of its own.
        fence(Ordering::SeqCst);
        let waiters = self.waiters.load(Ordering::Relaxed);
        if waiters != 0 {
            W::wake(waiters);
        }
    }
}

impl<T, W: Waker> Deref for Guard<'_, T, W> {
    type Target = T;

    fn deref(&self) -> &T {
        // The guard is only taken in `drop`.
        match &self.guard {
            Some(guard) => guard,
            None => unreachable!("a lock guard used after its release"),
        }
    }
}

impl<T, W: Waker> DerefMut for Guard<'_, T, W> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.guard {
            Some(guard) => guard,
            None => unreachable!("a lock guard used after its release"),
        }
    }
}
