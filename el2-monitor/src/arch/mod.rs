//! Architecture support. Only ARMv7 with the Virtualization Extensions
//! exists so far; AArch64 comes next (with the `cortex-a` crate).

pub mod armv7;
