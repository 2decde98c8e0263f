//! `memcpy` and `memset` for the monitor, with the ARM EABI entry points
//! the compiler calls (`__aeabi_memcpy*`, `__aeabi_memset*`,
//! `__aeabi_memclr*`).
//!
//! Why hand-written: `compiler_builtins` (the only provider for a
//! bare-metal target) copies one word per five-instruction loop
//! iteration, and the message path moves replies of about 650 bytes several
//! times per trap; with `splitvisor bench`'s instruction counts those loops
//! were 70 % of a null hypercall. Here aligned blocks move 32 bytes per
//! LDM/STM pair. No crate offers ARM-optimised string routines for
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
    orr     r3, r0, r1
    tst     r3, #3
    bne     3f
    cmp     r2, #32
    blo     2f
    push    {{r4-r10}}
1:  ldmia   r1!, {{r3-r10}}
    sub     r2, r2, #32
    stmia   r12!, {{r3-r10}}
    cmp     r2, #32
    bhs     1b
    pop     {{r4-r10}}
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
