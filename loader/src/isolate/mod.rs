//! Process isolation on the host: `splitvisor replay --isolate process`
//! runs each server as its own OS process (`splitvisor serve SERVER`, over
//! ipc's byte-stream transport on its standard input and output), supervised
//! ([`supervisor`]): a server process that dies, hangs, sends garbage or a
//! reply that fails validation (`el2_monitor::validate`) is restarted and its state
//! restored exactly to what it was before the failed message (a checkpoint
//! plus the messages logged since), and the message is retried. Faults can be
//! injected ([`serve`], `--inject`, [`ipc::fault`]).
//!
//! Modules: [`proto`] (what the supervisor and a server process say),
//! [`serve`] (the server process), [`supervisor`]; the reply rules are
//! the monitor's own (`el2_monitor::validate`).

pub mod proto;
pub mod serve;
pub mod supervisor;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipc::fault::Injection;
use ipc::{Message, Reply, ServerId};

use crate::config::LogLevel;
use crate::trace::{self, Driven, TraceError};
use supervisor::{Halt, Supervisor};

/// Where `splitvisor replay` runs the servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// In the replaying process itself.
    #[default]
    None,
    /// Each server in its own supervised OS process.
    Process,
}

/// What is done with a message its server failed on twice (once, then
/// again after its state was restored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultPolicy {
    /// Restore the server once more and answer the message as the monitor
    /// would answer the guest (see [`policy_reply`]), then go on.
    #[default]
    Restart,
    /// Stop with a report.
    Stop,
}

/// How the supervisor works.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `splitvisor` executable to start server processes from.
    pub exe: PathBuf,
    /// How long a server process may take to answer one message.
    pub budget: Duration,
    /// Take a checkpoint of a server every this many messages to it.
    pub checkpoint_every: u64,
    /// What to do with a message that fails twice.
    pub on_fault: FaultPolicy,
    /// Faults to inject.
    pub injections: Vec<Injection>,
    /// Write each server process's pid to `DIR/SERVER.pid` when it starts.
    pub pid_dir: Option<PathBuf>,
    /// The server processes' log level.
    pub log_level: LogLevel,
}

impl Options {
    /// How long a new process may take to start and take in its state
    /// (starting a process is slower than answering a message, and slower
    /// still on a loaded machine): ten budgets, at least 5 s.
    pub fn startup_budget(&self) -> Duration {
        self.budget.saturating_mul(10).max(Duration::from_secs(5))
    }
}

/// What a recovery ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// The message was retried on the restored server and succeeded.
    Retried,
    /// The retry failed too; the message was answered by the policy.
    AnsweredByPolicy,
    /// The retry failed too; the replay stopped (`--on-server-fault stop`).
    Stopped,
    /// The server failed while giving its state for a checkpoint, after its
    /// reply was accepted; it was restored (the message stands).
    Restored,
}

/// One recovery of a server process.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// The server.
    pub server: ServerId,
    /// The number of the message it failed on (counted from 1 per server).
    pub message: u64,
    /// What went wrong.
    pub fault: String,
    /// The generation of the instance that took over.
    pub generation: u32,
    /// The checkpoint it started from: the state after this message.
    pub checkpoint_after: u64,
    /// Logged messages replayed into it.
    pub replayed: usize,
    /// From the detection of the fault to the end of the recovery (the
    /// retried reply accepted, or the policy applied).
    pub took: Duration,
    /// How it ended.
    pub outcome: RecoveryOutcome,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self.outcome {
            RecoveryOutcome::Retried => "retried it: recovered",
            RecoveryOutcome::AnsweredByPolicy => "the retry failed too: answered by policy",
            RecoveryOutcome::Stopped => "the retry failed too: stopping",
            RecoveryOutcome::Restored => "while giving a checkpoint: restored",
        };
        write!(
            f,
            "{} server, message {}: the process {}; restarted as generation {} from the checkpoint after message {} \
             and {} logged message(s), {outcome} in {:.1} ms",
            self.server.name(),
            self.message,
            self.fault,
            self.generation,
            self.checkpoint_after,
            self.replayed,
            self.took.as_secs_f64() * 1e3
        )
    }
}

/// Why a replay stopped on a server fault.
#[derive(Clone, Debug)]
pub struct Stopped {
    /// The server.
    pub server: ServerId,
    /// The number of the message it failed on.
    pub message_number: u64,
    /// The message.
    pub request: Message,
    /// The first failure.
    pub first: String,
    /// The failure of the retry (or of the restoration).
    pub again: String,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} server failed on its message {}: the process {}; after a restart it {}",
            self.server.name(),
            self.message_number,
            self.first,
            self.again
        )
    }
}

/// The answer `--on-server-fault restart` gives a message its server failed
/// on twice (once, then again after its state was restored): what the
/// monitor answers the guest when it cannot get a server's answer, from
/// the monitor's own rule ([`el2_monitor::router::refusal_answer`]).
pub fn policy_reply(message: &Message, timer: &ipc::TimerIntids) -> Reply {
    let mut reply = Reply::none();
    if let Some(action) = el2_monitor::router::refusal_answer(message, timer) {
        // One action always fits.
        let _ = reply.push(action);
    }
    reply
}

/// An isolated replay.
#[derive(Debug)]
pub struct IsolatedReplay {
    /// How it went.
    pub driven: Driven<Halt>,
    /// Every recovery, in order.
    pub recoveries: Vec<Recovery>,
    /// What the checkpoints cost.
    pub checkpoints: supervisor::CheckpointStats,
}

/// `splitvisor replay --isolate process FILE`.
pub fn replay(path: &Path, options: Options) -> Result<IsolatedReplay, TraceError> {
    let records = trace::read(path)?;
    let mut supervisor = Supervisor::new(options);
    let driven = trace::drive(path, &records, &mut supervisor)?;
    supervisor.shutdown();
    Ok(IsolatedReplay {
        driven,
        recoveries: std::mem::take(&mut supervisor.recoveries),
        checkpoints: supervisor.checkpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::{AccessSize, Action, MmioAccess, Trap, TrapMsg, VcpuId, VcpuRequest, VgicRequest};

    /// The architected timer interrupts (the virtual timer's physical one 27).
    const ARCH: &ipc::TimerIntids = &ipc::TimerIntids::ARCHITECTED;

    #[test]
    fn policy_answers_are_architectural() {
        let trap = |trap| Message::Vcpu(VcpuRequest::Trap(TrapMsg { vcpu: VcpuId(0), trap, pc: 0, cpsr: 0x1d3 }));
        let access = MmioAccess {
            ipa: 0x0900_0000,
            far: 0xc080_0000,
            size: AccessSize::Word,
            write: false,
            value: 0,
            rt: 0,
            sign_extend: false,
        };
        assert_eq!(
            policy_reply(&trap(Trap::Mmio(access)), ARCH).actions.to_vec()[..],
            [Action::InjectDataAbort { far: 0xc080_0000 }]
        );
        assert_eq!(
            policy_reply(&trap(Trap::Hvc { imm: 0, args: [0; 4] }), ARCH).actions.to_vec()[..],
            [Action::InjectUndef]
        );
        assert_eq!(
            policy_reply(&trap(Trap::PrefetchAbort { ipa: 0, far: 8 }), ARCH).actions.to_vec()[..],
            [Action::InjectPrefetchAbort { far: 8 }]
        );
        assert_eq!(policy_reply(&trap(Trap::Wfi), ARCH).actions.to_vec()[..], [Action::AdvancePc]);
        assert!(policy_reply(&trap(Trap::Irq { intid: 27 }), ARCH).actions.is_empty());
        let mmio = Message::Vgic(VgicRequest::Mmio { vcpu: VcpuId(1), access, status: None });
        assert_eq!(policy_reply(&mmio, ARCH).actions.to_vec()[..], [Action::InjectDataAbort { far: 0xc080_0000 }]);
        let sync = Message::Vgic(VgicRequest::Sync { vcpu: VcpuId(0), status: Default::default() });
        assert!(policy_reply(&sync, ARCH).actions.is_empty());
        let wfi = Message::Vgic(VgicRequest::Wfi { vcpu: VcpuId(0), status: Default::default() });
        assert_eq!(policy_reply(&wfi, ARCH).actions.to_vec()[..], [Action::AdvancePc]);
        // A timer tick refused: its physical interrupt is released, as the
        // monitor releases it.
        let tick = Message::Vgic(VgicRequest::SetLine {
            intid: ipc::IntId(27),
            level: true,
            target: Some(VcpuId(0)),
            hw: Some(ipc::IntId(27)),
            change: 0,
            status: None,
        });
        assert_eq!(
            policy_reply(&tick, ARCH).actions.to_vec()[..],
            [Action::DeactivatePhysical { intid: ipc::IntId(27) }]
        );
        // The virtual timer's `Fired` refused: its physical interrupt (the
        // configuration's) is released; the physical timer's is the Hyp
        // timer, which the monitor itself re-arms.
        let fired = |timer, now| Message::Vtimer(ipc::VtimerRequest::Fired { vcpu: VcpuId(1), timer, now });
        let virt = fired(ipc::msg::TimerKind::Virtual, 5);
        let other = ipc::TimerIntids { host_virt: ipc::IntId(20), ..ipc::TimerIntids::ARCHITECTED };
        assert_eq!(
            policy_reply(&virt, &other).actions.to_vec()[..],
            [Action::DeactivatePhysical { intid: ipc::IntId(20) }]
        );
        assert!(policy_reply(&fired(ipc::msg::TimerKind::Physical, 5), &other).actions.is_empty());
        // Every policy answer passes validation.
        let config = ipc::VmConfig::example(2);
        for m in [trap(Trap::Mmio(access)), trap(Trap::Wfe), mmio, sync, wfi, tick, virt] {
            assert_eq!(el2_monitor::validate::check(&policy_reply(&m, &config.timer), &config), Ok(()));
        }
    }
}
