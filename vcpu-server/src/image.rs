//! The console's read image, kept up to date from the server's side.
//!
//! While every register of the console reads without side effects, the
//! monitor can map a copy of those reads (the *read image*) at the console's
//! page, read-only: the guest's loads then do not trap, its stores still do
//! (see [`ipc::Action::ConsoleImageWord`]). The device decides what the words
//! are and when the image may be mapped; [`ReadImage`] turns that into the
//! fewest actions that keep the monitor's copy right:
//! - it sends only the words that differ from what the monitor holds (its
//!   page starts all zeros), each with a new generation;
//! - it maps the image only once the monitor holds every word, and unmaps it
//!   before the device's reads get a side effect or when a change does not
//!   fit in the reply; so a mapped image never shows a stale value as far
//!   as the server's own order of requests goes (the generations settle the
//!   order in which CPUs apply replies);
//! - it leaves [`RESERVE`] actions of each reply free for what the request
//!   itself still adds (the loaded value and the step past the instruction),
//!   and finishes an update that does not fit in later replies.

use ipc::action::ReplyFull;
use ipc::{Action, Reply, MAX_ACTIONS};
use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;

/// Actions of a reply left for what the request adds after its device's
/// effects: `SetReg` of a load and `AdvancePc`.
pub const RESERVE: usize = 2;

/// Every this many generations the whole image is sent again, so that no
/// word the monitor holds is more than half the generation space older than
/// the newest update (generations compare as wrapping numbers: a word left
/// alone for 2^31 updates would otherwise look newer than its next one).
const RESEND_PERIOD: u32 = 1 << 30;

/// What the monitor holds of a device's read image of `N` words, as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadImage<const N: usize> {
    /// Whether the VM lets the image be used at all
    /// ([`ipc::VmConfig::console_image`]).
    allowed: bool,
    /// The words the monitor holds, by index into the device's offsets
    /// (serde's own arrays stop at 32 elements and a fixed length).
    #[serde(with = "BigArray")]
    sent: [u32; N],
    /// The words to send again whatever their value (bit `i` for word `i`):
    /// all of them at the start of each resend period.
    resend: u64,
    /// Whether the monitor has the image mapped.
    mapped: bool,
    /// The generation of the last update sent, 0 before the first.
    generation: u32,
}

impl<const N: usize> ReadImage<N> {
    /// Nothing sent yet: the monitor's page is all zeros and unmapped.
    pub fn new(allowed: bool) -> Self {
        ReadImage { allowed, sent: [0; N], resend: 0, mapped: false, generation: 0 }
    }

    /// Whether the image may be used.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Whether the monitor has (or will have, once the reply is applied)
    /// the image mapped.
    pub fn mapped(&self) -> bool {
        self.mapped
    }

    /// The words the monitor holds, by index.
    pub fn sent(&self) -> &[u32; N] {
        &self.sent
    }

    fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.generation % RESEND_PERIOD == 0 {
            self.resend = Self::ALL;
        }
        self.generation
    }

    /// Every word's bit in `resend`.
    const ALL: u64 = {
        assert!(N <= 64, "a read image has at most 64 words");
        if N == 64 {
            u64::MAX
        } else {
            (1 << N) - 1
        }
    };

    fn room(effects: &Reply) -> usize {
        MAX_ACTIONS.saturating_sub(effects.actions.len() + RESERVE)
    }

    /// The device's reads have side effects now: unmap the image (if it is
    /// mapped).
    pub fn unmap(&mut self, effects: &mut Reply) -> Result<(), ReplyFull> {
        if !self.mapped {
            return Ok(());
        }
        let generation = self.next_generation();
        effects.push(Action::ConsoleImageMap { mapped: false, generation })?;
        self.mapped = false;
        Ok(())
    }

    /// The device's reads have no side effects, and the load of the word at
    /// `offsets[i]` returns `words[i]` (every other offset of the page reads
    /// 0): bring the monitor's image up to date and map it, as far as the
    /// reply has room; or unmap it when the change does not fit.
    pub fn offer(&mut self, offsets: &[u16; N], words: &[u32; N], effects: &mut Reply) -> Result<(), ReplyFull> {
        if !self.allowed {
            return Ok(());
        }
        // The words that differ from those the monitor holds, one bit each:
        // the passes below visit only those (a console byte changes two of
        // 21; walking all of them twice was most of an update's cost).
        let changed = (0..N).fold(0u64, |mask, i| mask | u64::from(self.sent[i] != words[i]) << i);
        if changed == 0 && self.mapped && self.resend == 0 {
            return Ok(());
        }
        let mut room = Self::room(effects);
        if self.mapped && changed.count_ones() as usize > room {
            // The unmap itself may take a reserved action: a mapped image
            // must not keep a stale word.
            self.unmap(effects)?;
            room = room.saturating_sub(1);
        }
        let mut unsent = changed;
        if room > 0 && (changed != 0 || self.resend != 0) {
            let generation = self.next_generation();
            // The changed words first, then those sent again only for their
            // generation (their values are right: the image may stay
            // mapped meanwhile).
            for mask in [changed, self.resend & !changed] {
                for i in Bits(mask).take(room) {
                    effects.push(Action::ConsoleImageWord { offset: offsets[i], value: words[i], generation })?;
                    self.sent[i] = words[i];
                    self.resend &= !(1 << i);
                    unsent &= !(1 << i);
                    room -= 1;
                }
            }
        }
        if unsent == 0 && !self.mapped && room > 0 {
            let generation = self.next_generation();
            effects.push(Action::ConsoleImageMap { mapped: true, generation })?;
            self.mapped = true;
        }
        Ok(())
    }
}

/// The indices of a mask's set bits, lowest first.
struct Bits(u64);

impl Iterator for Bits {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(i)
    }
}

/// The monitor's side of a read image, for tests: the newest value of
/// each word and the newest mapping, by generation, as the monitor applies
/// replies.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Monitor {
    /// Word offset to (value, generation).
    pub(crate) page: std::collections::BTreeMap<u16, (u32, u32)>,
    /// Mapped, and the generation of that.
    pub(crate) mapped: (bool, u32),
}

#[cfg(test)]
impl Monitor {
    /// Apply a reply's image actions.
    pub(crate) fn apply(&mut self, reply: &Reply) {
        for a in &reply.actions {
            match a {
                Action::ConsoleImageWord { offset, value, generation } => {
                    let kept = self.page.entry(offset).or_insert((0, 0));
                    if ipc::msg::is_newer(generation, kept.1) {
                        *kept = (value, generation);
                    }
                }
                Action::ConsoleImageMap { mapped, generation } if ipc::msg::is_newer(generation, self.mapped.1) => {
                    self.mapped = (mapped, generation);
                }
                _ => {}
            }
        }
    }

    /// The word at `offset` (0 if never written).
    pub(crate) fn word(&self, offset: u16) -> u32 {
        self.page.get(&offset).map_or(0, |w| w.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFSETS: [u16; 3] = [0x0, 0x18, 0xfe0];

    fn offer(image: &mut ReadImage<3>, words: [u32; 3], taken: usize) -> Reply {
        let mut reply = Reply::none();
        for _ in 0..taken {
            reply.push(Action::InjectUndef).expect("room");
        }
        image.offer(&OFFSETS, &words, &mut reply).expect("offer fits");
        reply
    }

    #[test]
    fn sends_what_differs_then_maps() {
        let mut image = ReadImage::<3>::new(true);
        let mut monitor = Monitor::default();
        let r = offer(&mut image, [0, 0x90, 0x11], 0);
        monitor.apply(&r);
        assert_eq!(
            r.actions.to_vec().as_slice(),
            [
                Action::ConsoleImageWord { offset: 0x18, value: 0x90, generation: 1 },
                Action::ConsoleImageWord { offset: 0xfe0, value: 0x11, generation: 1 },
                Action::ConsoleImageMap { mapped: true, generation: 2 },
            ]
        );
        assert!(image.mapped() && monitor.mapped.0);
        // Nothing changed: nothing sent.
        assert!(offer(&mut image, [0, 0x90, 0x11], 0).actions.is_empty());
        // One word changed while mapped: only it.
        let r = offer(&mut image, [0, 0x80, 0x11], 0);
        assert_eq!(
            r.actions.to_vec().as_slice(),
            [Action::ConsoleImageWord { offset: 0x18, value: 0x80, generation: 3 }]
        );
        monitor.apply(&r);
        assert_eq!([monitor.word(0), monitor.word(0x18), monitor.word(0xfe0)], [0, 0x80, 0x11]);
    }

    #[test]
    fn a_change_that_does_not_fit_unmaps_and_finishes_later() {
        let mut image = ReadImage::<3>::new(true);
        let mut monitor = Monitor::default();
        monitor.apply(&offer(&mut image, [1, 2, 3], 0));
        assert!(monitor.mapped.0);
        // Room for one word only (7 taken, 2 reserved): unmap, then nothing
        // more fits.
        let r = offer(&mut image, [4, 5, 6], MAX_ACTIONS - RESERVE - 1);
        monitor.apply(&r);
        assert!(!monitor.mapped.0 && !image.mapped());
        // The next replies finish the update and map again.
        for _ in 0..4 {
            monitor.apply(&offer(&mut image, [4, 5, 6], MAX_ACTIONS - RESERVE - 1));
        }
        assert!(monitor.mapped.0 && image.mapped());
        assert_eq!([monitor.word(0), monitor.word(0x18), monitor.word(0xfe0)], [4, 5, 6]);
    }

    #[test]
    fn replies_applied_out_of_order_end_at_the_newest() {
        let mut image = ReadImage::<3>::new(true);
        let first = offer(&mut image, [1, 2, 3], 0);
        let second = offer(&mut image, [1, 7, 3], 0);
        let mut unmap = Reply::none();
        image.unmap(&mut unmap).expect("room");
        let third = offer(&mut image, [9, 7, 3], 0);
        let mut monitor = Monitor::default();
        for r in [&third, &unmap, &second, &first] {
            monitor.apply(r);
        }
        assert!(monitor.mapped.0);
        assert_eq!([monitor.word(0), monitor.word(0x18), monitor.word(0xfe0)], [9, 7, 3]);
    }

    #[test]
    fn refused_image_sends_nothing() {
        let mut image = ReadImage::<3>::new(false);
        assert!(offer(&mut image, [1, 2, 3], 0).actions.is_empty());
        assert!(!image.mapped());
    }

    #[test]
    fn every_word_is_sent_again_each_period() {
        let mut image = ReadImage::<3>::new(true);
        let mut monitor = Monitor::default();
        monitor.apply(&offer(&mut image, [1, 2, 3], 0));
        image.generation = RESEND_PERIOD - 1;
        // This change's generation starts a period: the changed word goes
        // first, then the other two (right, but of old generations), and
        // the image stays mapped.
        let r = offer(&mut image, [1, 2, 4], 0);
        let g = RESEND_PERIOD;
        assert_eq!(
            r.actions.to_vec().as_slice(),
            [
                Action::ConsoleImageWord { offset: 0xfe0, value: 4, generation: g },
                Action::ConsoleImageWord { offset: 0x0, value: 1, generation: g },
                Action::ConsoleImageWord { offset: 0x18, value: 2, generation: g },
            ]
        );
        monitor.apply(&r);
        assert!(monitor.mapped.0);
        assert!(offer(&mut image, [1, 2, 4], 0).actions.is_empty());
    }
}
