//! Entry points, the Hyp vector table and the world switch, in assembly.
//!
//! The trap frame (see [`super::vcpu::Frame`]) is pushed on the CPU's Hyp
//! stack: ELR_hyp, SPSR_hyp, r0-r12, and LR_usr (Hyp mode shares the User
//! mode LR). The guest's banked SP/LR/SPSR of its other modes stay in the
//! hardware: a vCPU owns its physical CPU, and the monitor never runs in
//! those modes.

use super::{MAX_CPUS, STACK_SIZE};

core::arch::global_asm!(
    r#"
    .arch_extension virt
    .arm

    .section .text.boot, "ax"
    .global _start
_start:
    @ QEMU starts the boot CPU here, in Hyp mode, with no arguments.
    mrs     r0, cpsr
    and     r0, r0, #0x1f
    cmp     r0, #0x1a
    bne     1f
    cpsid   aif
    ldr     r1, =MONITOR_STACKS
    add     sp, r1, #{stack_size}
    sub     sp, sp, #{frame_size}           @ the guest frame's place
    ldr     r0, =__bss_start
    ldr     r1, =__bss_end
    mov     r2, #0
2:  cmp     r0, r1
    strlo   r2, [r0], #4
    blo     2b
    ldr     r0, =hyp_vectors
    mcr     p15, 4, r0, c12, c0, 0          @ HVBAR
    isb
    mov     r0, #0
    bl      boot_primary
1:  @ Not in Hyp mode: nothing can be done but power off (PSCI
    @ SYSTEM_OFF); splitvisor reports a monitor that ended without status.
    .arch_extension sec
    ldr     r0, ={system_off}
    smc     #0
    b       .

    .global secondary_entry
secondary_entry:
    @ PSCI CPU_ON from QEMU's firmware: Hyp mode, r0 = our CPU index.
    cpsid   aif
    cmp     r0, #{max_cpus}
    bhs     .
    ldr     r1, =MONITOR_STACKS
    mov     r2, #{stack_size}
    mla     r1, r0, r2, r1
    add     sp, r1, r2
    sub     sp, sp, #{frame_size}
    ldr     r1, =hyp_vectors
    mcr     p15, 4, r1, c12, c0, 0          @ HVBAR
    isb
    bl      boot_secondary
    b       .

    .section .text.vectors, "ax"
    .balign 32
hyp_vectors:
    b       hyp_fault_reset                 @ 0x00
    b       hyp_fault_undef                 @ 0x04: undefined instruction in Hyp
    b       hyp_fault_svc                   @ 0x08: SVC in Hyp
    b       hyp_fault_pabt                  @ 0x0c: prefetch abort in Hyp
    b       hyp_fault_dabt                  @ 0x10: data abort in Hyp
    b       hyp_trap                        @ 0x14: trap from the guest
    b       hyp_irq                         @ 0x18: physical IRQ
    b       hyp_fiq                         @ 0x1c: physical FIQ

    .macro  save_frame
    push    {{r0-r12, lr}}
    mrs     r0, ELR_hyp
    mrs     r1, spsr
    push    {{r0, r1}}
    mov     r0, sp
    .endm

hyp_trap:
    save_frame
    mov     r1, #0
    bl      handle_exit
    b       return_to_guest
hyp_irq:
    save_frame
    mov     r1, #1
    bl      handle_exit
    b       return_to_guest
hyp_fiq:
    save_frame
    mov     r1, #2
    bl      handle_exit
    b       return_to_guest

    .global return_to_guest
return_to_guest:
    pop     {{r0, r1}}
    msr     ELR_hyp, r0
    msr     spsr_cxsf, r1
    pop     {{r0-r12, lr}}
    eret

    .global enter_guest
enter_guest:
    @ r0 = a frame at the top of this CPU's stack.
    mov     sp, r0
    b       return_to_guest

hyp_fault_reset:
    save_frame
    mov     r1, #0
    b       monitor_fault
hyp_fault_undef:
    save_frame
    mov     r1, #1
    b       monitor_fault
hyp_fault_svc:
    save_frame
    mov     r1, #2
    b       monitor_fault
hyp_fault_pabt:
    save_frame
    mov     r1, #3
    b       monitor_fault
hyp_fault_dabt:
    save_frame
    mov     r1, #4
    b       monitor_fault
"#,
    stack_size = const STACK_SIZE,
    frame_size = const core::mem::size_of::<super::vcpu::Frame>(),
    max_cpus = const MAX_CPUS,
    system_off = const 0x8400_0008u32,
);

extern "C" {
    /// Load the guest state of `frame` and return to the guest.
    pub fn enter_guest(frame: *mut super::vcpu::Frame) -> !;
    /// The secondary CPUs' entry point for PSCI CPU_ON.
    pub fn secondary_entry();
}
