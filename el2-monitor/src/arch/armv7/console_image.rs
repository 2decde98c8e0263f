//! The console's read image: a page of the monitor's memory that stage 2
//! maps read-only at the guest's UART page while the vCPU server says its
//! registers read without side effects, so that the guest's loads of them do
//! not trap (see `ipc::Action::ConsoleImageWord`). What the words are and
//! when the page is mapped is the server's; the monitor only keeps the
//! newest of each word and of the mapping, by the updates' generations
//! (replies of two CPUs can be applied in either order).
//!
//! No server's domain maps the page: a server changes it only by asking.

use core::cell::UnsafeCell;

use ipc::msg::is_newer;
use spin::Mutex;

use super::mmu;
use super::sysreg::{self, ops};

/// Words in the page.
const WORDS: usize = (ipc::config::CONSOLE_IMAGE_SIZE / 4) as usize;

/// The page the guest reads. Written only under [`STATE`]'s lock, with
/// volatile word stores; read by the guest through stage 2.
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u32; WORDS]>);

// SAFETY: every write goes through `STATE`'s lock (`word`), and the monitor
// never reads the page; the guest's reads of a word being written see the
// old or the new value (aligned word stores).
unsafe impl Sync for Page {}

static PAGE: Page = Page(UnsafeCell::new([0; WORDS]));

/// The generation each word and the mapping were last updated with (0:
/// never, the page's zeros and unmapped).
struct Generations {
    words: [u32; WORDS],
    map: u32,
    mapped: bool,
}

static STATE: Mutex<Generations> = Mutex::new(Generations { words: [0; WORDS], map: 0, mapped: false });

/// Set the word at byte `offset` to `value`, unless a newer update of it
/// was applied already.
pub fn word(offset: u16, value: u32, generation: u32) {
    // Checked again here: without isolation, replies are not validated.
    if !el2_monitor::validate::is_image_word(offset) {
        log::error!("vCPU server wrote its console image at {offset:#x}, not a word of the page; ignored");
        return;
    }
    let index = usize::from(offset / 4);
    let mut state = STATE.lock();
    let Some(kept) = state.words.get_mut(index) else { return };
    if !is_newer(generation, *kept) {
        return;
    }
    *kept = generation;
    // SAFETY: `index` is below WORDS (checked above); the lock held makes
    // this the only writer.
    let address = unsafe { PAGE.0.get().cast::<u32>().add(index) };
    // SAFETY: as above; an aligned word of the monitor's own page.
    unsafe { core::ptr::write_volatile(address, value) };
    // The guest may read it uncached (a UART is Device memory to it).
    ops::dccmvac(address as u32);
    sysreg::barrier();
}

/// Map the page at the console's page of stage 2, or unmap it, unless a
/// newer update of the mapping was applied already.
pub fn map(mapped: bool, generation: u32) {
    let mut state = STATE.lock();
    if !is_newer(generation, state.map) {
        return;
    }
    state.map = generation;
    if state.mapped == mapped {
        return;
    }
    let page = PAGE.0.get() as u64;
    if mmu::map_console_image(mapped.then_some(page)) {
        state.mapped = mapped;
    } else {
        log::error!("vCPU server used the console image, which this VM does not have; ignored");
    }
}
