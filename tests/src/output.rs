//! Reading a guest's report: the lines `PASS: ...`, `FAIL: ...`,
//! `<guest>: ...`, `NO-DTB: ...` and `RESULT: ...` that the test guests
//! print (see `tests/guests/src/report.rs`), wherever they printed them
//! (a console or semihosting), mixed with whatever else ran.

use std::fmt;

use crate::Guest;

/// One expected line.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    /// A line equal to this.
    Exact(&'a str),
    /// A line starting with this.
    Prefix(&'a str),
    /// A line starting with the first string and containing the second.
    PrefixContaining(&'a str, &'a str),
}

impl Expect<'_> {
    fn matches(&self, line: &str) -> bool {
        match *self {
            Expect::Exact(text) => line == text,
            Expect::Prefix(prefix) => line.starts_with(prefix),
            Expect::PrefixContaining(prefix, part) => {
                line.starts_with(prefix) && line.get(prefix.len()..).is_some_and(|rest| rest.contains(part))
            }
        }
    }
}

impl fmt::Display for Expect<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Exact(text) => write!(f, "the line {text:?}"),
            Expect::Prefix(prefix) => write!(f, "a line starting {prefix:?}"),
            Expect::PrefixContaining(prefix, part) => write!(f, "a line starting {prefix:?} containing {part:?}"),
        }
    }
}

/// The lines of a guest's output, `\r\n` or `\n` terminated.
#[derive(Clone, Debug)]
pub struct GuestOutput<'a> {
    lines: Vec<&'a str>,
}

impl<'a> GuestOutput<'a> {
    /// Splits `text` into lines.
    pub fn new(text: &'a str) -> Self {
        GuestOutput { lines: text.lines().map(|line| line.trim_end_matches('\r')).collect() }
    }

    /// All lines.
    pub fn lines(&self) -> &[&'a str] {
        &self.lines
    }

    /// The first line matching `expect`.
    pub fn find(&self, expect: Expect<'_>) -> Option<&'a str> {
        self.lines.iter().copied().find(|line| expect.matches(line))
    }

    /// The expectations no line meets.
    pub fn missing<'e>(&self, expected: &[Expect<'e>]) -> Vec<Expect<'e>> {
        expected.iter().copied().filter(|e| self.find(*e).is_none()).collect()
    }

    /// The `FAIL...` lines.
    pub fn failures(&self) -> Vec<&'a str> {
        self.lines.iter().copied().filter(|line| line.starts_with("FAIL")).collect()
    }

    /// The PSCI version the `PASS: PSCI_VERSION <major>.<minor>
    /// (<hex>) ...` line reports, from its hexadecimal value.
    pub fn psci_version(&self) -> Option<u32> {
        let line = self.find(Expect::Prefix("PASS: PSCI_VERSION "))?;
        let hex = line.split_once("(0x")?.1.split_once(')')?.0;
        u32::from_str_radix(hex, 16).ok()
    }
}

/// The lines both guests print at boot with a device tree: the boot
/// registers of the Linux boot protocol, the console found in the tree (the
/// PL011 at 0x0900_0000 of QEMU `virt`'s map, which splitvisor mirrors), and
/// the entry mode.
pub fn boot_lines(guest: Guest) -> Vec<Expect<'static>> {
    let (boot, console) = match guest {
        Guest::Hello => ("hello: boot r0=0x00000000 r1=0xffffffff r2=0x", "hello: console "),
        Guest::Abort => ("abort: boot r0=0x00000000 r1=0xffffffff r2=0x", "abort: console "),
        Guest::Smp => ("smp: boot r0=0x00000000 r1=0xffffffff r2=0x", "smp: console "),
        Guest::Ipi => ("ipi: boot r0=0x00000000 r1=0xffffffff r2=0x", "ipi: console "),
        Guest::Timer => ("timer: boot r0=0x00000000 r1=0xffffffff r2=0x", "timer: console "),
        Guest::GicdProbe => ("gicd_probe: boot r0=0x00000000 r1=0xffffffff r2=0x", "gicd_probe: console "),
        Guest::Escape => ("escape: boot r0=0x00000000 r1=0xffffffff r2=0x", "escape: console "),
        Guest::UartImage => ("uart_image: boot r0=0x00000000 r1=0xffffffff r2=0x", "uart_image: console "),
    };
    vec![
        Expect::Prefix(boot),
        Expect::PrefixContaining(console, " at 0x09000000 (from the device tree)"),
        Expect::Prefix("PASS: mode SVC 0x13 (CPSR 0x"),
    ]
}

/// What `hello` prints when everything holds with a device tree; `image` is
/// how its line on the guest image's placement continues, e.g.
/// `" holds the guest image 0x40008000.."`.
pub fn hello_pass_lines(image: &'static str) -> Vec<Expect<'static>> {
    let mut lines = boot_lines(Guest::Hello);
    lines.extend([
        Expect::Exact("PASS: boot registers r0=0x00000000 r1=0xffffffff (want 0 and 0xffffffff)"),
        Expect::PrefixContaining("PASS: device tree at 0x", ": magic 0xd00dfeed, "),
        Expect::PrefixContaining("PASS: memory 0x", image),
        Expect::PrefixContaining("PASS: memory 0x", " holds the device tree 0x"),
        Expect::PrefixContaining("PASS: ", " method hvc (want hvc)"),
        Expect::Prefix("PASS: PSCI_VERSION "),
        Expect::Exact("PASS: PSCI function 0x840000ff -> NOT_SUPPORTED (-1) (want NOT_SUPPORTED (-1))"),
        Expect::Exact("RESULT: PASS hello"),
        Expect::Exact("hello: SYSTEM_OFF"),
    ]);
    lines
}

/// What `abort` prints when everything holds with a device tree.
pub fn abort_pass_lines() -> Vec<Expect<'static>> {
    let mut lines = boot_lines(Guest::Abort);
    lines.extend(abort_core_lines());
    lines.extend([
        Expect::Exact("PASS: no device-tree node claims 0x09800000"),
        Expect::Exact("RESULT: PASS abort"),
        Expect::Exact("abort: SYSTEM_OFF"),
    ]);
    lines
}

/// The abort report itself, which needs no device tree.
pub fn abort_core_lines() -> Vec<Expect<'static>> {
    vec![
        Expect::Exact("PASS: a read of own RAM through the probe returns 0x5a5ac3c3 (want 0x5a5ac3c3)"),
        Expect::Exact("abort: reading 0x09800000"),
        Expect::PrefixContaining(
            "abort: data abort: DFSR 0x",
            "DFAR 0x09800000, taken in mode ABT 0x17 from mode SVC 0x13 at pc 0x",
        ),
        Expect::Exact("PASS: data abort taken in mode ABT 0x17 (want ABT 0x17)"),
        Expect::Exact("PASS: SPSR_abt mode SVC 0x13 (want SVC 0x13)"),
        Expect::Prefix("PASS: aborted instruction 0x"),
        Expect::Exact("PASS: DFAR 0x09800000 (want the address read, 0x09800000)"),
        Expect::Exact("PASS: DFSR reports a synchronous external abort (want synchronous external abort)"),
        Expect::Exact("PASS: DFSR.WnR says read"),
        Expect::Prefix("PASS: DFSR.LPAE "),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "noise\r\nhello: boot r0=0x00000000 r1=0xffffffff r2=0x48000000 cpsr=0x400001d3\r\n\
        PASS: PSCI_VERSION 1.1 (0x00010001) (want at least 0.2)\r\nFAIL: something\nRESULT: FAIL hello (1 failed)\n";

    #[test]
    fn lines_lose_their_carriage_returns() {
        let out = GuestOutput::new(SAMPLE);
        assert_eq!(out.lines()[0], "noise");
        assert!(out.find(Expect::Exact("FAIL: something")).is_some());
    }

    #[test]
    fn expectations_match_as_documented() {
        let out = GuestOutput::new(SAMPLE);
        assert!(out.find(Expect::Prefix("hello: boot r0=0x00000000 r1=0xffffffff r2=0x")).is_some());
        assert!(out.find(Expect::Exact("hello: boot")).is_none());
        assert!(out.find(Expect::PrefixContaining("hello: boot", "r2=0x48000000")).is_some());
        // The part must come after the prefix.
        assert!(out.find(Expect::PrefixContaining("hello: boot r0=0x00000000 r1=", "r0=")).is_none());
        let missing = out.missing(&[Expect::Exact("noise"), Expect::Exact("RESULT: PASS hello")]);
        assert_eq!(missing.len(), 1);
    }

    #[test]
    fn failures_and_psci_version() {
        let out = GuestOutput::new(SAMPLE);
        assert_eq!(out.failures(), ["FAIL: something"]);
        assert_eq!(out.psci_version(), Some(0x0001_0001));
        assert_eq!(GuestOutput::new("PASS: PSCI_VERSION garbage").psci_version(), None);
    }
}
