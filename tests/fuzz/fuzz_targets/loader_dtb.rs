//! The loader's device tree handling (`loader::dtb`, `loader::platform`):
//! the structural check every blob passes before the `fdt` crate reads it,
//! the rewrite of a user's `--dtb` (QEMU `-dtb` semantics), and the reading
//! of QEMU's own device tree.
//!
//! Input: a mode byte, the edits (see [`edits`]), then a raw blob (seeded
//! with QEMU's `virt` tree and splitvisor's guest tree) or, for an odd mode
//! byte, a tree to write with `vm-fdt` from arbitrary nodes and properties
//! drawn from the names that matter (memory, chosen, cells, reg, compatible
//! strings of the GIC, PL011 and timer), so that most inputs get past the
//! structural check.
//!
//! Invariants: a blob that passes the check reads with `fdt` down to every
//! property, and checking the checked blob again changes nothing; a
//! rewritten user tree passes the check, has one memory node whose `reg` is
//! guest RAM in the root's cell sizes, one `/chosen` with the command line
//! and initrd bounds asked for (and no stale ones), every other node and
//! property of the input unchanged, and rewriting it again gives the same
//! bytes. Nothing panics; errors print.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use fdt::node::FdtNode;
use libfuzzer_sys::fuzz_target;
use loader::dtb::{self, CheckedDtb, UserDtbEdits};
use loader::images::Span;
use vm_fdt::FdtWriter;

const NODE_NAMES: [&str; 14] = [
    "memory",
    "memory@40000000",
    "memory@80000000",
    "chosen",
    "cpus",
    "cpu@0",
    "intc@8000000",
    "pl011@9000000",
    "psci",
    "timer",
    "aliases",
    "apb-pclk",
    "soc",
    "x",
];
const PROP_NAMES: [&str; 20] = [
    "reg",
    "#address-cells",
    "#size-cells",
    "device_type",
    "compatible",
    "bootargs",
    "linux,initrd-start",
    "linux,initrd-end",
    "interrupts",
    "#interrupt-cells",
    "phandle",
    "clocks",
    "clock-frequency",
    "stdout-path",
    "interrupt-controller",
    "always-on",
    "ranges",
    "status",
    "serial0",
    "method",
];
const STRINGS: [&str; 10] = [
    "memory",
    "arm,cortex-a15-gic",
    "arm,gic-400",
    "arm,pl011",
    "arm,armv7-timer",
    "fixed-clock",
    "okay",
    "console=ttyAMA0",
    "/pl011@9000000",
    "linux,dummy-virt",
];

#[derive(Debug, Arbitrary)]
enum Value {
    Empty,
    Cells(Vec<u32>),
    SmallCells(Vec<u8>),
    Str(u8),
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Tok {
    Begin(u8),
    End,
    Prop(u8, Value),
}

#[derive(Debug, Arbitrary)]
struct TreeSpec {
    address_cells: u8,
    size_cells: u8,
    boot_cpuid: u32,
    reservations: Vec<(u32, u16)>,
    tokens: Vec<Tok>,
}

impl TreeSpec {
    fn build(&self) -> Option<Vec<u8>> {
        let reservations: Vec<vm_fdt::FdtReserveEntry> = self
            .reservations
            .iter()
            .take(4)
            .filter_map(|&(a, s)| vm_fdt::FdtReserveEntry::new(u64::from(a) << 12, u64::from(s) << 12).ok())
            .collect();
        let mut w = FdtWriter::new_with_mem_reserv(&reservations).ok()?;
        w.set_boot_cpuid_phys(self.boot_cpuid);
        let root = w.begin_node("").ok()?;
        if self.address_cells % 4 != 3 {
            w.property_u32("#address-cells", u32::from(self.address_cells % 4)).ok()?;
        }
        if self.size_cells % 4 != 3 {
            w.property_u32("#size-cells", u32::from(self.size_cells % 4)).ok()?;
        }
        let mut open = Vec::new();
        for tok in self.tokens.iter().take(200) {
            match tok {
                Tok::Begin(n) if open.len() < 8 => {
                    if let Ok(node) = w.begin_node(NODE_NAMES[usize::from(*n) % NODE_NAMES.len()]) {
                        open.push(node);
                    }
                }
                Tok::Begin(_) => {}
                Tok::End => {
                    if let Some(node) = open.pop() {
                        w.end_node(node).ok()?;
                    }
                }
                Tok::Prop(n, v) => {
                    let name = PROP_NAMES[usize::from(*n) % PROP_NAMES.len()];
                    let bytes: Vec<u8> = match v {
                        Value::Empty => Vec::new(),
                        Value::Cells(c) => c.iter().flat_map(|x| x.to_be_bytes()).collect(),
                        Value::SmallCells(c) => c.iter().flat_map(|x| u32::from(*x).to_be_bytes()).collect(),
                        Value::Str(i) => {
                            let mut s = STRINGS[usize::from(*i) % STRINGS.len()].as_bytes().to_vec();
                            s.push(0);
                            s
                        }
                        Value::Bytes(b) => b.clone(),
                    };
                    // Properties after a child node are refused: skip them.
                    let _ = w.property(name, &bytes);
                }
            }
        }
        while let Some(node) = open.pop() {
            w.end_node(node).ok()?;
        }
        w.end_node(root).ok()?;
        w.finish().ok()
    }
}

/// The edits, from a fixed header (so that seeds can be written by hand):
/// RAM slot (u16 LE, 2 MiB units), RAM size (u16 LE, MiB - 1), initrd flag
/// (u8, odd: present), initrd offset and length (u32 LE each, folded into
/// RAM), command line length (u8) and bytes.
fn edits(data: &[u8]) -> Option<(UserDtbEdits, &[u8])> {
    let (head, rest) = data.split_at_checked(15)?;
    let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let start = u64::from(u16_at(0) % 2048) * (2 << 20);
    let size = ((u64::from(u16_at(2) % 4096) + 1) << 20).min((1 << 32) - start);
    let ram = Span::new(start, size);
    let initrd = (head[4] % 2 == 1).then(|| {
        let at = start + u64::from(u32_at(5)) % size;
        Span::new(at, u64::from(u32_at(9)) % (start + size - at) + 1)
    });
    let (cmdline, rest) = rest.split_at_checked(usize::from(head[13] % 64))?;
    let _ = head[14]; // reserved
    Some((UserDtbEdits { ram, cmdline: String::from_utf8_lossy(cmdline).into_owned(), initrd }, rest))
}

type Tree = BTreeMap<String, Vec<(String, Vec<u8>)>>;

/// Every node by path, with its properties in order: what the loader's own
/// walk (children and properties, as `rewrite_user_dtb` copies) sees.
fn walk(node: FdtNode<'_, '_>, path: String, out: &mut Tree) {
    let props = node.properties().map(|p| (p.name.to_string(), p.value.to_vec())).collect();
    out.insert(path.clone(), props);
    for child in node.children() {
        walk(child, format!("{path}/{}", child.name), out);
    }
}

fn tree(checked: &CheckedDtb) -> Tree {
    let fdt = checked.fdt().expect("a checked blob reads");
    let mut out = Tree::new();
    let root = fdt.find_node("/").expect("a checked blob has a root");
    walk(root, String::new(), &mut out);
    out
}

fn root_cells(t: &Tree) -> (usize, usize) {
    let cell = |name: &str, default: usize| {
        t.get("")
            .and_then(|p| p.iter().find(|(n, _)| n == name))
            .and_then(|(_, v)| dtb::cells(v))
            .and_then(|c| c.first().copied())
            .map_or(default, |c| c as usize)
    };
    (cell("#address-cells", 2), cell("#size-cells", 1))
}

fn encode(value: u64, cells: usize) -> Vec<u8> {
    value.to_be_bytes()[8 - 4 * cells..].to_vec()
}

fn is_memory(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|n| !n.contains('/') && n.split('@').next() == Some("memory"))
}

fn check_rewrite(input: &CheckedDtb, edits: &UserDtbEdits, out: &[u8]) {
    let checked = CheckedDtb::new(out).unwrap_or_else(|e| panic!("the rewritten tree does not pass the check: {e}"));
    let before = tree(input);
    let after = tree(&checked);
    let (a, s) = root_cells(&before);
    assert_eq!(root_cells(&after), (a, s), "root cell sizes changed");
    let memories: Vec<&String> = after.keys().filter(|p| is_memory(p)).collect();
    assert_eq!(memories.len(), 1, "memory nodes: {memories:?}");
    let mut reg = encode(edits.ram.start, a);
    reg.extend(encode(edits.ram.size, s));
    let memory = &after[memories[0]];
    assert_eq!(memory.iter().filter(|(n, _)| n == "reg").map(|(_, v)| v).collect::<Vec<_>>(), [&reg]);

    let chosen = after.get("/chosen").expect("a /chosen node");
    let prop = |name: &str| chosen.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    if edits.cmdline.is_empty() {
        let old = before
            .get("/chosen")
            .map(|c| c.iter().filter(|(n, _)| n == "bootargs").map(|(_, v)| v.clone()).collect::<Vec<_>>());
        assert_eq!(prop("bootargs"), old.unwrap_or_default(), "bootargs changed without a command line");
    } else {
        let mut expected = edits.cmdline.as_bytes().to_vec();
        expected.push(0);
        assert_eq!(prop("bootargs"), [expected]);
    }
    match edits.initrd {
        Some(i) => {
            let cells = if a == 1 { 1 } else { 2 };
            assert_eq!(prop("linux,initrd-start"), [encode(i.start, cells)]);
            assert_eq!(prop("linux,initrd-end"), [encode(i.end(), cells)]);
        }
        None => {
            assert!(
                prop("linux,initrd-start").is_empty() && prop("linux,initrd-end").is_empty(),
                "stale initrd bounds"
            );
        }
    }
    // Everything else is as it was (the first memory node keeps its other
    // properties; later ones are dropped).
    let others = |t: &Tree| -> Tree {
        t.iter()
            .filter(|(p, _)| {
                let top = p.split('/').nth(1).unwrap_or_default();
                !(top == "chosen" || top.split('@').next() == Some("memory"))
            })
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect()
    };
    assert_eq!(others(&after), others(&before), "nodes other than /memory and /chosen changed");

    let again = dtb::rewrite_user_dtb(out, edits).expect("a rewritten tree rewrites again");
    assert_eq!(again, out, "rewriting is not idempotent");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((edits, rest)) = edits(rest) else { return };
    let blob = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        match TreeSpec::arbitrary(&mut Unstructured::new(rest)).ok().and_then(|t| t.build()) {
            Some(b) => b,
            None => return,
        }
    };

    match CheckedDtb::new(&blob) {
        Ok(checked) => {
            let again = CheckedDtb::new(checked.bytes()).expect("a checked blob checks again");
            assert_eq!(again.bytes(), checked.bytes(), "checking is not idempotent");
            let _ = tree(&checked);
            match dtb::rewrite_user_dtb(&blob, &edits) {
                Ok(out) => check_rewrite(&checked, &edits, &out),
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(dtb::rewrite_user_dtb(&blob, &edits).is_err(), "an unchecked blob was rewritten");
        }
    }
    if let Err(e) = loader::platform::parse_qemu_dtb(&blob) {
        let _ = e.to_string();
    }
});
