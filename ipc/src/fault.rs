//! Fault injection: which server is made to fail, how, and on which message.
//!
//! An [`Injection`] is written `SERVER:KIND@TRIGGER[:repeat]`:
//!
//! - `SERVER` is `vcpu`, `vgic` or `vtimer` ([`ServerId::name`]);
//! - `KIND` is `panic`, `wild-write`, `hang` or `bad-reply` ([`FaultKind`]);
//! - `TRIGGER` is `N`, the N-th message to that server (counted from 1), or
//!   `random:SEED:RATE`, where a deterministic pseudo-random draw from `SEED`
//!   and the message number decides for each message, firing with
//!   probability `RATE` (a decimal fraction from 0 to 1 with at most six
//!   decimals, e.g. `0.01` for one message in a hundred) ([`Trigger`]);
//! - `:repeat` makes the fault fire again when the failed message is
//!   delivered again (a deterministic bug); without it the fault is
//!   transient and fires only on the first delivery of a message (a glitch
//!   that a retry gets past).
//!
//! This module only says *whether* an injection fires ([`Injection::fires`]);
//! carrying a fault out is the job of whoever runs the server (the monitor,
//! or the loader's host server process), and so is keeping track of which
//! delivery of a message is the first. It holds no policy.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::ServerId;

/// How an injected fault makes a server fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum FaultKind {
    /// The server panics while it handles the message.
    Panic,
    /// The server writes outside its own state (its protection domain), which
    /// stops it.
    WildWrite,
    /// The server never answers (runs past its time budget).
    Hang,
    /// The server answers with a reply that fails validation (a register
    /// that does not exist, an address outside guest RAM, ...).
    BadReply,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 4] = [FaultKind::Panic, FaultKind::WildWrite, FaultKind::Hang, FaultKind::BadReply];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Panic => "panic",
            FaultKind::WildWrite => "wild-write",
            FaultKind::Hang => "hang",
            FaultKind::BadReply => "bad-reply",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A probability, in parts per million (0 = never, 1 000 000 = always).
///
/// Written as a decimal fraction (`0.25`, `0.001`, `1`); six decimals are
/// exactly representable, so parsing and printing round-trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Rate(u32);

impl Rate {
    /// The denominator: one million.
    pub const PER: u32 = 1_000_000;
    /// Never.
    pub const NEVER: Rate = Rate(0);
    /// Every time.
    pub const ALWAYS: Rate = Rate(Self::PER);

    /// A rate of `ppm` parts per million; `None` above one million.
    pub fn from_ppm(ppm: u32) -> Option<Rate> {
        (ppm <= Self::PER).then_some(Rate(ppm))
    }

    /// The rate in parts per million.
    pub fn ppm(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::PER;
        let mut frac = self.0 % Self::PER;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let mut digits = 6;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        write!(f, "{whole}.{frac:0digits$}")
    }
}

impl FromStr for Rate {
    type Err = ParseInjectionError;

    /// A decimal fraction from 0 to 1 with at most six decimals.
    fn from_str(s: &str) -> Result<Rate, ParseInjectionError> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty())
            || !digits(whole)
            || !digits(frac)
            || (s.contains('.') && frac.is_empty())
        {
            return Err(ParseInjectionError::BadRate);
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 6 {
            return Err(ParseInjectionError::RateTooPrecise);
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() > 1 {
            return Err(ParseInjectionError::RateOutOfRange);
        }
        let whole: u32 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| ParseInjectionError::BadRate)? };
        let mut ppm_frac: u32 =
            if frac.is_empty() { 0 } else { frac.parse().map_err(|_| ParseInjectionError::BadRate)? };
        for _ in frac.len()..6 {
            ppm_frac *= 10;
        }
        let ppm = whole.checked_mul(Rate::PER).and_then(|w| w.checked_add(ppm_frac));
        ppm.and_then(Rate::from_ppm).ok_or(ParseInjectionError::RateOutOfRange)
    }
}

/// Which messages an injection fires on. Messages to a server are numbered
/// from 1 in the order the server is given them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Trigger {
    /// The n-th message to the server, counted from 1 (`At(1)` is the first
    /// message; `At(0)` never fires).
    At(u64),
    /// Each message independently, with probability `rate`, decided by a
    /// pseudo-random function of `seed`, the server and the message number:
    /// the same seed fires on the same messages in every run, whatever order
    /// the messages are asked about in.
    Random {
        /// The seed of the draw.
        seed: u64,
        /// The probability of firing on one message.
        rate: Rate,
    },
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::At(n) => write!(f, "{n}"),
            Trigger::Random { seed, rate } => write!(f, "random:{seed}:{rate}"),
        }
    }
}

/// One fault to inject: `server` fails with `kind` on the messages `trigger`
/// selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Injection {
    /// The server made to fail.
    pub server: ServerId,
    /// How it fails.
    pub kind: FaultKind,
    /// On which messages.
    pub trigger: Trigger,
    /// Fire on every delivery of a selected message (a deterministic bug),
    /// not only on the first (a transient fault, which a retry gets past).
    pub repeat: bool,
}

impl Injection {
    /// Whether this injection fires on message number `message` (counted
    /// from 1) to `server`. Whether this is the message's first delivery is
    /// the caller's to track: a transient injection (`repeat == false`)
    /// should be carried out only on the first.
    pub fn fires(&self, server: ServerId, message: u64) -> bool {
        if server != self.server || message == 0 {
            return false;
        }
        match self.trigger {
            Trigger::At(n) => message == n,
            Trigger::Random { seed, rate } => draw(seed, server, message) < rate.ppm(),
        }
    }
}

/// A uniform draw in `0..Rate::PER` from the seed, the server and the message
/// number: SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
/// number generators", OOPSLA 2014) applied to a mix of the three. It is
/// stateless, so a decision does not depend on which messages were asked
/// about before. Hand-written: ten lines, where a PRNG crate would bring
/// state and a dependency into this no_std crate. The modulo bias (2^64 is
/// not a multiple of a million) is below 1e-13.
fn draw(seed: u64, server: ServerId, message: u64) -> u32 {
    let salt = (server.index() as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mixed = splitmix64(seed ^ salt).wrapping_add(message);
    // The remainder is below one million, so it fits in u32.
    (splitmix64(mixed) % u64::from(Rate::PER)) as u32
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl fmt::Display for Injection {
    /// The `SERVER:KIND@TRIGGER[:repeat]` form that [`Injection::from_str`]
    /// reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{}", self.server.name(), self.kind, self.trigger)?;
        if self.repeat {
            f.write_str(":repeat")?;
        }
        Ok(())
    }
}

/// Why a `SERVER:KIND@TRIGGER` specification was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseInjectionError {
    /// No `@` between `SERVER:KIND` and the trigger.
    MissingTrigger,
    /// No `:` between the server and the kind.
    MissingKind,
    /// The server is not `vcpu`, `vgic` or `vtimer`.
    UnknownServer,
    /// The kind is not `panic`, `wild-write`, `hang` or `bad-reply`.
    UnknownKind,
    /// The message number is not a decimal number.
    BadMessageNumber,
    /// The message number is 0 (messages are counted from 1).
    ZeroMessageNumber,
    /// A `random` trigger without `:SEED:RATE`.
    MissingRandomFields,
    /// The seed is not a decimal number that fits in 64 bits.
    BadSeed,
    /// The rate is not a decimal fraction.
    BadRate,
    /// The rate is above 1.
    RateOutOfRange,
    /// The rate has more than six decimals.
    RateTooPrecise,
    /// Something other than `:repeat` after the trigger.
    TrailingField,
}

impl fmt::Display for ParseInjectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self {
            ParseInjectionError::MissingTrigger => "expected SERVER:KIND@N or SERVER:KIND@random:SEED:RATE (no '@')",
            ParseInjectionError::MissingKind => "expected SERVER:KIND before '@' (no ':')",
            ParseInjectionError::UnknownServer => "unknown server (expected vcpu, vgic or vtimer)",
            ParseInjectionError::UnknownKind => "unknown fault kind (expected panic, wild-write, hang or bad-reply)",
            ParseInjectionError::BadMessageNumber => "the message number N is not a decimal number",
            ParseInjectionError::ZeroMessageNumber => "messages are counted from 1: N must be at least 1",
            ParseInjectionError::MissingRandomFields => "a random trigger is random:SEED:RATE",
            ParseInjectionError::BadSeed => "the seed is not a decimal number below 2^64",
            ParseInjectionError::BadRate => "the rate is not a decimal fraction such as 0.01",
            ParseInjectionError::RateOutOfRange => "the rate is a probability: at most 1",
            ParseInjectionError::RateTooPrecise => "the rate has more than six decimals",
            ParseInjectionError::TrailingField => "only ':repeat' may follow the trigger",
        };
        f.write_str(why)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseInjectionError {}

impl FromStr for ServerId {
    type Err = ParseInjectionError;

    /// `vcpu`, `vgic` or `vtimer`.
    fn from_str(s: &str) -> Result<ServerId, ParseInjectionError> {
        ServerId::ALL.into_iter().find(|id| id.name() == s).ok_or(ParseInjectionError::UnknownServer)
    }
}

impl FromStr for FaultKind {
    type Err = ParseInjectionError;

    /// `panic`, `wild-write`, `hang` or `bad-reply`.
    fn from_str(s: &str) -> Result<FaultKind, ParseInjectionError> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s).ok_or(ParseInjectionError::UnknownKind)
    }
}

impl FromStr for Injection {
    type Err = ParseInjectionError;

    /// `SERVER:KIND@N[:repeat]` or `SERVER:KIND@random:SEED:RATE[:repeat]`.
    fn from_str(s: &str) -> Result<Injection, ParseInjectionError> {
        let (target, trigger) = s.split_once('@').ok_or(ParseInjectionError::MissingTrigger)?;
        let (server, kind) = target.split_once(':').ok_or(ParseInjectionError::MissingKind)?;
        let server: ServerId = server.parse()?;
        let kind: FaultKind = kind.parse()?;
        let mut fields = trigger.split(':');
        let first = fields.next().unwrap_or("");
        let trigger = if first == "random" {
            let seed = fields.next().ok_or(ParseInjectionError::MissingRandomFields)?;
            let rate = fields.next().ok_or(ParseInjectionError::MissingRandomFields)?;
            let seed = parse_decimal(seed).ok_or(ParseInjectionError::BadSeed)?;
            Trigger::Random { seed, rate: rate.parse()? }
        } else {
            let n = parse_decimal(first).ok_or(ParseInjectionError::BadMessageNumber)?;
            if n == 0 {
                return Err(ParseInjectionError::ZeroMessageNumber);
            }
            Trigger::At(n)
        };
        let repeat = match (fields.next(), fields.next()) {
            (None, _) => false,
            (Some("repeat"), None) => true,
            _ => return Err(ParseInjectionError::TrailingField),
        };
        Ok(Injection { server, kind, trigger, repeat })
    }
}

/// A plain decimal number (no sign, no `_`, no `0x`).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, vec::Vec};

    use super::*;

    fn parse(s: &str) -> Result<Injection, ParseInjectionError> {
        s.parse()
    }

    #[test]
    fn every_server_and_kind_parses_and_prints_back() {
        for server in ServerId::ALL {
            for kind in FaultKind::ALL {
                for (trigger, repeat) in [
                    (Trigger::At(1), false),
                    (Trigger::At(12345), true),
                    (Trigger::Random { seed: 7, rate: Rate(10_000) }, false),
                    (Trigger::Random { seed: u64::MAX, rate: Rate::ALWAYS }, true),
                ] {
                    let injection = Injection { server, kind, trigger, repeat };
                    let text = format!("{injection}");
                    assert_eq!(parse(&text), Ok(injection), "{text}");
                }
            }
        }
        assert_eq!(
            parse("vgic:wild-write@17"),
            Ok(Injection {
                server: ServerId::Vgic,
                kind: FaultKind::WildWrite,
                trigger: Trigger::At(17),
                repeat: false
            })
        );
        assert_eq!(
            parse("vtimer:bad-reply@random:42:0.25:repeat"),
            Ok(Injection {
                server: ServerId::Vtimer,
                kind: FaultKind::BadReply,
                trigger: Trigger::Random { seed: 42, rate: Rate(250_000) },
                repeat: true
            })
        );
        assert_eq!(format!("{}", parse("vcpu:hang@random:1:0.010").unwrap()), "vcpu:hang@random:1:0.01");
    }

    #[test]
    fn bad_specifications_are_typed_errors() {
        use ParseInjectionError::*;
        let cases: &[(&str, ParseInjectionError)] = &[
            ("", MissingTrigger),
            ("vgic:panic", MissingTrigger),
            ("vgic@3", MissingKind),
            ("gic:panic@3", UnknownServer),
            ("VGIC:panic@3", UnknownServer),
            ("vgic:explode@3", UnknownKind),
            ("vgic:panic@", BadMessageNumber),
            ("vgic:panic@-1", BadMessageNumber),
            ("vgic:panic@+1", BadMessageNumber),
            ("vgic:panic@0x10", BadMessageNumber),
            ("vgic:panic@99999999999999999999", BadMessageNumber),
            ("vgic:panic@0", ZeroMessageNumber),
            ("vgic:panic@random", MissingRandomFields),
            ("vgic:panic@random:1", MissingRandomFields),
            ("vgic:panic@random:x:0.1", BadSeed),
            ("vgic:panic@random:1:", BadRate),
            ("vgic:panic@random:1:.", BadRate),
            ("vgic:panic@random:1:1.", BadRate),
            ("vgic:panic@random:1:-0.1", BadRate),
            ("vgic:panic@random:1:1e-3", BadRate),
            ("vgic:panic@random:1:1.5", RateOutOfRange),
            ("vgic:panic@random:1:10", RateOutOfRange),
            ("vgic:panic@random:1:0.0000001", RateTooPrecise),
            ("vgic:panic@3:again", TrailingField),
            ("vgic:panic@3:repeat:repeat", TrailingField),
            ("vgic:panic@random:1:0.5:x", TrailingField),
        ];
        for (text, error) in cases {
            assert_eq!(parse(text), Err(*error), "{text}");
        }
        // Every error says something.
        for (_, error) in cases {
            assert!(!format!("{error}").is_empty());
        }
    }

    #[test]
    fn rates_parse_exactly() {
        let ppm = |s: &str| s.parse::<Rate>().map(Rate::ppm);
        assert_eq!(ppm("0"), Ok(0));
        assert_eq!(ppm("1"), Ok(1_000_000));
        assert_eq!(ppm("1.000"), Ok(1_000_000));
        assert_eq!(ppm("0.5"), Ok(500_000));
        assert_eq!(ppm(".5"), Ok(500_000));
        assert_eq!(ppm("0.000001"), Ok(1));
        assert_eq!(ppm("00.1"), Ok(100_000));
        assert_eq!(ppm("1.000001"), Err(ParseInjectionError::RateOutOfRange));
        assert_eq!(Rate::from_ppm(1_000_001), None);
        assert_eq!(format!("{}", Rate(1)), "0.000001");
        assert_eq!(format!("{}", Rate(120_000)), "0.12");
    }

    #[test]
    fn a_numbered_trigger_fires_on_that_message_of_that_server_only() {
        let injection = parse("vgic:panic@3").unwrap();
        let fired: Vec<u64> = (0..10).filter(|&n| injection.fires(ServerId::Vgic, n)).collect();
        assert_eq!(fired, [3]);
        assert!(!injection.fires(ServerId::Vcpu, 3));
        assert!(!injection.fires(ServerId::Vtimer, 3));
        // Message numbers start at 1: At(0) cannot be written and never fires.
        let zero = Injection { trigger: Trigger::At(0), ..injection };
        assert!((0..10).all(|n| !zero.fires(ServerId::Vgic, n)));
    }

    #[test]
    fn a_random_trigger_is_deterministic_and_near_its_rate() {
        let injection = parse("vcpu:hang@random:2024:0.05").unwrap();
        let fired: Vec<u64> = (1..=100_000).filter(|&n| injection.fires(ServerId::Vcpu, n)).collect();
        // 5000 expected; the standard deviation is about 69.
        assert!((4700..5300).contains(&fired.len()), "{}", fired.len());
        // The same decision whatever the order of asking.
        let again: Vec<u64> = (1..=100_000).rev().filter(|&n| injection.fires(ServerId::Vcpu, n)).collect();
        assert_eq!(fired, again.into_iter().rev().collect::<Vec<_>>());
        // Another seed or another server picks other messages.
        let other = parse("vcpu:hang@random:2025:0.05").unwrap();
        assert!(fired.iter().filter(|&&n| other.fires(ServerId::Vcpu, n)).count() < fired.len() / 4);
        let vgic = Injection { server: ServerId::Vgic, ..injection };
        assert!(fired.iter().filter(|&&n| vgic.fires(ServerId::Vgic, n)).count() < fired.len() / 4);
        // Rate 0 never fires, rate 1 always (never on message 0).
        let never = parse("vcpu:hang@random:1:0").unwrap();
        let always = parse("vcpu:hang@random:1:1").unwrap();
        assert!((1..1000).all(|n| !never.fires(ServerId::Vcpu, n) && always.fires(ServerId::Vcpu, n)));
        assert!(!always.fires(ServerId::Vcpu, 0));
    }

    #[test]
    fn injections_round_trip_through_the_wire_format() {
        let injection = parse("vtimer:wild-write@random:99:0.125:repeat").unwrap();
        let mut buf = [0u8; 64];
        let bytes = crate::wire::encode(&injection, &mut buf).unwrap();
        assert_eq!(crate::wire::decode::<Injection>(bytes), Ok(injection));
    }
}

/// What the monitor does with a message its server failed on twice (once,
/// then again after its state was restored): `splitvisor run
/// --on-server-fault`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum OnServerFault {
    /// Answer the guest architecturally (the answer to a refused request: an
    /// injected abort or undefined instruction, a PSCI error) and go on.
    #[default]
    Restart,
    /// Stop the VM with a report and exit status [`crate::exit::SERVER_FAULT`].
    Stop,
}

/// How many faults one VM configuration can carry.
pub const MAX_INJECTIONS: usize = 16;
