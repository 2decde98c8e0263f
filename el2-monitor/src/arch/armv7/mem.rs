//! `memcpy` and `memset` for the monitor, with the ARM EABI entry points
//! the compiler calls (`__aeabi_memcpy*`, `__aeabi_memset*`,
//! `__aeabi_memclr*`).
//!
//! Why hand-written: `compiler_builtins` (the only provider for a
//! bare-metal target) copies one word per five-instruction loop
//! iteration, and the message path moves replies of about 650 bytes several
//! times per trap; with `splitvisor bench`'s instruction counts those loops
//! were 70 % of a null hypercall. Here aligned blocks move 32 bytes per
//! LDM/STM pair, and copies between differently aligned buffers use
//! unaligned word accesses once the Hyp MMU is on (the monitor's memory is
//! then Normal memory and HSCTLR.A is clear, see `mmu`) instead of bytes. No crate offers ARM-optimised string routines for
//! `no_std` (Arm's optimized-routines are C), and these are short.
//! Overlapping copies still go to `compiler_builtins`' `memmove`.

// The symbols override compiler_builtins' weak definitions of the same
// names. Register use follows the AAPCS: r0-r3 and r12 are scratch, r4-r10
// are saved around the block loops.
core::arch::global_asm!(
    r#"
    .section .text.splitvisor_mem, "ax"
    .arm

    @ void *memcpy(void *dst, const void *src, size_t n)
    @ __aeabi_memcpy, 4 and 8 (void *dst, const void *src, size_t n): the same,
    @ without a result (4 and 8 promise that both pointers are aligned so).
    .global memcpy
    .global __aeabi_memcpy
    .global __aeabi_memcpy4
    .global __aeabi_memcpy8
    .type memcpy, %function
memcpy:
__aeabi_memcpy:
__aeabi_memcpy4:
__aeabi_memcpy8:
    mov     r12, r0
    cmp     r2, #8
    blo     3f
    eor     r3, r0, r1
    tst     r3, #3
    beq     0f
    @ Differently misaligned: unaligned words need Normal memory, so the
    @ Hyp MMU on (HSCTLR.M); before it is on, bytes.
    mrc     p15, 4, r3, c1, c0, 0
    tst     r3, #1
    bne     5f
    b       4f
    @ Equally misaligned: bytes until both are word-aligned.
0:  tst     r12, #3
    beq     1f
    ldrb    r3, [r1], #1
    sub     r2, r2, #1
    strb    r3, [r12], #1
    b       0b
1:  cmp     r2, #32
    blo     2f
    push    {{r4-r10}}
6:  ldmia   r1!, {{r3-r10}}
    sub     r2, r2, #32
    stmia   r12!, {{r3-r10}}
    cmp     r2, #32
    bhs     6b
    pop     {{r4-r10}}
    @ Words (also unaligned ones: Normal memory, HSCTLR.A clear).
2:  cmp     r2, #4
    blo     3f
    ldr     r3, [r1], #4
    sub     r2, r2, #4
    str     r3, [r12], #4
    b       2b
3:  cmp     r2, #0
    bxeq    lr
4:  ldrb    r3, [r1], #1
    subs    r2, r2, #1
    strb    r3, [r12], #1
    bne     4b
    bx      lr
    @ Unaligned words, four at a time.
5:  push    {{r4-r6}}
7:  cmp     r2, #16
    blo     8f
    ldr     r3, [r1], #4
    ldr     r4, [r1], #4
    ldr     r5, [r1], #4
    ldr     r6, [r1], #4
    sub     r2, r2, #16
    str     r3, [r12], #4
    str     r4, [r12], #4
    str     r5, [r12], #4
    str     r6, [r12], #4
    b       7b
8:  pop     {{r4-r6}}
    b       2b
    .size memcpy, . - memcpy

    @ void *memset(void *dst, int c, size_t n)
    .global memset
    .type memset, %function
memset:
    mov     r3, r2
    mov     r2, r1
    mov     r1, r3
    @ fall through with (dst, n, c)

    @ __aeabi_memset, 4 and 8 (void *dst, size_t n, int c)
    .global __aeabi_memset
    .global __aeabi_memset4
    .global __aeabi_memset8
__aeabi_memset:
__aeabi_memset4:
__aeabi_memset8:
    and     r2, r2, #0xff
    orr     r2, r2, r2, lsl #8
    orr     r2, r2, r2, lsl #16
    b       5f

    @ __aeabi_memclr, 4 and 8 (void *dst, size_t n)
    .global __aeabi_memclr
    .global __aeabi_memclr4
    .global __aeabi_memclr8
__aeabi_memclr:
__aeabi_memclr4:
__aeabi_memclr8:
    mov     r2, #0
5:  mov     r12, r0
    tst     r0, #3
    bne     8f
    cmp     r1, #32
    blo     7f
    push    {{r4-r9}}
    mov     r3, r2
    mov     r4, r2
    mov     r5, r2
    mov     r6, r2
    mov     r7, r2
    mov     r8, r2
    mov     r9, r2
6:  stmia   r12!, {{r2-r9}}
    sub     r1, r1, #32
    cmp     r1, #32
    bhs     6b
    pop     {{r4-r9}}
7:  cmp     r1, #4
    blo     8f
    str     r2, [r12], #4
    sub     r1, r1, #4
    b       7b
8:  cmp     r1, #0
    bxeq    lr
9:  strb    r2, [r12], #1
    subs    r1, r1, #1
    bne     9b
    bx      lr
    .size memset, . - memset
"#
);

/// FNV-1a (32-bit) over `words` words from `start`, read by assembly: the
/// memory may hold padding that Rust would call uninitialised, and it is
/// compared as raw bytes (to prove what a wild write did or did not
/// change, see `isolate`).
pub fn fnv1a_words(start: usize, words: usize) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut hash = OFFSET;
    if words == 0 {
        return hash;
    }
    // SAFETY: reads `words` aligned words from `start`, which the caller
    // owns (a field it borrows); writes only the registers named here.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {w}, [{p}], #4",
            "eor {h}, {h}, {w}",
            "mul {h}, {h}, {prime}",
            "subs {n}, {n}, #1",
            "bne 2b",
            p = inout(reg) start => _,
            n = inout(reg) words => _,
            h = inout(reg) hash,
            w = out(reg) _,
            prime = in(reg) PRIME,
            options(nostack, readonly)
        );
    }
    hash
}
