//! What an idle VM costs its host, measured from outside: CPU time from `/proc/PID/stat`,
//! wake-ups as context switches of all its threads. For every launcher's VMs.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::infra::process;

/// A running VM as the idle accounting sees it: its process, and whether it still runs.
pub trait Watched {
    fn pid(&self) -> u32;
    /// Fails if the VM's process has exited, saying how.
    fn check_running(&mut self) -> Result<()>;

    /// CPU time the VM's process has used so far, all threads (user + system).
    fn cpu_time(&self) -> Result<Duration> {
        process::cpu_time(self.pid())
    }
}

/// What an idle VM costs its host over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleCost {
    /// CPU time as a share of one core.
    pub cpu: f64,
    /// Wake-ups per second: context switches of all QEMU's threads.
    pub wakeups: f64,
}

/// CPU use and wake-ups of each VM over one shared `window`. Fails if a VM exits meanwhile.
pub fn idle_costs<W: Watched>(vms: &mut [W], window: Duration) -> Result<Vec<IdleCost>> {
    let sample = |vm: &W| -> Result<(Duration, u64)> {
        Ok((vm.cpu_time()?, process::context_switches(vm.pid())?))
    };
    let before: Vec<_> = vms.iter().map(sample).collect::<Result<_>>()?;
    let start = Instant::now();
    thread::sleep(window);
    let elapsed = start.elapsed().as_secs_f64();
    vms.iter_mut()
        .zip(before)
        .map(|(vm, (cpu, switches))| {
            vm.check_running()?;
            let (cpu_after, switches_after) = sample(vm)?;
            Ok(IdleCost {
                cpu: (cpu_after - cpu).as_secs_f64() / elapsed,
                wakeups: switches_after.saturating_sub(switches) as f64 / elapsed,
            })
        })
        .collect()
}

/// CPU use of each VM over one shared `window`, as shares of one core. Fails if a VM exits
/// meanwhile: an idle VM keeps running.
pub fn cpu_shares(vms: &mut [impl Watched], window: Duration) -> Result<Vec<f64>> {
    let before: Vec<_> = vms.iter().map(|vm| vm.cpu_time()).collect::<Result<_>>()?;
    let start = Instant::now();
    thread::sleep(window);
    let elapsed = start.elapsed().as_secs_f64();
    vms.iter_mut()
        .zip(before)
        .map(|(vm, before)| {
            vm.check_running()?;
            Ok((vm.cpu_time()? - before).as_secs_f64() / elapsed)
        })
        .collect()
}
