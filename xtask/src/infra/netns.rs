//! A private network for the net family's tests: a network namespace of its own with a bridge
//! (192.0.2.1/24 and 2001:db8::1/64: documentation addresses), dnsmasq on it as the DHCP server
//! and IPv6 router (what libvirt and OpenStack run), and taps that QEMU opens in this namespace
//! and that are then moved onto the bridge. Nothing is routed out: every packet stays in the
//! namespace. Dropping it stops dnsmasq and deletes the namespace with everything in it.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::infra::files::Scratch;
use crate::infra::process::{self, Guarded};
use crate::infra::qemu::{self, NetBackend, Nic, Vm, VmConfig};
use crate::infra::tools::{self, Tool};

/// The bridge's addresses: the DHCP server and router the VMs see.
pub const SERVER: &str = "192.0.2.1";
pub const SERVER_V6: &str = "2001:db8::1";
/// The prefix the router advertises (SLAAC addresses are this and the EUI-64).
pub const PREFIX_V6: &str = "2001:db8::";
/// The leased range, and how long a lease lasts (dnsmasq's minimum is 2 minutes).
const RANGE: &str = "192.0.2.50,192.0.2.149,2m";
/// How long dnsmasq gets to bind its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One private network.
pub struct PrivateNetwork {
    name: String,
    dir: Scratch,
    dnsmasq: Option<Guarded>,
    /// The taps made for this network (deleted with it, wherever they are).
    taps: Mutex<Vec<String>>,
}

/// `ip ARGS`, checked.
fn ip(args: &[&str]) -> Result<()> {
    let out =
        process::output(Command::new(tools::path(Tool::Ip)?).args(args)).context("running ip")?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl PrivateNetwork {
    /// A new namespace (`vm512-<tag><n>-<pid>`), its bridge up, dnsmasq serving it; with `dhcp`
    /// false, no DHCP server at all (the router advertisements still come).
    pub fn create(tag: &str, dhcp: bool) -> Result<PrivateNetwork> {
        PrivateNetwork::create_with(tag, dhcp, true)
    }

    /// As [`create`](Self::create), dnsmasq with `--no-ping`: it offers an address at once,
    /// without first pinging it to see that it is free (which costs some 3 s of each new lease).
    pub fn create_without_address_check(tag: &str) -> Result<PrivateNetwork> {
        PrivateNetwork::create_with(tag, true, false)
    }

    fn create_with(tag: &str, dhcp: bool, address_check: bool) -> Result<PrivateNetwork> {
        sweep_dead();
        // Tests run in parallel, several with one tag: each network its own name (ending in
        // the process id, which `sweep_dead` reads).
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("vm512-{tag}{n}-{}", std::process::id());
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let mut network = PrivateNetwork {
            dir: Scratch::new(&format!("net-{tag}"))?,
            name,
            dnsmasq: None,
            taps: Mutex::new(Vec::new()),
        };
        let ns = network.name.clone();
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge", "forward_delay", "0"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{SERVER}/24"), "dev", "br0"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{SERVER_V6}/64"), "dev", "br0", "nodad"])?;
        ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        let leases = network.leases_path();
        fs::write(network.hosts_path(), "")?;
        let mut command = network.command(&tools::path(Tool::Dnsmasq)?.display().to_string());
        command
            .args(["--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=br0"])
            .args(["--bind-interfaces", "--log-dhcp", "--enable-ra"])
            .arg(format!("--dhcp-range={PREFIX_V6},ra-only"))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--dhcp-hostsfile={}", network.hosts_path().display()))
            .arg(format!("--pid-file={}", network.dir.join("dnsmasq.pid").display()))
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(network.log_path())?);
        if dhcp {
            command.arg(format!("--dhcp-range={RANGE}"));
        }
        if !address_check {
            command.arg("--no-ping");
        }
        network.dnsmasq = Some(process::spawn(&mut command).context("starting dnsmasq")?);
        let deadline = Instant::now() + START_TIMEOUT;
        while !network.log().contains("router advertisement on") {
            if let Some(status) = network.dnsmasq.as_mut().and_then(|d| d.try_wait().ok()).flatten()
            {
                bail!("dnsmasq exited ({status}): {}", network.log());
            }
            if Instant::now() > deadline {
                bail!("dnsmasq did not start within {START_TIMEOUT:?}: {}", network.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(network)
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program args` inside the namespace and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        process::output(self.command(program).args(args))
            .with_context(|| format!("running {program} in {}", self.name))
    }

    /// A new tap, in this process's namespace for QEMU to open (`ifname=`); [`plug`] then
    /// puts it on the bridge. Its name is short enough for Linux's 15 characters.
    ///
    /// [`plug`]: Self::plug
    pub fn tap(&self) -> Result<String> {
        // Numbered across the process: taps of every network are made in this one namespace.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("v5{}t{n}", std::process::id() % 100_000);
        ip(&["tuntap", "add", "dev", &name, "mode", "tap"])?;
        taps.push(name.clone());
        Ok(name)
    }

    /// [`plug`](Self::plug)s `tap` once process `pid` has it open. A VMM that opens its tap
    /// by name while it boots (Cloud Hypervisor, Firecracker) would otherwise find the name
    /// gone from this namespace when it is moved first, and make a tap of its own, on no
    /// bridge: the VM boots, and no frame ever reaches it.
    #[cfg(test)]
    pub fn plug_when_open(&self, tap: &str, pid: u32) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !has_tap_open(pid, tap) {
            if Instant::now() > deadline {
                bail!("process {pid} did not open tap {tap} in {}s", START_TIMEOUT.as_secs());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.plug(tap)
    }

    /// Moves `tap` (opened by QEMU) into the namespace and onto the bridge.
    pub fn plug(&self, tap: &str) -> Result<()> {
        ip(&["link", "set", tap, "netns", &self.name])?;
        ip(&["-n", &self.name, "link", "set", tap, "master", "br0", "up"])
    }

    /// dnsmasq's hosts file (`--dhcp-hostsfile`: reread on SIGHUP), empty unless [`ignore`]
    /// wrote it.
    ///
    /// [`ignore`]: Self::ignore
    pub fn hosts_path(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    #[cfg(test)]
    /// dnsmasq's process id (`ip netns exec` runs it in its own place).
    pub fn dnsmasq_pid(&self) -> Option<u32> {
        self.dnsmasq.as_ref().map(Guarded::id)
    }

    #[cfg(test)]
    /// Has dnsmasq ignore every DHCP message from `mac` (until its hosts file is emptied and it
    /// is sent SIGHUP): the VM meets no DHCP server, or only the test's own.
    pub fn ignore(&self, mac: &str) -> Result<()> {
        let hosts = self.hosts_path();
        let read = format!("read {}", hosts.display());
        let before = self.log().matches(&read).count();
        fs::write(&hosts, format!("{mac},ignore\n"))?;
        let pid = self.dnsmasq_pid().context("dnsmasq is not running")?.to_string();
        let out = process::output(Command::new("kill").args(["-HUP", &pid]))?;
        if !out.status.success() {
            bail!("kill -HUP {pid}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        // dnsmasq rereads the file between two packets, and logs it.
        let deadline = Instant::now() + START_TIMEOUT;
        while self.log().matches(&read).count() <= before {
            if Instant::now() > deadline {
                bail!("dnsmasq did not reread {}: {}", hosts.display(), self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    #[cfg(test)]
    /// A file of this network's scratch directory (removed with it).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    #[cfg(test)]
    /// `ping -f` from the bridge to `address` for `seconds` (a flood: as fast as the replies
    /// come, at least 100 a second): how many were sent and how many answered.
    pub fn ping_flood(&self, address: &str, seconds: u32) -> Result<(u32, u32)> {
        let ping = tools::path(Tool::Ping)?.display().to_string();
        let out = self.run(&ping, &["-n", "-q", "-f", "-w", &seconds.to_string(), address])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .find(|line| line.contains(" packets transmitted, "))
            .with_context(|| format!("ping -f printed no summary: {text}"))?;
        let number = |field: usize| -> Option<u32> {
            summary.split(", ").nth(field)?.split_whitespace().next()?.parse().ok()
        };
        match (number(0), number(1)) {
            (Some(sent), Some(received)) => Ok((sent, received)),
            _ => bail!("ping -f's summary unreadable: {summary}"),
        }
    }

    /// Gives `config` a `model` card (a QEMU device, with options) with MAC `mac` on a new tap
    /// of this network, and has it start paused, so that the tap joins the bridge first (as a
    /// platform's port is up before its VM runs); returns the tap for [`start`](Self::start).
    pub fn attach(&self, config: &mut VmConfig, model: &str, mac: &str) -> Result<String> {
        let tap = self.tap()?;
        config.nic = Some(Nic {
            model: Some(model.into()),
            backend: NetBackend::Tap { ifname: tap.clone() },
            mac: Some(mac.into()),
        });
        config.memory_mib = config.memory_mib.max(64);
        config.extra.push("-S".into());
        Ok(tap)
    }

    /// Starts every config [`attach`](Self::attach) prepared, plugs its tap and lets it run.
    pub fn start(&self, configs: &[(VmConfig, String)]) -> Result<Vec<Vm>> {
        let only: Vec<VmConfig> = configs.iter().map(|(config, _)| config.clone()).collect();
        let mut vms = qemu::start_all(&only)?;
        for ((_, tap), vm) in configs.iter().zip(&mut vms) {
            self.plug(tap)?;
            vm.qmp("cont")?;
        }
        Ok(vms)
    }

    /// Waits up to `timeout` for `mac`'s lease, then for `vm`'s line `<message> <address>` on
    /// COM1; the address.
    pub fn leased(
        &self,
        vm: &mut Vm,
        mac: &str,
        message: &str,
        timeout: Duration,
    ) -> Result<String> {
        let lease = self.wait_for_lease(mac, timeout)?;
        let line = format!("{message} {}\r\n", lease.address);
        vm.wait_for(line.as_bytes(), timeout)
            .with_context(|| format!("{}: no address line", vm.description()))?;
        Ok(lease.address)
    }

    /// `ping -c COUNT -i 0.2` from the bridge to `address`: the round trips' minimum, mean
    /// and maximum in milliseconds, over the replies that came.
    pub fn ping_rtt(&self, address: &str, count: u32) -> Result<[f64; 3]> {
        let ping = tools::path(Tool::Ping)?.display().to_string();
        let count = count.to_string();
        let out = self.run(&ping, &["-n", "-q", "-c", &count, "-i", "0.2", "-W", "2", address])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let figures = text
            .lines()
            .find_map(|line| line.strip_prefix("rtt min/avg/max/mdev = "))
            .with_context(|| format!("ping printed no round trips: {text}"))?;
        let mut numbers = figures.trim_end_matches(" ms").split('/').map(str::parse::<f64>);
        match (numbers.next(), numbers.next(), numbers.next()) {
            (Some(Ok(min)), Some(Ok(avg)), Some(Ok(max))) => Ok([min, avg, max]),
            _ => bail!("ping's round trips unreadable: {figures}"),
        }
    }

    /// How many frames the bridge has sent down `tap` to its VM so far.
    pub fn frames_to(&self, tap: &str) -> Result<u64> {
        let counter = format!("/sys/class/net/{tap}/statistics/tx_packets");
        let out = self.run("cat", &[&counter])?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("reading {counter}"))
    }

    fn leases_path(&self) -> PathBuf {
        self.dir.join("leases")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// What dnsmasq has logged (`--log-dhcp`: every DHCP message it saw and sent).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The lease file's line for `mac` (`expiry MAC IP host client-id`), if there is one.
    pub fn lease(&self, mac: &str) -> Option<Lease> {
        let leases = fs::read_to_string(self.leases_path()).unwrap_or_default();
        leases.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 5 && fields[1].eq_ignore_ascii_case(mac)).then(|| Lease {
                address: fields[2].to_string(),
                host: fields[3].to_string(),
                client_id: fields[4].to_string(),
            })
        })
    }

    /// Waits up to `timeout` for a lease for `mac`.
    pub fn wait_for_lease(&self, mac: &str, timeout: Duration) -> Result<Lease> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(lease) = self.lease(mac) {
                return Ok(lease);
            }
            if Instant::now() > deadline {
                bail!("no lease for {mac} after {timeout:?}; dnsmasq's log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    #[cfg(test)]
    /// `ping -c COUNT` from the bridge to `address` (IPv4 or IPv6), each reply awaited up to
    /// 2 s: how many replies came.
    pub fn ping(&self, address: &str, count: u32) -> Result<u32> {
        let count = count.to_string();
        let ping = tools::path(Tool::Ping)?.display().to_string();
        let out = self.run(&ping, &["-n", "-c", &count, "-i", "0.2", "-W", "2", address])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let received = text
            .lines()
            .find_map(|line| line.split(", ").nth(1)?.strip_suffix(" received")?.parse().ok())
            .with_context(|| format!("ping printed no summary: {text}"))?;
        Ok(received)
    }

    #[cfg(test)]
    /// `GET /` from the bridge to `address` port 80 (bash's /dev/tcp: no client to install),
    /// within 5 s: the whole answer.
    pub fn http_get(&self, address: &str) -> Result<String> {
        let script = format!(
            "exec 3<>/dev/tcp/{address}/80 && printf 'GET / HTTP/1.1\\r\\nHost: {address}\\r\\n\
             Connection: close\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
        );
        let out = self.run("bash", &["-c", &script])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Deletes the namespaces of test processes that are gone (killed before their networks were
/// dropped): `vm512-<tag><n>-<pid>` with no process `<pid>`. Their dnsmasq died with them (the
/// process guard's parent-death signal); their taps went with the namespace.
fn sweep_dead() {
    let Ok(out) = process::output(Command::new("ip").args(["netns", "list"])) else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let pid = name.strip_prefix("vm512-").and_then(|rest| rest.rsplit('-').next());
        if let Some(pid) = pid.and_then(|pid| pid.parse::<u32>().ok())
            && !alive(pid)
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Whether process `pid` runs (a zombie, which no init here may reap, does not).
fn alive(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
    matches!(state, Some(state) if state != "Z" && state != "X")
}

/// One line of dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: String,
    pub host: String,
    pub client_id: String,
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        if let Some(mut dnsmasq) = self.dnsmasq.take() {
            dnsmasq.kill();
        }
        // Deleting the namespace deletes its bridge and the taps moved into it; a tap never
        // plugged is still here.
        let _ = ip(&["netns", "del", &self.name]);
        for tap in self.taps.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = process::output(Command::new("ip").args(["link", "del", tap]));
        }
    }
}

/// Whether process `pid` holds a file descriptor on tap `tap`: the tun driver names its
/// interface in the descriptor's `/proc` fdinfo (`iff:\tNAME`).
#[cfg(test)]
fn has_tap_open(pid: u32, tap: &str) -> bool {
    let needle = format!("iff:\t{tap}\n");
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return false };
    entries
        .flatten()
        .any(|entry| fs::read_to_string(entry.path()).is_ok_and(|info| info.contains(&needle)))
}
