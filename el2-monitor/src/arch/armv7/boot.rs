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
    @ Zero .bss, 32 bytes a store (both ends are page aligned, see
    @ link.x): it holds the stacks, over a megabyte, and a word a store
    @ took a million instructions, a fortieth of the hypervisor's in a
    @ whole Linux boot.
    ldr     r0, =__bss_start
    ldr     r1, =__bss_end
    mov     r2, #0
    mov     r3, #0
    mov     r4, #0
    mov     r5, #0
    mov     r6, #0
    mov     r7, #0
    mov     r8, #0
    mov     r9, #0
2:  cmp     r0, r1
    stmlo   r0!, {{r2-r9}}
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
    @ An IRQ in Hyp mode itself (the frame's SPSR says so) comes while a
    @ server runs, perhaps in its protection domain: its watchdog or a
    @ stray wake SGI, for irq_in_server, which switches translation first.
    ldr     r1, [sp, #4]
    and     r1, r1, #0x1f
    cmp     r1, #0x1a
    beq     1f
    mov     r1, #1
    bl      handle_exit
    b       return_to_guest
1:  bl      {irq_in_server}
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

    @ A Hyp-mode exception: a monitor bug, or a server's fault. Inside a
    @ server's protection domain (HTTBR is one of the domains' tables), go
    @ back to the monitor's translation and to this CPU's stack below the
    @ contained call's frame before anything touches memory: the domain's
    @ stack may be what faulted. r0-r3 are used before the frame is saved;
    @ a monitor fault's report shows ELR_hyp and the syndrome registers,
    @ not them.
    .macro  hyp_fault kind
    mrrc    p15, 4, r0, r1, c2              @ HTTBR
    ldr     r2, ={domain_tables}
    sub     r1, r0, r2
    ldr     r2, ={domain_tables_size}
    cmp     r1, r2
    movlo   r3, #\kind
    blo     domain_fault_entry
    save_frame
    mov     r1, #\kind
    b       monitor_fault
    .endm

hyp_fault_reset:
    hyp_fault 0
hyp_fault_undef:
    hyp_fault 1
hyp_fault_svc:
    hyp_fault 2
hyp_fault_pabt:
    hyp_fault 3
hyp_fault_dabt:
    hyp_fault 4

domain_fault_entry:
    @ r0 = the domain's HTTBR (low word), r3 = kind.
    mov     r4, r0
    ldr     r0, ={monitor_tables}
    bl      set_hyp_translation             @ uses r0 and r1 only, no stack
    mrc     p15, 4, r0, c13, c0, 2          @ HTPIDR: this CPU's index
    cmp     r0, #{max_cpus}
    bhs     .
    ldr     r1, ={exit_sp}
    ldr     sp, [r1, r0, lsl #2]
    cmp     sp, #0
    bne     2f
    @ No contained call on this CPU (cannot happen: domains are entered
    @ only by one): its own stack, for the report.
    ldr     r1, =MONITOR_STACKS
    mov     r2, #{stack_size}
    mla     r1, r0, r2, r1
    add     sp, r1, r2
    sub     sp, sp, #{frame_size}
2:  mov     r0, r3
    mov     r1, r4
    bl      {domain_fault}
    b       .
"#,
    stack_size = const STACK_SIZE,
    frame_size = const core::mem::size_of::<super::vcpu::Frame>(),
    max_cpus = const MAX_CPUS,
    system_off = const 0x8400_0008u32,
    monitor_tables = sym super::mmu::HYP_L1,
    domain_tables = sym super::domain::TABLES,
    domain_tables_size = const core::mem::size_of::<[super::mmu::DomainTables; 3]>(),
    exit_sp = sym super::isolate::EXIT_SP,
    irq_in_server = sym super::isolate::irq_in_server,
    domain_fault = sym super::isolate::domain_fault,
);

extern "C" {
    /// Load the guest state of `frame` and return to the guest.
    pub fn enter_guest(frame: *mut super::vcpu::Frame) -> !;
    /// The secondary CPUs' entry point for PSCI CPU_ON.
    pub fn secondary_entry();
}
