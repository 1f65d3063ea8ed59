//! The QEMU guest agent's protocol, as qemu-ga speaks it (QEMU's `qga/qapi-schema.json`): JSON
//! commands in, one reply line out (`{"return": ...}` or `{"error": ...}`, written the way QEMU
//! writes JSON: `": "` and `", "`), and the VM's answers to the commands platforms use. Pure
//! (the facts it reports come from the caller), and tested on the host.
//!
//! Framing: a message is a balanced `{...}` (or `[...]`) outside strings, as QEMU's JSON streamer
//! splits them, with or without a line break after it. Bounded everywhere: a message longer than
//! [`MESSAGE`] is read to its end and answered with QEMU's size error; a byte 0xFF drops whatever
//! was being read and is answered as qemu-ga answers it (a stray byte: clients send it to reset
//! the parser and skip to their own 0xFF-delimited reply); a line break inside an unfinished
//! message ends it as malformed (every client writes one command per line, so the next line is
//! read afresh, where QEMU would wait for the braces to balance).

use super::json::{self, Parsed};
use super::text::Text;

/// The longest message read (qemu-ga: 64 MiB; the agent's commands are a few dozen bytes).
pub const MESSAGE: usize = 1024;
/// Room for one reply (guest-info's, the longest, is about 1.4 KiB).
pub const REPLY: usize = 2048;
pub type Reply = Text<REPLY>;

/// qemu-ga's sentinel: before guest-sync-delimited's reply; from a client, a parser reset.
pub const SENTINEL: u8 = 0xFF;

/// This project, as guest-info and guest-get-osinfo name it.
const VERSION: &[u8] = env!("CARGO_PKG_VERSION").as_bytes();

/// The commands answered, in guest-info's order; [`Command`] numbers them alike.
const COMMANDS: [&[u8]; 18] = [
    b"guest-sync-delimited",
    b"guest-sync",
    b"guest-ping",
    b"guest-info",
    b"guest-get-time",
    b"guest-set-time",
    b"guest-shutdown",
    b"guest-network-get-interfaces",
    b"guest-get-host-name",
    b"guest-get-osinfo",
    b"guest-get-timezone",
    b"guest-get-users",
    b"guest-get-fsinfo",
    b"guest-get-disks",
    b"guest-get-vcpus",
    b"guest-fsfreeze-status",
    b"guest-fsfreeze-freeze",
    b"guest-fsfreeze-thaw",
];

/// How the agent was asked to end the VM (guest-shutdown's `mode`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shutdown {
    PowerDown,
    Halt,
    Reboot,
}

/// One of the VM's addresses and its prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Address {
    V4([u8; 4], u8),
    V6([u8; 16], u8),
}

/// What the agent reports, from the rest of the VM.
#[derive(Clone, Copy, Default)]
pub struct Facts {
    /// The card's MAC, where there is a card.
    pub mac: Option<[u8; 6]>,
    /// Its addresses (DHCP's, link-local and SLAAC).
    pub addresses: [Option<Address>; 4],
    /// Nanoseconds since the Unix epoch.
    pub now_ns: u64,
}

/// The agent's state: the message being read and what the commands set.
pub struct Agent {
    message: [u8; MESSAGE],
    length: usize,
    /// Open objects and arrays; inside a string; after its backslash.
    depth: u32,
    string: bool,
    escape: bool,
    /// The message outgrew [`MESSAGE`]: read to its end, then refused.
    long: bool,
    /// Skipping a run of bytes that are no message (one error for the run).
    garbage: bool,
    frozen: bool,
    /// guest-set-time's correction to the VM's clock.
    offset_ns: i64,
}

/// What a message gives: a reply (possibly empty) and, for guest-shutdown, the end.
enum Outcome {
    Reply,
    Shutdown(Shutdown),
}

impl Default for Agent {
    fn default() -> Self {
        Agent::new()
    }
}

impl Agent {
    pub const fn new() -> Agent {
        Agent {
            message: [0; MESSAGE],
            length: 0,
            depth: 0,
            string: false,
            escape: false,
            long: false,
            garbage: false,
            frozen: false,
            offset_ns: 0,
        }
    }

    /// Forgets the message being read (a new client connected).
    pub fn reset(&mut self) {
        self.length = 0;
        self.depth = 0;
        self.string = false;
        self.escape = false;
        self.long = false;
        self.garbage = false;
    }

    /// Reads `bytes` up to and including the first that completes a reply (written into
    /// `reply`, which the caller sends before reading on); returns how many bytes it took, and
    /// the end guest-shutdown asked for.
    // Each of the agent's big functions stays out of line: inlined into the core's loop they
    // cost about 500 bytes more.
    #[inline(never)]
    pub fn read(
        &mut self,
        bytes: &[u8],
        facts: &Facts,
        reply: &mut Reply,
    ) -> (usize, Option<Shutdown>) {
        for (i, &byte) in bytes.iter().enumerate() {
            let shutdown = match self.take(byte, reply) {
                Step::More => continue,
                Step::Done => None,
                Step::Message => {
                    let outcome = self.answer(facts, reply);
                    self.reset();
                    match outcome {
                        Outcome::Reply => None,
                        Outcome::Shutdown(mode) => Some(mode),
                    }
                }
            };
            return (i + 1, shutdown);
        }
        (bytes.len(), None)
    }

    /// One byte of the stream.
    #[inline(never)]
    fn take(&mut self, byte: u8, reply: &mut Reply) -> Step {
        if byte == SENTINEL {
            // QEMU's lexer finds no token in it and says so; its JSON writer makes it U+FFFD.
            error(reply, b"GenericError").text(b"JSON parse error, stray '\\uFFFD'");
            return self.fail(reply);
        }
        if self.depth == 0 {
            if matches!(byte, b'{' | b'[') {
                self.garbage = false;
            } else if matches!(byte, b' ' | b'\t' | b'\r' | b'\n') {
                self.garbage = false;
                return Step::More;
            } else if self.garbage {
                return Step::More;
            } else {
                self.garbage = true;
                error(reply, b"GenericError").text(b"JSON parse error, stray '");
                if matches!(byte, 0x20..=0x7E) {
                    if matches!(byte, b'\'' | b'"' | b'\\') {
                        reply.push(b'\\');
                    }
                    reply.push(byte);
                } else {
                    reply.text(b"\\uFFFD");
                }
                reply.push(b'\'');
                close(reply);
                return Step::Done;
            }
        }
        match self.message.get_mut(self.length) {
            Some(slot) => {
                *slot = byte;
                self.length += 1;
            }
            None => self.long = true,
        }
        if self.string {
            if self.escape {
                self.escape = false;
            } else if byte == b'\\' {
                self.escape = true;
            } else if byte == b'"' {
                self.string = false;
            } else if byte < 0x20 {
                return self.malformed(reply);
            }
            return Step::More;
        }
        match byte {
            b'"' => self.string = true,
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth > json::MAX_DEPTH {
                    error(reply, b"GenericError").text(b"JSON nesting depth limit exceeded");
                    return self.fail(reply);
                }
            }
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    if self.long {
                        error(reply, b"GenericError").text(b"JSON token size limit exceeded");
                        return self.fail(reply);
                    }
                    return Step::Message;
                }
            }
            b'\n' => return self.malformed(reply),
            _ => {}
        }
        Step::More
    }

    /// Ends an error reply and drops the message being read.
    fn fail(&mut self, reply: &mut Reply) -> Step {
        close(reply);
        self.reset();
        Step::Done
    }

    /// A message that cannot be JSON: an error, and the message dropped.
    fn malformed(&mut self, reply: &mut Reply) -> Step {
        error(reply, b"GenericError").text(INVALID);
        self.fail(reply)
    }

    /// The reply to the message read.
    #[inline(never)]
    fn answer(&mut self, facts: &Facts, reply: &mut Reply) -> Outcome {
        let message = &self.message[..self.length];
        let request = match json::parse(message) {
            Parsed::Object(request) => request,
            Parsed::NotObject => {
                error(reply, b"GenericError").text(b"QMP input must be a JSON object");
                return close(reply);
            }
            Parsed::Invalid => {
                error(reply, b"GenericError").text(INVALID);
                return close(reply);
            }
        };
        let Some(name) = request.execute else {
            error(reply, b"GenericError").text(b"QMP input lacks member 'execute'");
            return close(reply);
        };
        let Some(command) = COMMANDS.iter().position(|&known| known == name) else {
            error(reply, b"CommandNotFound").text(b"The command ").text(name);
            reply.text(b" has not been found");
            return close(reply);
        };
        match command {
            SYNC_DELIMITED | SYNC => {
                let Some(id) = request.id.filter(|id| is_integer(id)) else {
                    error(reply, b"GenericError").text(b"Parameter 'id' is missing");
                    return close(reply);
                };
                if command == SYNC_DELIMITED {
                    reply.push(SENTINEL);
                }
                reply.text(b"{\"return\": ").text(id);
            }
            INFO => {
                reply.text(b"{\"return\": {\"version\": \"").text(VERSION);
                reply.text(b"\", \"supported_commands\": [");
                for (i, name) in COMMANDS.iter().enumerate() {
                    if i > 0 {
                        reply.text(b", ");
                    }
                    reply.text(b"{\"enabled\": true, \"name\": \"").text(name);
                    reply.text(b"\", \"success-response\": ");
                    reply.text(if i == SHUTDOWN { b"false}" } else { b"true}" });
                }
                reply.text(b"]}");
            }
            GET_TIME => {
                let now = facts.now_ns.wrapping_add_signed(self.offset_ns);
                reply.text(b"{\"return\": ").decimal(now);
            }
            SHUTDOWN => {
                let mode = match request.mode {
                    None | Some(b"powerdown") => Shutdown::PowerDown,
                    Some(b"halt") => Shutdown::Halt,
                    Some(b"reboot") => Shutdown::Reboot,
                    Some(_) => {
                        error(reply, b"GenericError")
                            .text(b"Parameter 'mode' does not accept value");
                        return close(reply);
                    }
                };
                return Outcome::Shutdown(mode);
            }
            INTERFACES => interfaces(facts, reply),
            HOST_NAME => {
                reply.text(b"{\"return\": {\"host-name\": \"");
                // The name the VM gives DHCP.
                match facts.mac {
                    Some(mac) => reply.text(super::text::host_name(mac).as_bytes()),
                    None => reply.text(b"vm512"),
                };
                reply.text(b"\"}");
            }
            FSFREEZE_STATUS => {
                reply.text(b"{\"return\": \"");
                reply.text(if self.frozen { b"frozen\"" } else { b"thawed\"" });
            }
            // The rest answer alike every time (after their effect, for these three).
            _ => {
                match command {
                    SET_TIME => {
                        self.offset_ns = match request.time.and_then(integer) {
                            Some(time) => time.wrapping_sub(facts.now_ns as i64),
                            None => 0,
                        };
                    }
                    // No file systems: none frozen or thawed, as qemu-ga counts them.
                    FSFREEZE_FREEZE | FSFREEZE_THAW => self.frozen = command == FSFREEZE_FREEZE,
                    _ => {}
                }
                reply.text(FIXED[command]);
            }
        }
        close(reply)
    }
}

/// What one byte did.
enum Step {
    /// Nothing to answer yet.
    More,
    /// A reply is written (an error); the message being read is dropped.
    Done,
    /// A message is complete: answer it.
    Message,
}

/// The replies that never change, by command (empty for the others), without their closing
/// brace and line break (`close` writes those).
const FIXED: [&[u8]; COMMANDS.len()] = {
    const EMPTY: &[u8] = b"{\"return\": {}";
    let mut fixed: [&[u8]; COMMANDS.len()] = [b""; COMMANDS.len()];
    fixed[PING] = EMPTY;
    fixed[SET_TIME] = EMPTY;
    fixed[OSINFO] = concat!(
        "{\"return\": {\"name\": \"512-byte VM\", \"kernel-release\": \"",
        env!("CARGO_PKG_VERSION"),
        "\", \"version\": \"",
        env!("CARGO_PKG_VERSION"),
        "\", \"pretty-name\": \"512-byte VM ",
        env!("CARGO_PKG_VERSION"),
        "\", \"version-id\": \"",
        env!("CARGO_PKG_VERSION"),
        "\", \"kernel-version\": \"",
        env!("CARGO_PKG_VERSION"),
        "\", \"machine\": \"x86_64\", \"id\": \"vm512\"}"
    )
    .as_bytes();
    fixed[TIMEZONE] = b"{\"return\": {\"zone\": \"UTC\", \"offset\": 0}";
    fixed[USERS] = b"{\"return\": []";
    fixed[FSINFO] = b"{\"return\": []";
    fixed[DISKS] = b"{\"return\": []";
    fixed[VCPUS] = b"{\"return\": [{\"online\": true, \"can-offline\": false, \"logical-id\": 0}]";
    fixed[FSFREEZE_FREEZE] = b"{\"return\": 0";
    fixed[FSFREEZE_THAW] = b"{\"return\": 0";
    fixed
};

// The commands' numbers in [`COMMANDS`].
const SYNC_DELIMITED: usize = 0;
const SYNC: usize = 1;
const PING: usize = 2;
const INFO: usize = 3;
const GET_TIME: usize = 4;
const SET_TIME: usize = 5;
const SHUTDOWN: usize = 6;
const INTERFACES: usize = 7;
const HOST_NAME: usize = 8;
const OSINFO: usize = 9;
const TIMEZONE: usize = 10;
const USERS: usize = 11;
const FSINFO: usize = 12;
const DISKS: usize = 13;
const VCPUS: usize = 14;
const FSFREEZE_STATUS: usize = 15;
const FSFREEZE_FREEZE: usize = 16;
const FSFREEZE_THAW: usize = 17;

/// Starts an error reply of `class`; its description follows.
fn error<'a>(reply: &'a mut Reply, class: &[u8]) -> &'a mut Reply {
    reply.text(b"{\"error\": {\"class\": \"").text(class).text(b"\", \"desc\": \"")
}

/// Ends a reply: closes an error's description and object, then the reply and its line.
fn close(reply: &mut Reply) -> Outcome {
    if reply.as_bytes().starts_with(b"{\"error\"") {
        reply.text(b"\"}");
    }
    reply.text(b"}\n");
    Outcome::Reply
}

/// The error for a message that is no JSON.
const INVALID: &[u8] = b"JSON parse error, invalid syntax";

/// Whether a JSON number is an integer: an optional `-`, then digits.
fn is_integer(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// A JSON integer's value (wrapping beyond 64 bits), or `None`.
fn integer(text: &[u8]) -> Option<i64> {
    if !is_integer(text) {
        return None;
    }
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let value = digits
        .iter()
        .fold(0i64, |value, &digit| value.wrapping_mul(10).wrapping_add(i64::from(digit - b'0')));
    Some(if text[0] == b'-' { value.wrapping_neg() } else { value })
}

/// guest-network-get-interfaces: `lo`, then the card (its MAC and addresses), as qemu-ga lists
/// them (no statistics).
fn interfaces(facts: &Facts, reply: &mut Reply) {
    reply.text(b"{\"return\": [{\"name\": \"lo\", \"ip-addresses\": [");
    reply.text(b"{\"ip-address-type\": \"ipv4\", \"ip-address\": \"127.0.0.1\", \"prefix\": 8}, ");
    reply.text(b"{\"ip-address-type\": \"ipv6\", \"ip-address\": \"::1\", \"prefix\": 128}], ");
    reply.text(b"\"hardware-address\": \"00:00:00:00:00:00\"}");
    if let Some(mac) = facts.mac {
        reply.text(b", {\"name\": \"eth0\", \"ip-addresses\": [");
        let mut first = true;
        for address in facts.addresses.iter().flatten() {
            if !first {
                reply.text(b", ");
            }
            first = false;
            reply.text(b"{\"ip-address-type\": \"ipv");
            let prefix = match *address {
                Address::V4(ip, prefix) => {
                    reply.text(b"4\", \"ip-address\": \"").ipv4(ip);
                    prefix
                }
                Address::V6(ip, prefix) => {
                    reply.text(b"6\", \"ip-address\": \"").ipv6(ip);
                    prefix
                }
            };
            reply.text(b"\", \"prefix\": ").decimal(prefix.into()).push(b'}');
        }
        reply.text(b"], \"hardware-address\": \"").mac(mac, Some(b':')).text(b"\"}");
    }
    reply.push(b']');
}
