//! The guest agent's pure code on the host (`src/agent/protocol.rs`, `src/agent/json.rs`):
//! every command's reply byte for byte as qemu-ga writes it, the clients' exchanges (Proxmox's
//! pipeline, libvirt's sync after garbage), the bounds (a 1 MiB line, deep nesting, a flood),
//! and generated input, which must never panic, wedge or produce a reply that is not JSON.

#[path = "../../../src/agent/json.rs"]
mod json;
#[path = "../../../src/agent/protocol.rs"]
mod protocol;

use super::harness::Noise;
use super::web::text;
use protocol::{Address, Agent, Facts, Reply, Shutdown};

/// The VM as the tests describe it: a card, a lease, a link-local address, a time.
fn facts() -> Facts {
    let mut link_local = [0u8; 16];
    link_local[..2].copy_from_slice(&[0xFE, 0x80]);
    link_local[8..].copy_from_slice(&[0x50, 0x54, 0, 0xFF, 0xFE, 0x12, 0x34, 0x56]);
    Facts {
        mac: Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        addresses: [
            Some(Address::V4([10, 0, 2, 15], 24)),
            Some(Address::V6(link_local, 64)),
            None,
            None,
        ],
        now_ns: 1_764_680_000_123_456_789,
    }
}

/// Everything the agent writes for `input`, and the shutdown it was asked for.
fn exchange(agent: &mut Agent, input: &[u8], facts: &Facts) -> (Vec<u8>, Option<Shutdown>) {
    let mut output = Vec::new();
    let mut rest = input;
    let mut shutdown = None;
    while !rest.is_empty() {
        let mut reply = Reply::new();
        let (taken, asked) = agent.read(rest, facts, &mut reply);
        assert!(taken > 0 && taken <= rest.len());
        output.extend_from_slice(reply.as_bytes());
        rest = &rest[taken..];
        shutdown = shutdown.or(asked);
    }
    (output, shutdown)
}

fn ask(input: &str) -> String {
    let (output, _) = exchange(&mut Agent::new(), input.as_bytes(), &facts());
    String::from_utf8_lossy(&output).into_owned()
}

const STRAY_FF: &str =
    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n";

#[test]
fn each_command_is_answered_as_qemu_ga_answers_it() {
    let cases = [
        (r#"{"execute":"guest-ping"}"#, "{\"return\": {}}\n"),
        (
            r#"{"execute":"guest-sync","arguments":{"id":1234567890123}}"#,
            "{\"return\": 1234567890123}\n",
        ),
        (
            r#"{"execute": "guest-sync-delimited", "arguments": {"id": 7}}"#,
            "\u{FFFD}{\"return\": 7}\n",
        ),
        (r#"{"execute":"guest-get-time"}"#, "{\"return\": 1764680000123456789}\n"),
        (r#"{"execute":"guest-set-time"}"#, "{\"return\": {}}\n"),
        (
            r#"{"execute":"guest-get-timezone"}"#,
            "{\"return\": {\"zone\": \"UTC\", \"offset\": 0}}\n",
        ),
        (r#"{"execute":"guest-get-users"}"#, "{\"return\": []}\n"),
        (r#"{"execute":"guest-get-fsinfo"}"#, "{\"return\": []}\n"),
        (r#"{"execute":"guest-get-disks"}"#, "{\"return\": []}\n"),
        (
            r#"{"execute":"guest-get-host-name"}"#,
            "{\"return\": {\"host-name\": \"vm512-525400123456\"}}\n",
        ),
        (r#"{"execute":"guest-fsfreeze-status"}"#, "{\"return\": \"thawed\"}\n"),
        (r#"{"execute":"guest-fsfreeze-freeze"}"#, "{\"return\": 0}\n"),
        (r#"{"execute":"guest-fsfreeze-thaw"}"#, "{\"return\": 0}\n"),
        (
            r#"{"execute":"guest-get-vcpus"}"#,
            "{\"return\": [{\"online\": true, \"can-offline\": false, \"logical-id\": 0}]}\n",
        ),
        (
            r#"{"execute":"guest-exec","arguments":{"path":"/bin/true"}}"#,
            "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command guest-exec has not been found\"}}\n",
        ),
        (
            r#"{"execute":"guest-sync"}"#,
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'id' is missing\"}}\n",
        ),
        (
            r#"[1, 2]"#,
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input must be a JSON object\"}}\n",
        ),
        (
            r#"{"arguments":{}}"#,
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input lacks member 'execute'\"}}\n",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(ask(input), expected, "{input}");
    }
    let interfaces = ask(r#"{"execute":"guest-network-get-interfaces"}"#);
    assert_eq!(
        interfaces,
        "{\"return\": [{\"name\": \"lo\", \"ip-addresses\": [{\"ip-address-type\": \"ipv4\", \
         \"ip-address\": \"127.0.0.1\", \"prefix\": 8}, {\"ip-address-type\": \"ipv6\", \
         \"ip-address\": \"::1\", \"prefix\": 128}], \"hardware-address\": \"00:00:00:00:00:00\"}, \
         {\"name\": \"eth0\", \"ip-addresses\": [{\"ip-address-type\": \"ipv4\", \"ip-address\": \
         \"10.0.2.15\", \"prefix\": 24}, {\"ip-address-type\": \"ipv6\", \"ip-address\": \
         \"fe80::5054:ff:fe12:3456\", \"prefix\": 64}], \"hardware-address\": \
         \"52:54:00:12:34:56\"}]}\n"
    );
    let osinfo = ask(r#"{"execute":"guest-get-osinfo"}"#);
    assert!(osinfo.starts_with("{\"return\": {\"name\": \"512-byte VM\""), "{osinfo}");
    assert!(osinfo.contains(&format!("\"version\": \"{}\"", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn without_a_card_only_lo_is_listed() {
    let (output, _) = exchange(
        &mut Agent::new(),
        br#"{"execute":"guest-network-get-interfaces"}"#,
        &Facts::default(),
    );
    let output = String::from_utf8(output).unwrap();
    assert!(output.contains("\"name\": \"lo\""));
    assert!(!output.contains("eth0"), "{output}");
    assert!(output.ends_with("}]}\n"));
}

/// KubeVirt's `guest-info` check: these ten, each listed and enabled.
#[test]
fn guest_info_lists_every_command_enabled() {
    let info = ask(r#"{"execute":"guest-info"}"#);
    assert!(info.starts_with(&format!(
        "{{\"return\": {{\"version\": \"{}\", \"supported_commands\": [",
        env!("CARGO_PKG_VERSION")
    )));
    for name in super::agent::KUBEVIRT_REQUIRED {
        let entry = format!("{{\"enabled\": true, \"name\": \"{name}\", \"success-response\": ");
        assert!(info.contains(&entry), "{name} in {info}");
    }
    assert!(info.contains("\"name\": \"guest-shutdown\", \"success-response\": false}"));
    assert!(info.ends_with("]}}\n"));
    assert!(info.len() < protocol::REPLY, "{}", info.len());
    // Every command guest-info names is answered (none is CommandNotFound).
    for name in info.split("\"name\": \"").skip(1).map(|rest| &rest[..rest.find('"').unwrap()]) {
        if name == "guest-shutdown" {
            continue;
        }
        let reply = ask(&format!("{{\"execute\":\"{name}\",\"arguments\":{{\"id\":1}}}}"));
        assert!(!reply.contains("CommandNotFound") && !reply.contains("error"), "{name}: {reply}");
    }
}

#[test]
fn guest_shutdown_has_no_reply_and_names_its_mode() {
    let cases = [
        (r#"{"execute":"guest-shutdown"}"#, Shutdown::PowerDown),
        (r#"{"execute":"guest-shutdown","arguments":{"mode":"powerdown"}}"#, Shutdown::PowerDown),
        (r#"{"execute":"guest-shutdown","arguments":{"mode":"halt"}}"#, Shutdown::Halt),
        (r#"{"execute":"guest-shutdown","arguments":{"mode":"reboot"}}"#, Shutdown::Reboot),
    ];
    for (input, mode) in cases {
        let (output, shutdown) = exchange(&mut Agent::new(), input.as_bytes(), &facts());
        assert!(output.is_empty(), "{input}");
        assert_eq!(shutdown, Some(mode), "{input}");
    }
    let (output, shutdown) = exchange(
        &mut Agent::new(),
        br#"{"execute":"guest-shutdown","arguments":{"mode":"sideways"}}"#,
        &facts(),
    );
    assert_eq!(shutdown, None);
    assert!(String::from_utf8(output).unwrap().contains("GenericError"));
}

#[test]
fn fsfreeze_and_set_time_keep_their_state() {
    let mut agent = Agent::new();
    let facts = facts();
    let mut say =
        |input: &str| String::from_utf8(exchange(&mut agent, input.as_bytes(), &facts).0).unwrap();
    assert_eq!(say(r#"{"execute":"guest-fsfreeze-freeze"}"#), "{\"return\": 0}\n");
    assert_eq!(say(r#"{"execute":"guest-fsfreeze-status"}"#), "{\"return\": \"frozen\"}\n");
    assert_eq!(say(r#"{"execute":"guest-fsfreeze-thaw"}"#), "{\"return\": 0}\n");
    assert_eq!(say(r#"{"execute":"guest-fsfreeze-status"}"#), "{\"return\": \"thawed\"}\n");
    assert_eq!(
        say(r#"{"execute":"guest-set-time","arguments":{"time":1000}}"#),
        "{\"return\": {}}\n"
    );
    assert_eq!(say(r#"{"execute":"guest-get-time"}"#), "{\"return\": 1000}\n");
    assert_eq!(say(r#"{"execute":"guest-set-time"}"#), "{\"return\": {}}\n");
    assert_eq!(say(r#"{"execute":"guest-get-time"}"#), "{\"return\": 1764680000123456789}\n");
}

/// Proxmox writes 0xFF, guest-sync-delimited and the command in one write, and reads past its
/// own 0xFF: qemu-ga's error for the stray byte, then 0xFF and the sync reply, then the reply.
#[test]
fn proxmox_pipeline_gets_the_sentinel_then_both_replies() {
    let mut input = vec![0xFF];
    input.extend_from_slice(br#"{"execute":"guest-sync-delimited","arguments":{"id":31337}}"#);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(br#"{"execute":"guest-fsfreeze-freeze"}"#);
    input.extend_from_slice(b"\n");
    let (output, _) = exchange(&mut Agent::new(), &input, &facts());
    let mut expected = STRAY_FF.as_bytes().to_vec();
    expected.extend_from_slice(b"\xff{\"return\": 31337}\n{\"return\": 0}\n");
    assert_eq!(String::from_utf8_lossy(&output), String::from_utf8_lossy(&expected));
    assert_eq!(output, expected);
    // The 0xFF drops a message left unfinished by an earlier client, with no line break.
    let mut agent = Agent::new();
    assert!(exchange(&mut agent, br#"{"execute":"guest-pi"#, &facts()).0.is_empty());
    let (output, _) = exchange(
        &mut agent,
        b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":5}}",
        &facts(),
    );
    let mut expected = STRAY_FF.as_bytes().to_vec();
    expected.extend_from_slice(b"\xff{\"return\": 5}\n");
    assert_eq!(output, expected);
}

/// libvirt sends guest-sync with a fresh id and skips whatever comes before its reply.
#[test]
fn garbage_then_sync_still_syncs() {
    let mut agent = Agent::new();
    let (output, _) = exchange(
        &mut agent,
        b"garbage {\"execute\":\"guest-ping\" \"oops\"}\n\"unterminated\n{\"execute\":\"guest-sync\",\"arguments\":{\"id\":99}}\n",
        &facts(),
    );
    let output = String::from_utf8(output).unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.last(), Some(&"{\"return\": 99}"), "{output}");
    for line in &lines[..lines.len() - 1] {
        assert!(
            line.starts_with(
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error"
            ),
            "{line}"
        );
    }
    // An unfinished message ends at its line.
    let (output, _) =
        exchange(&mut agent, b"{\"execute\":\n{\"execute\":\"guest-ping\"}\n", &facts());
    let output = String::from_utf8(output).unwrap();
    assert!(output.ends_with("\"}}\n{\"return\": {}}\n"), "{output}");
}

#[test]
fn a_mebibyte_line_is_refused_and_the_next_command_answered() {
    let mut agent = Agent::new();
    let mut long = br#"{"execute":"guest-ping","arguments":{"pad":""#.to_vec();
    long.extend(std::iter::repeat_n(b'x', 1 << 20));
    long.extend_from_slice(b"\"}}\n{\"execute\":\"guest-ping\"}\n");
    let (output, _) = exchange(&mut agent, &long, &facts());
    assert_eq!(
        String::from_utf8(output).unwrap(),
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON token size limit exceeded\"}}\n\
         {\"return\": {}}\n"
    );
    let mut garbage = vec![b'y'; 1 << 20];
    garbage.extend_from_slice(b"\n{\"execute\":\"guest-ping\"}\n");
    let (output, _) = exchange(&mut agent, &garbage, &facts());
    let output = String::from_utf8(output).unwrap();
    assert_eq!(output.lines().count(), 2, "{output}");
    assert!(output.ends_with("{\"return\": {}}\n"));
    let deep = "[".repeat(40) + "\n{\"execute\":\"guest-ping\"}\n";
    let output = ask(&deep);
    assert!(output.starts_with("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON nesting depth limit exceeded\"}}\n"), "{output}");
    assert!(output.ends_with("{\"return\": {}}\n"));
}

#[test]
fn a_flood_of_commands_gets_a_reply_each() {
    let input = r#"{"execute":"guest-ping"}"#.repeat(10_000);
    let output = ask(&input);
    assert_eq!(output.lines().count(), 10_000);
    assert!(output.lines().all(|line| line == "{\"return\": {}}"));
}

#[test]
fn the_reader_takes_json_and_nothing_else() {
    let valid = [
        r#"{}"#,
        r#"{"a": [1, -2.5e3, true, false, null, {"b": "c\"\\"}], "d": {}}"#,
        " [ ] ",
        r#""\u00e9""#,
        "0",
    ];
    let invalid = [
        "",
        "{",
        "}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "[1,]",
        "tru",
        "nul",
        "{a:1}",
        "\"\n\"",
        "{} {}",
        "\"abc",
        "[1 2]",
    ];
    for text in valid {
        assert!(!matches!(json::parse(text.as_bytes()), json::Parsed::Invalid), "{text}");
    }
    for text in invalid {
        assert!(matches!(json::parse(text.as_bytes()), json::Parsed::Invalid), "{text:?}");
    }
    let json::Parsed::Object(request) = json::parse(
        br#"{"arguments": {"mode": "halt", "x": {"id": 5}, "id": 12, "time": -3}, "execute": "guest-shutdown"}"#,
    ) else {
        panic!()
    };
    assert_eq!(request.execute, Some(&b"guest-shutdown"[..]));
    assert_eq!(request.mode, Some(&b"halt"[..]));
    assert_eq!(request.id, Some(&b"12"[..]));
    assert_eq!(request.time, Some(&b"-3"[..]));
}

/// 20,000 generated inputs (mutated commands, random bytes, stray 0xFF, deep brackets): the
/// agent never panics, every reply it writes is one line of JSON (after an optional 0xFF), and
/// after a 0xFF and a line break it answers the next command.
#[test]
fn generated_input_never_crashes_or_wedges_the_agent() {
    let seeds: [&[u8]; 4] = [
        br#"{"execute":"guest-sync-delimited","arguments":{"id":123}}"#,
        br#"{"execute":"guest-network-get-interfaces"}"#,
        br#"{"execute":"guest-info"}"#,
        br#"{"execute":"guest-shutdown","arguments":{"mode":"reboot"}}"#,
    ];
    let mut noise = Noise(0xA6E7);
    let facts = facts();
    let mut agent = Agent::new();
    for round in 0..20_000 {
        let seed = seeds[round % seeds.len()];
        let input: Vec<u8> = match noise.below(4) {
            0 => noise.bytes(3000),
            1 => seed[..noise.below(seed.len() + 1)].to_vec(),
            2 => {
                let alphabet = b"{}[]\"\\:, \n\xffa1";
                (0..noise.below(200)).map(|_| alphabet[noise.below(alphabet.len())]).collect()
            }
            _ => noise.mutated(seed),
        };
        let (output, _) = exchange(&mut agent, &input, &facts);
        for line in output.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_prefix(b"\xff").unwrap_or(line);
            assert!(line.ends_with(b"\n"), "round {round}: {line:?}");
            assert!(
                matches!(json::parse(line), json::Parsed::Object(_)),
                "round {round}: {}",
                String::from_utf8_lossy(line)
            );
        }
        let (output, _) = exchange(&mut agent, b"\xff\n{\"execute\":\"guest-ping\"}", &facts);
        assert!(output.ends_with(b"{\"return\": {}}\n"), "round {round}");
    }
}
