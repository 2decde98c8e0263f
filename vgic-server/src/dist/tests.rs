//! The distributor, register by register (IHI 0048B §4.3), and its
//! pending/active state machine.

use super::*;
use crate::regs::decode;
use crate::testutil::Rng;
use ipc::AccessSize::{self, Byte, Double, Half, Word};

fn rd(d: &Distributor, v: u8, off: u64, size: AccessSize) -> u32 {
    d.read(VcpuId(v), decode(off, size))
}

fn wr(d: &mut Distributor, v: u8, off: u64, size: AccessSize, value: u32) -> Touched {
    d.write(VcpuId(v), decode(off, size), value)
}

fn rw(d: &Distributor, v: u8, off: u64) -> u32 {
    rd(d, v, off, Word)
}

fn ww(d: &mut Distributor, v: u8, off: u64, value: u32) -> Touched {
    wr(d, v, off, Word, value)
}

/// Every word register a guest can read, for "nothing changed" checks.
fn snapshot(d: &Distributor) -> std::vec::Vec<u32> {
    let mut out = std::vec::Vec::new();
    for v in 0..d.vcpus() {
        for off in (0..0x1000).step_by(4) {
            out.push(rw(d, v, off));
        }
    }
    out
}

#[test]
fn reset_values() {
    let d = Distributor::new(4, 64);
    assert_eq!(rw(&d, 0, 0x000), 0, "GICD_CTLR resets to 0");
    // ITLinesNumber = (32 + 64) / 32 - 1 = 2; CPUNumber = 3; no SecurityExtn.
    assert_eq!(rw(&d, 0, 0x004), 2 | 3 << 5);
    assert_eq!(rw(&d, 0, 0x008), iidr::VALUE);
    for n in 0..3 {
        assert_eq!(rw(&d, 1, 0x080 + 4 * n), 0, "IGROUPR{n}: Group 0");
        assert_eq!(rw(&d, 1, 0x200 + 4 * n), 0, "ISPENDR{n}");
        assert_eq!(rw(&d, 1, 0x300 + 4 * n), 0, "ISACTIVER{n}");
    }
    assert_eq!(rw(&d, 2, 0x100), 0x0000_ffff, "SGIs enabled, PPIs disabled");
    assert_eq!(rw(&d, 2, 0x180), 0x0000_ffff);
    assert_eq!(rw(&d, 2, 0x104), 0);
    for off in (0x400..0x460).step_by(4) {
        assert_eq!(rw(&d, 0, off), 0, "IPRIORITYR at {off:#x}");
    }
    // SGI/PPI targets read as the reading vCPU's own bit.
    for v in 0..4u8 {
        for off in (0x800..0x820).step_by(4) {
            assert_eq!(rw(&d, v, off), u32::from(1u8 << v) * 0x0101_0101);
        }
    }
    assert_eq!(rw(&d, 0, 0x820), 0, "SPI targets reset to none");
    assert_eq!(rw(&d, 0, 0xc00), 0xaaaa_aaaa, "SGIs edge-triggered");
    assert_eq!(rw(&d, 0, 0xc04), 0, "PPIs level-sensitive");
    assert_eq!(rw(&d, 0, 0xc08), 0, "SPIs reset level-sensitive");
    assert_eq!(rw(&d, 0, 0xf00), 0, "GICD_SGIR is write-only");
    for off in (0xf10..0xf30).step_by(4) {
        assert_eq!(rw(&d, 0, off), 0);
    }
}

#[test]
fn typer_counts_lines_and_cpus() {
    assert_eq!(Distributor::new(1, 0).typer(), 0);
    assert_eq!(Distributor::new(8, 960).typer(), 30 | 7 << 5);
    // The GICv2 maximum, 1020 INTIDs: ITLinesNumber 31.
    assert_eq!(Distributor::new(2, 988).typer(), 31 | 1 << 5);
    // Out-of-range configurations are clamped, never a panic.
    assert_eq!(Distributor::new(0, 5000).typer(), 31);
    assert_eq!(Distributor::new(200, 0).typer(), 7 << 5);
    assert_eq!(rw(&Distributor::new(2, 64), 0, 0x004) & typer::SECURITY_EXTN, 0);
}

#[test]
fn identification_registers() {
    let d = Distributor::new(2, 32);
    assert_eq!(rw(&d, 0, 0xfe8) >> 4 & 0xf, 2, "ICPIDR2.ArchRev");
    let cidr: std::vec::Vec<u32> = (0xff0..0x1000).step_by(4).map(|o| rw(&d, 1, o)).collect();
    assert_eq!(cidr, [0x0d, 0xf0, 0x05, 0xb1]);
    // Read-only.
    let mut d2 = d.clone();
    ww(&mut d2, 0, 0xfe8, 0);
    ww(&mut d2, 0, 0x004, 0xffff_ffff);
    ww(&mut d2, 0, 0x008, 0);
    assert_eq!(d2, d);
}

#[test]
fn ctlr_has_two_group_enables() {
    let mut d = Distributor::new(2, 32);
    let t = ww(&mut d, 0, 0x000, 0xffff_ffff);
    assert!(touched_all(&t));
    assert_eq!(rw(&d, 1, 0x000), 0b11, "other bits RAZ/WI");
    assert!(d.group_enabled(false) && d.group_enabled(true));
    ww(&mut d, 1, 0x000, 0b10);
    assert!(!d.group_enabled(false) && d.group_enabled(true));
    assert!(!touched_all(&ww(&mut d, 1, 0x000, 0b10)), "no change, nothing touched");
}

#[test]
fn igroupr_is_banked_for_private_interrupts() {
    let mut d = Distributor::new(2, 40);
    ww(&mut d, 0, 0x080, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x080), 0xffff_ffff);
    assert_eq!(rw(&d, 1, 0x080), 0);
    ww(&mut d, 1, 0x084, 0x8000_0001);
    assert_eq!(rw(&d, 0, 0x084), 0x8000_0001, "SPI groups are shared");
    // SPIs 32..71 implemented: IGROUPR2 holds 64..71 only.
    ww(&mut d, 0, 0x088, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x088), 0xff);
    // IGROUPR writes set and clear.
    ww(&mut d, 0, 0x080, 0x0000_0001);
    assert_eq!(rw(&d, 0, 0x080), 1);
    // Beyond ITLinesNumber: RAZ/WI.
    ww(&mut d, 0, 0x0fc, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x0fc), 0);
}

#[test]
fn set_and_clear_enable() {
    let mut d = Distributor::new(2, 64);
    // SGIs stay enabled: RAO/WI.
    ww(&mut d, 0, 0x180, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x100), 0x0000_ffff);
    ww(&mut d, 0, 0x100, 0x0001_0000);
    assert_eq!(rw(&d, 0, 0x100), 0x0001_ffff);
    assert_eq!(rw(&d, 0, 0x180), 0x0001_ffff, "ICENABLER reads the same bits");
    assert_eq!(rw(&d, 1, 0x100), 0x0000_ffff, "banked");
    // Writing 0 has no effect.
    ww(&mut d, 0, 0x100, 0);
    ww(&mut d, 0, 0x180, 0);
    assert_eq!(rw(&d, 0, 0x100), 0x0001_ffff);
    // SPIs: discover the implemented ones by writing all ones.
    for n in 1..4 {
        ww(&mut d, 1, 0x100 + 4 * n, 0xffff_ffff);
    }
    assert_eq!(rw(&d, 0, 0x104), 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x108), 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x10c), 0, "INTID 96+ not implemented");
    ww(&mut d, 0, 0x188, 0x8000_0001);
    assert_eq!(rw(&d, 1, 0x108), 0x7fff_fffe);
}

#[test]
fn set_and_clear_pending() {
    let mut d = Distributor::new(2, 32);
    // SGI bits of ISPENDR0/ICPENDR0 are WI.
    ww(&mut d, 0, 0x200, 0x0000_ffff);
    assert_eq!(rw(&d, 0, 0x200), 0);
    // PPI and SPI.
    ww(&mut d, 0, 0x200, 0x0800_0000);
    ww(&mut d, 1, 0x204, 0x0000_0002);
    assert_eq!(rw(&d, 0, 0x200), 0x0800_0000);
    assert_eq!(rw(&d, 1, 0x200), 0, "PPI pending is banked");
    assert_eq!(rw(&d, 0, 0x284), 2, "ICPENDR reads pending too");
    ww(&mut d, 0, 0x284, 0x0000_0002);
    assert_eq!(rw(&d, 0, 0x204), 0);
    // A level-sensitive SPI whose line is high stays pending.
    let spi = Irq::Spi { intid: 40 };
    d.set_line(spi, true, None);
    assert_eq!(rw(&d, 0, 0x204), 1 << 8);
    ww(&mut d, 0, 0x284, 1 << 8);
    assert_eq!(rw(&d, 0, 0x204), 1 << 8, "ICPENDR cannot clear an asserted level");
    // Set by ISPENDR, it stays pending after the line drops...
    ww(&mut d, 0, 0x204, 1 << 8);
    d.set_line(spi, false, None);
    assert_eq!(rw(&d, 0, 0x204), 1 << 8);
    // ...until cleared.
    ww(&mut d, 0, 0x284, 1 << 8);
    assert_eq!(rw(&d, 0, 0x204), 0);
    // SGI pending shows in ISPENDR0 when pending from any requester.
    ww(&mut d, 1, 0xf00, 0x0001_0005);
    assert_eq!(rw(&d, 0, 0x200), 0x0800_0000 | 1 << 5);
}

#[test]
fn set_and_clear_active() {
    let mut d = Distributor::new(2, 32);
    ww(&mut d, 1, 0x300, 0x0001_0004);
    assert_eq!(rw(&d, 1, 0x300), 0x0001_0004);
    assert_eq!(rw(&d, 1, 0x380), 0x0001_0004);
    assert_eq!(rw(&d, 0, 0x300), 0);
    assert_eq!(d.sgi(VcpuId(1), 2).map(|s| s.active), Some(Some(1)), "active for the writer");
    ww(&mut d, 1, 0x380, 0x0000_0004);
    assert_eq!(rw(&d, 1, 0x300), 0x0001_0000);
    ww(&mut d, 0, 0x304, 0xffff_ffff);
    assert_eq!(rw(&d, 1, 0x304), 0xffff_ffff);
    ww(&mut d, 1, 0x384, 0x0000_ffff);
    assert_eq!(rw(&d, 0, 0x304), 0xffff_0000);
}

#[test]
fn priorities_bytes_words_banking_and_masking() {
    let mut d = Distributor::new(2, 32);
    ww(&mut d, 0, 0x400, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x400), 0xf8f8_f8f8, "five priority bits");
    assert_eq!(rw(&d, 1, 0x400), 0, "SGI priorities are banked");
    wr(&mut d, 1, 0x41f, Byte, 0xa7);
    assert_eq!(rd(&d, 1, 0x41f, Byte), 0xa0);
    assert_eq!(rw(&d, 1, 0x41c), 0xa000_0000);
    wr(&mut d, 0, 0x421, Byte, 0x58);
    assert_eq!(rw(&d, 1, 0x420), 0x0000_5800, "SPI priorities are shared");
    // Unimplemented INTIDs and the reserved word: RAZ/WI.
    ww(&mut d, 0, 0x440, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x440), 0);
    ww(&mut d, 0, 0x7fc, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x7fc), 0);
    // Halfword: RAZ/WI.
    let before = d.clone();
    wr(&mut d, 0, 0x420, Half, 0xffff);
    assert_eq!(d, before);
    assert_eq!(rd(&d, 0, 0x420, Half), 0);
}

/// A priority or target write reports the interrupts whose value changed,
/// and only those (what the server kicks for), SPIs and banked ones alike.
#[test]
fn priority_and_target_writes_touch_what_changed() {
    let mut d = Distributor::new(2, 64);
    let touched = |t: &Touched| t.iter().copied().collect::<std::vec::Vec<_>>();
    assert_eq!(touched(&ww(&mut d, 0, 0x424, 0x0000_8000)), [Touch::Spi(37)]);
    assert_eq!(touched(&ww(&mut d, 0, 0x424, 0x1000_8000)), [Touch::Spi(39)], "SPI 37 kept its priority");
    assert!(ww(&mut d, 0, 0x424, 0x1000_8000).is_empty(), "nothing changed");
    assert_eq!(touched(&wr(&mut d, 1, 0x41d, Byte, 0x40)), [Touch::Private(VcpuId(1), 29)]);
    assert_eq!(touched(&ww(&mut d, 0, 0x824, 0x0002_0100)), [Touch::Spi(37), Touch::Spi(38)]);
    assert_eq!(touched(&wr(&mut d, 0, 0x826, Byte, 0x02)), []);
    assert_eq!(rw(&d, 1, 0x824), 0x0002_0100);
    assert_eq!(rw(&d, 0, 0x424), 0x1000_8000);
}

#[test]
fn targets_read_only_for_private_and_masked_for_spis() {
    let mut d = Distributor::new(3, 64);
    ww(&mut d, 2, 0x800, 0xffff_ffff);
    assert_eq!(rw(&d, 2, 0x800), 0x0404_0404, "SGI targets read-only");
    assert_eq!(rw(&d, 1, 0x81c), 0x0202_0202, "PPI targets read-only");
    assert_eq!(rd(&d, 0, 0x81b, Byte), 0x01);
    ww(&mut d, 0, 0x820, 0xff07_0201);
    assert_eq!(rw(&d, 1, 0x820), 0x0707_0201, "bits of vCPUs that do not exist are RAZ/WI");
    wr(&mut d, 0, 0x822, Byte, 0x02);
    assert_eq!(rd(&d, 0, 0x822, Byte), 0x02);
    assert_eq!(rw(&d, 0, 0x820), 0x0702_0201);
    let spi = d.spi(34).copied().unwrap_or_default();
    assert_eq!(d.spi_target(&spi), Some(VcpuId(1)));
    let spi = d.spi(35).copied().unwrap_or_default();
    assert_eq!(d.spi_target(&spi), Some(VcpuId(0)), "1-N goes to the lowest");
    // Unimplemented SPIs and the reserved word.
    ww(&mut d, 0, 0x860, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0x860), 0);
    ww(&mut d, 0, 0xbfc, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0xbfc), 0);
}

#[test]
fn uniprocessor_targets_are_raz_wi() {
    let mut d = Distributor::new(1, 32);
    assert_eq!(rw(&d, 0, 0x800), 0);
    ww(&mut d, 0, 0x820, 0x0101_0101);
    assert_eq!(rw(&d, 0, 0x820), 0);
    let spi = d.spi(32).copied().unwrap_or_default();
    assert_eq!(d.spi_target(&spi), Some(VcpuId(0)), "every SPI goes to the only vCPU");
}

#[test]
fn icfgr_sgis_and_ppis_fixed_spis_programmable() {
    let mut d = Distributor::new(2, 32);
    ww(&mut d, 0, 0xc00, 0);
    ww(&mut d, 0, 0xc04, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0xc00), 0xaaaa_aaaa);
    assert_eq!(rw(&d, 0, 0xc04), 0);
    ww(&mut d, 1, 0xc08, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0xc08), 0xaaaa_aaaa, "Int_config[0] is reserved, RAZ");
    ww(&mut d, 1, 0xc08, 0x0000_0008);
    assert_eq!(rw(&d, 0, 0xc08), 0x0000_0008);
    assert!(d.spi(33).is_some_and(|s| s.edge));
    assert!(d.spi(32).is_some_and(|s| !s.edge));
    // Unimplemented: RAZ/WI.
    ww(&mut d, 1, 0xc10, 0xffff_ffff);
    assert_eq!(rw(&d, 0, 0xc10), 0);
}

#[test]
fn sgir_target_filters() {
    let mut d = Distributor::new(4, 32);
    // 0b00: the list, masked to vCPUs that exist.
    let t = ww(&mut d, 1, 0xf00, 0x00f5_0003);
    let pending = |d: &Distributor, v: u8, sgi: u8| d.sgi(VcpuId(v), sgi).map_or(0, |s| s.pending);
    assert_eq!((0..4).map(|v| pending(&d, v, 3)).collect::<std::vec::Vec<_>>(), [2, 0, 2, 0]);
    assert_eq!(t.len(), 2);
    // 0b01: all but the requester.
    ww(&mut d, 2, 0xf00, 0x0100_0007);
    assert_eq!((0..4).map(|v| pending(&d, v, 7)).collect::<std::vec::Vec<_>>(), [4, 4, 0, 4]);
    // 0b10: only the requester, whatever the list says.
    ww(&mut d, 3, 0xf00, 0x0200_000f | 0x00ff_0000);
    assert_eq!((0..4).map(|v| pending(&d, v, 15)).collect::<std::vec::Vec<_>>(), [0, 0, 0, 8]);
    // 0b11: reserved, nothing happens.
    let before = d.clone();
    assert!(ww(&mut d, 0, 0xf00, 0x03ff_0001).is_empty());
    assert_eq!(d, before);
    // The same SGI from two requesters is pending twice.
    ww(&mut d, 0, 0xf00, 0x0004_0003);
    assert_eq!(pending(&d, 2, 3), 0b11);
    assert_eq!(rd(&d, 2, 0xf10 + 3, Byte), 0b11, "CPENDSGIR shows requesters");
    // Byte access to GICD_SGIR: RAZ/WI.
    let before = d.clone();
    wr(&mut d, 0, 0xf00, Byte, 0x01);
    assert_eq!(d, before);
}

#[test]
fn sgi_pending_registers_per_requester() {
    let mut d = Distributor::new(3, 32);
    // SPENDSGIR1 byte 2 = SGI 6: set requesters 0 and 2, and 5 (absent).
    wr(&mut d, 1, 0xf26, Byte, 0b0010_0101);
    assert_eq!(rw(&d, 1, 0xf24), 0x0005_0000);
    assert_eq!(rw(&d, 1, 0xf14), 0x0005_0000, "CPENDSGIR reads the same");
    assert_eq!(rw(&d, 0, 0xf24), 0, "banked per target");
    assert_eq!(rw(&d, 1, 0x200), 1 << 6);
    ww(&mut d, 1, 0xf14, 0x0001_0000);
    assert_eq!(rd(&d, 1, 0xf26, Byte), 0b100);
    ww(&mut d, 1, 0xf20, 0x0707_0707);
    assert_eq!(rw(&d, 1, 0xf20), 0x0707_0707);
    ww(&mut d, 1, 0xf10, 0xffff_ffff);
    assert_eq!(rw(&d, 1, 0xf20), 0);
}

#[test]
fn reserved_implementation_defined_and_nsacr_are_raz_wi() {
    let mut d = Distributor::new(2, 64);
    ww(&mut d, 0, 0x000, 3);
    let before = d.clone();
    let snap = snapshot(&d);
    let raz_wi = (0x00c..0x080)
        .chain(0x7fc..0x800)
        .chain(0xbfc..0xc00)
        .chain(0xd00..0xf00)
        .chain(0xf04..0xf10)
        .chain(0xf30..0xfd0)
        .chain(0x1000..0x1100);
    for off in raz_wi.step_by(4) {
        for size in [Byte, Half, Word, Double] {
            if off % size.bytes() as u64 != 0 {
                continue;
            }
            assert_eq!(rd(&d, 0, off, size), 0, "{off:#x} {size:?}");
            wr(&mut d, 1, off, size, 0xffff_ffff);
        }
    }
    assert_eq!(d, before);
    assert_eq!(snapshot(&d), snap);
}

#[test]
fn bad_widths_are_raz_wi() {
    let mut d = Distributor::new(2, 64);
    ww(&mut d, 0, 0x000, 3);
    ww(&mut d, 0, 0x104, 0xffff_ffff);
    let before = d.clone();
    for off in (0..0x1000u64).step_by(1) {
        for size in [Byte, Half, Double] {
            let reg = decode(off, size);
            if let GicdReg::BadAccess { .. } = reg {
                assert_eq!(d.read(VcpuId(0), reg), 0, "{off:#x} {size:?}");
                d.write(VcpuId(1), reg, 0xffff_ffff);
            }
        }
    }
    assert_eq!(d, before);
}

#[test]
fn a_vcpu_never_disturbs_another_vcpus_banked_state() {
    let mut rng = Rng::new(7);
    let mut d = Distributor::new(4, 96);
    for _ in 0..20_000 {
        let v = rng.below(4) as u8;
        let off = rng.below(0x1100);
        let size = [Byte, Half, Word, Double][rng.below(4) as usize];
        let value = rng.next() as u32;
        let reg = decode(off, size);
        let others: std::vec::Vec<Banked> =
            (0..4).filter(|w| *w != v).filter_map(|w| d.banked.get(w as usize).copied()).collect();
        d.write(VcpuId(v), reg, value);
        let _ = d.read(VcpuId(v), reg);
        if reg != GicdReg::Sgir {
            let after: std::vec::Vec<Banked> =
                (0..4).filter(|w| *w != v).filter_map(|w| d.banked.get(w as usize).copied()).collect();
            assert_eq!(after, others, "{reg:?} by vcpu{v}");
        }
        // Invariants the rest of the server relies on.
        for (intid, s) in d.spis() {
            assert_eq!(s.priority & !PRIORITY_MASK, 0);
            assert_eq!(s.targets & !d.vcpu_mask(), 0, "SPI {intid}");
        }
        for b in &d.banked {
            for s in &b.sgis {
                assert_eq!(s.pending & !d.vcpu_mask(), 0);
                assert!(s.active.is_none_or(|a| a < 4));
            }
            assert!(b.ppis.iter().all(|p| !p.edge), "PPIs stay level-sensitive");
        }
    }
}

/// The pending/active state machine of one SPI against a reference model,
/// with list-register round trips in between: writing the interrupt into a
/// list register (`written`), the guest's acknowledge and deactivation, and
/// line and register events at any point.
#[test]
fn pending_active_state_machine_matches_the_model() {
    #[derive(Clone, Copy, Debug, Default)]
    struct Model {
        edge: bool,
        line: bool,
        latch: bool,
        active: bool,
        /// Pending as written into the (modelled) list register.
        in_lr: bool,
        /// A pend event since it was written.
        fresh: bool,
    }
    impl Model {
        fn pending(&self) -> bool {
            self.latch || (!self.edge && self.line)
        }
    }

    for seed in 0..64 {
        let mut rng = Rng::new(seed);
        let mut d = Distributor::new(1, 32);
        let irq = Irq::Spi { intid: 40 };
        let mut m = Model::default();
        for step in 0..2_000 {
            match rng.below(9) {
                0 => {
                    let level = rng.chance(50);
                    d.set_line(irq, level, None);
                    if level && m.edge {
                        m.latch = true;
                        m.fresh = true;
                    }
                    m.line = level;
                }
                1 => {
                    ww(&mut d, 0, 0x204, 1 << 8);
                    m.latch = true;
                    m.fresh = true;
                }
                2 => {
                    ww(&mut d, 0, 0x284, 1 << 8);
                    m.latch = false;
                    m.fresh = false;
                }
                3 => {
                    ww(&mut d, 0, 0x304, 1 << 8);
                    m.active = true;
                }
                4 => {
                    ww(&mut d, 0, 0x384, 1 << 8);
                    m.active = false;
                }
                5 => {
                    let edge = rng.chance(50);
                    ww(&mut d, 0, 0xc08, if edge { 0x2_0000 } else { 0 });
                    if edge && !m.edge && m.line {
                        m.latch = true;
                    }
                    m.edge = edge;
                }
                // Written into a list register as pending.
                6 if m.pending() => {
                    d.written(irq, true);
                    m.in_lr = true;
                    m.fresh = false;
                }
                // The guest acknowledges the list-register entry.
                7 if m.in_lr => {
                    d.ack(irq);
                    if !m.fresh {
                        m.latch = false;
                    }
                    m.active = true;
                    m.in_lr = false;
                }
                8 => {
                    d.deactivate(irq);
                    m.active = false;
                }
                _ => {}
            }
            let s = d.spi(40).copied().unwrap_or_default();
            assert_eq!(s.pending(), m.pending(), "seed {seed} step {step}: {m:?} vs {s:?}");
            assert_eq!(s.active, m.active, "seed {seed} step {step}");
            assert_eq!(rw(&d, 0, 0x204) >> 8 & 1 != 0, m.pending());
            assert_eq!(rw(&d, 0, 0x304) >> 8 & 1 != 0, m.active);
        }
    }
}

#[test]
fn an_edge_while_in_flight_is_not_lost() {
    let mut d = Distributor::new(1, 32);
    let irq = Irq::Spi { intid: 33 };
    ww(&mut d, 0, 0xc08, 0b1000);
    d.set_line(irq, true, None);
    d.written(irq, true);
    // A second edge before the guest's acknowledge is seen.
    d.set_line(irq, true, None);
    d.ack(irq);
    let s = d.spi(33).copied().unwrap_or_default();
    assert!(s.pending() && s.active, "active and pending again");
    // Without it, the acknowledge consumes the pending state.
    d.deactivate(irq);
    d.written(irq, true);
    d.ack(irq);
    let s = d.spi(33).copied().unwrap_or_default();
    assert!(!s.pending() && s.active);
}

#[test]
fn hardware_backed_lines() {
    let mut d = Distributor::new(2, 32);
    let timer = Irq::Ppi { vcpu: VcpuId(1), intid: 27 };
    d.set_line(timer, true, Some(IntId(27)));
    let inst = d.instance(timer).unwrap_or_else(|| unreachable!());
    assert!(inst.pending && inst.hw == Some(IntId(27)) && inst.wants_eoi && !inst.hw_owed);
    // The guest acknowledges and deactivates the virtual interrupt: the
    // physical one is still active, and now owed a deactivation.
    d.written(timer, true);
    d.ack(timer);
    let s = d.ppi(VcpuId(1), 27).copied().unwrap_or_default();
    assert!(!s.pending(), "pending is a latch even though PPIs are level-sensitive");
    assert!(s.hw_live && !s.hw_owed(), "active: nothing owed yet");
    d.deactivate(timer);
    let s = d.ppi(VcpuId(1), 27).copied().unwrap_or_default();
    assert!(s.hw_live && s.hw_owed());
    d.hw_deactivated(timer);
    assert!(d.ppi(VcpuId(1), 27).is_some_and(|s| !s.hw_owed() && s.hw_link().is_none()));
    // Cleared by the guest before it was handled: a deactivation is owed.
    d.set_line(timer, true, Some(IntId(27)));
    ww(&mut d, 1, 0x280, 1 << 27);
    let s = d.ppi(VcpuId(1), 27).copied().unwrap_or_default();
    assert!(s.hw_owed());
    d.hw_deactivated(timer);
    assert!(d.ppi(VcpuId(1), 27).is_some_and(|s| !s.hw_owed() && s.hw_link().is_none()));
    // Another vCPU's timer is untouched.
    assert_eq!(d.ppi(VcpuId(0), 27), Some(&IrqState::default()));
}

#[test]
fn the_busy_spis_are_exactly_the_spis_that_are_not_idle() {
    let mut rng = Rng::new(11);
    let mut d = Distributor::new(4, 96);
    let busy_by_scan =
        |d: &Distributor| -> std::vec::Vec<u16> { d.spis().filter(|(_, s)| !s.idle()).map(|(i, _)| i).collect() };
    let busy_by_bitmap = |d: &Distributor| -> std::vec::Vec<u16> { d.busy_spis().map(|(i, _)| i).collect() };
    for step in 0..20_000 {
        let intid = PRIVATE + rng.below(96) as u16;
        let irq = Irq::Spi { intid };
        match rng.below(6) {
            0 => {
                let hw = (rng.below(4) == 0).then_some(IntId(intid));
                let _ = d.set_line(irq, rng.below(2) == 0, hw);
            }
            1 => d.ack(irq),
            2 => d.deactivate(irq),
            3 => d.tidy(),
            _ => {
                // Any distributor register, any vCPU: enables, pending and
                // active bits, priorities, targets, configuration.
                let off = 0x100 + rng.below(0xc00);
                let reg = decode(off, Word);
                d.write(VcpuId(rng.below(4) as u8), reg, rng.next() as u32);
            }
        }
        assert_eq!(busy_by_bitmap(&d), busy_by_scan(&d), "step {step}");
        let words = d.busy.iter().enumerate().fold(0u32, |m, (w, &b)| if b != 0 { m | 1 << w } else { m });
        assert_eq!(d.busy_words, words, "step {step}: the summary has a bit for each non-empty word");
    }
    // A level-sensitive SPI raised and lowered again is forgotten by tidy.
    let mut d = Distributor::new(2, 64);
    let irq = Irq::Spi { intid: 40 };
    let _ = d.set_line(irq, true, None);
    assert_eq!(busy_by_bitmap(&d), [40]);
    let _ = d.set_line(irq, false, None);
    assert_eq!(busy_by_bitmap(&d), std::vec::Vec::<u16>::new());
    assert_ne!(d.busy, [0; BUSY_WORDS], "the bit stays until tidy");
    d.tidy();
    assert_eq!(d.busy, [0; BUSY_WORDS]);
    assert_eq!(d.busy_words, 0);
}

#[test]
fn the_live_masks_are_exactly_the_private_interrupts_that_are_not_idle() {
    let mut rng = Rng::new(12);
    let mut d = Distributor::new(2, 32);
    for step in 0..5_000 {
        let vcpu = VcpuId(rng.below(2) as u8);
        match rng.below(4) {
            0 => {
                let intid = SGIS + rng.below(16) as u16;
                let hw = (rng.below(4) == 0).then_some(IntId(intid));
                let _ = d.set_line(Irq::Ppi { vcpu, intid }, rng.below(2) == 0, hw);
            }
            1 => d.ack(Irq::Ppi { vcpu, intid: SGIS + rng.below(16) as u16 }),
            2 => d.deactivate(Irq::Sgi { target: vcpu, sgi: rng.below(16) as u8, source: VcpuId(rng.below(2) as u8) }),
            _ => {
                // Private registers and GICD_SGIR, from either vCPU.
                let off = [0x100, 0x180, 0x200, 0x280, 0x300, 0x380, 0xf00, 0xf10, 0xf20][rng.below(9) as usize];
                d.write(vcpu, decode(off, Word), rng.next() as u32);
            }
        }
        for v in [VcpuId(0), VcpuId(1)] {
            let ppis = (0..16u16).fold(0u32, |m, n| match d.ppi(v, SGIS + n) {
                Some(s) if !s.idle() => m | 1 << n,
                _ => m,
            });
            let sgis = (0..16u8).fold(0u32, |m, n| match d.sgi(v, n) {
                Some(s) if s.pending != 0 || s.active.is_some() => m | 1 << n,
                _ => m,
            });
            assert_eq!(d.live_ppis(v), ppis, "step {step}");
            assert_eq!(d.live_sgis(v), sgis, "step {step}");
        }
    }
}
