//! A rate limit for log lines a guest can cause: a hostile or broken guest
//! (one that faults on its own exception vector, say) must not flood the
//! host with warnings or slow the monitor down with them.

/// Lets at most `budget` events through per window of `window` ticks, and
/// counts the ones it held back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    start: u64,
    used: u32,
    held: u64,
}

/// What to do with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Let it through; `held` events were held back since the last one let
    /// through (say so first).
    Yes {
        /// Events held back before this one.
        held: u64,
    },
    /// Hold it back.
    No,
}

impl RateLimit {
    /// A limit whose first window starts at the first event.
    pub const fn new() -> Self {
        Self { start: 0, used: 0, held: 0 }
    }

    /// Decide about an event at time `now`.
    pub fn admit(&mut self, now: u64, window: u64, budget: u32) -> Admit {
        if self.used == 0 || now.wrapping_sub(self.start) >= window {
            self.start = now;
            self.used = 0;
        }
        if self.used >= budget {
            self.held += 1;
            return Admit::No;
        }
        self.used += 1;
        let held = core::mem::take(&mut self.held);
        Admit::Yes { held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_window_and_count_of_held_events() {
        let mut r = RateLimit::new();
        for i in 0..3 {
            assert_eq!(r.admit(100 + i, 1000, 3), Admit::Yes { held: 0 });
        }
        assert_eq!(r.admit(500, 1000, 3), Admit::No);
        assert_eq!(r.admit(900, 1000, 3), Admit::No);
        // A new window: the first event reports what was held back.
        assert_eq!(r.admit(1100, 1000, 3), Admit::Yes { held: 2 });
        assert_eq!(r.admit(1101, 1000, 3), Admit::Yes { held: 0 });
    }

    #[test]
    fn a_zero_budget_holds_everything() {
        let mut r = RateLimit::new();
        assert_eq!(r.admit(0, 10, 0), Admit::No);
        assert_eq!(r.admit(100, 10, 0), Admit::No);
    }
}
