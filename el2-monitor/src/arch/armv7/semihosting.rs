//! ARM semihosting: the monitor's log and exit status reach the host through
//! QEMU (`-semihosting-config enable=on`), never through the guest's console.

/// SYS_WRITE0: write a NUL-terminated string.
const SYS_WRITE0: u32 = 0x04;
/// SYS_EXIT_EXTENDED: end the program with a status.
const SYS_EXIT_EXTENDED: u32 = 0x20;
/// ADP_Stopped_ApplicationExit, the reason for a normal exit.
const ADP_STOPPED_APPLICATION_EXIT: u32 = 0x20026;

fn call(op: u32, arg: u32) -> u32 {
    let result: u32;
    // SAFETY: the semihosting trap (SVC 0x123456 in ARM state) is
    // intercepted by QEMU and reads only the memory `arg` points to, which
    // every caller keeps alive across the call.
    unsafe {
        core::arch::asm!("svc #0x123456", inout("r0") op => result, in("r1") arg, options(nostack));
    }
    result
}

/// Write `text` (which must end with a NUL byte) to the host.
pub fn write0(text: &[u8]) {
    if text.last() == Some(&0) {
        call(SYS_WRITE0, text.as_ptr() as u32);
    }
}

/// End QEMU with `status`.
pub fn exit(status: u8) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u32::from(status)];
    loop {
        call(SYS_EXIT_EXTENDED, block.as_ptr() as u32);
    }
}
