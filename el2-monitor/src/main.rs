//! The splitvisor monitor image: boots in Hyp mode on ARMv7 and runs the VM.
//!
//! Everything hardware-specific, including all `unsafe` code and assembly,
//! lives in `arch/<architecture>/`; the decisions live in the servers, and
//! the machine-independent glue in this crate's library.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(all(target_os = "none", target_arch = "arm"))]
mod arch;

#[cfg(not(target_os = "none"))]
fn main() {
    // Host builds exist so that `cargo build --workspace` and the library's
    // unit tests work; the image itself only runs on the ARM target.
    eprintln!("el2-monitor is a bare-metal image: build it with --target armv7a-none-eabi");
    std::process::exit(2);
}
