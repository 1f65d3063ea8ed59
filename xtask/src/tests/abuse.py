"""Bad input for the net VM, sent from inside a test's private network (run by abuse.rs with
`ip netns exec`, as root): raw frames on the bridge through an AF_PACKET socket, and a DHCP
server that lies, NAKs or says nothing. Every loop is bounded by a deadline or a count; the
script prints one summary line per attack and exits 0, or exits 2 with a reason. With
ABUSE_DEBUG set in its environment, it also prints what it saw of the VM and what it failed to
send.

    abuse.py frames BRIDGE SECONDS SEED MAC,IP[,IPV6] ...   random, truncated, bogus lengths
    abuse.py arp BRIDGE SECONDS SEED MAC,IP ...             an ARP storm
    abuse.py syn BRIDGE SECONDS SEED MAC,IP ...             SYNs from many forged peers
    abuse.py connect SECONDS COUNT IP ...                   connections opened and left idle
    abuse.py dhcp BRIDGE SECONDS MAC HOSTSFILE DNSMASQ_PID     silent, then lying and NAKing
"""

import os
import random
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_IP, ETH_ARP, ETH_IP6 = 0x0800, 0x0806, 0x86DD
BROADCAST = b"\xff" * 6
# A forged server and the peers forged for the floods: addresses of the bridge's subnet that
# dnsmasq never leases (its range is .50 to .149).
FAKE_SERVER_IP = "192.0.2.2"
FAKE_SERVER_MAC = bytes.fromhex("020000000002")
OFFERED = "192.0.2.222"


def fail(why):
    print("abuse: " + why, flush=True)
    sys.exit(2)


def mac(text):
    return bytes(int(part, 16) for part in text.split(":"))


def ip4(text):
    return socket.inet_aton(text)


def ip6(text):
    return socket.inet_pton(socket.AF_INET6, text)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ether(dst, src, kind, payload):
    return dst + src + struct.pack("!H", kind) + payload


def ipv4(src, dst, proto, payload, ttl=64, ident=0):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, ttl, proto, 0,
                         src, dst)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def udp(src, dst, sport, dport, payload):
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    total = checksum(pseudo + header + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, total) + payload


def tcp(src, dst, sport, dport, seq, flags, payload=b"", offset=5, options=b""):
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, offset << 4, flags, 8192, 0, 0)
    segment = header + options + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(segment))
    total = checksum(pseudo + segment)
    return segment[:16] + struct.pack("!H", total) + segment[18:]


def icmp_echo(ident, seq, data):
    message = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    return message[:2] + struct.pack("!H", checksum(message)) + message[4:]


def ipv6(src, dst, next_header, payload):
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 255, src, dst) + payload


def icmp6(src, dst, kind, code, body):
    message = struct.pack("!BBH", kind, code, 0) + body
    pseudo = src + dst + struct.pack("!I3xB", len(message), 58)
    return message[:2] + struct.pack("!H", checksum(pseudo + message)) + message[4:]


def arp(op, sender_mac, sender_ip, target_mac, target_ip):
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_IP, 6, 4, op, sender_mac, sender_ip, target_mac,
                       target_ip)


class Wire:
    """The bridge, raw: every frame on it, sent and received whole."""

    def __init__(self, bridge):
        self.socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.socket.bind((bridge, 0))
        # Promiscuous: unicast frames between the VM and a forged peer reach the bridge's own
        # port only so.
        index = socket.if_nametoindex(bridge)
        membership = struct.pack("iHH8s", index, 1, 0, b"")  # PACKET_MR_PROMISC
        self.socket.setsockopt(263, 1, membership)  # SOL_PACKET, PACKET_ADD_MEMBERSHIP
        self.mac = self.socket.getsockname()[4]
        self.sent = 0

    def send(self, frame):
        try:
            self.socket.send(frame)
            self.sent += 1
        except OSError as e:
            if os.environ.get("ABUSE_DEBUG"):
                print("send: %s" % e, flush=True)
            # A full queue (ENOBUFS) or a frame the kernel refuses: the flood goes on.
            pass

    def receive(self, until):
        """The next frame before `until`, or None."""
        left = until - time.monotonic()
        if left <= 0:
            return None
        self.socket.settimeout(left)
        try:
            return self.socket.recv(2048)
        except socket.timeout:
            return None


class Target:
    def __init__(self, text):
        parts = text.split(",")
        self.mac = mac(parts[0])
        self.ip = ip4(parts[1])
        self.ip6 = ip6(parts[2]) if len(parts) > 2 else None


def peer(rng):
    """A forged peer on the subnet: its MAC (locally administered) and an unleased address."""
    return bytes([2]) + rng.randbytes(5), ip4("192.0.2.%d" % rng.randrange(160, 250))


def valid_packets(rng, wire, target):
    """Well-formed frames of every kind the VM parses, addressed to it."""
    src_mac, src_ip = peer(rng)
    sport = rng.randrange(1024, 65535)
    packets = [
        ether(target.mac, src_mac, ETH_IP,
              ipv4(src_ip, target.ip, 1, icmp_echo(rng.randrange(65536), 1, rng.randbytes(56)))),
        ether(target.mac, src_mac, ETH_IP,
              ipv4(src_ip, target.ip, 6, tcp(src_ip, target.ip, sport, 80, rng.getrandbits(32),
                                             0x02))),
        ether(target.mac, src_mac, ETH_IP,
              ipv4(src_ip, target.ip, 6, tcp(src_ip, target.ip, sport, 80, rng.getrandbits(32),
                                             0x18, b"GET / HTTP/1.0\r\n\r\n"))),
        ether(target.mac, src_mac, ETH_IP,
              ipv4(src_ip, target.ip, 17, udp(src_ip, target.ip, 67, 68, dhcp_garbage(rng)))),
        ether(BROADCAST, src_mac, ETH_ARP,
              arp(1, src_mac, src_ip, b"\0" * 6, target.ip)),
    ]
    if target.ip6:
        src6 = ip6("2001:db8::%x" % rng.randrange(0x1000, 0xFFFF))
        packets.append(ether(target.mac, src_mac, ETH_IP6, ipv6(
            src6, target.ip6, 58, icmp6(src6, target.ip6, 128, 0, rng.randbytes(60)))))
        # Neighbour solicitation with an option whose length is random (0 is invalid).
        option = struct.pack("!BB", 1, rng.randrange(0, 4)) + src_mac
        body = b"\0" * 4 + target.ip6 + option
        packets.append(ether(target.mac, src_mac, ETH_IP6, ipv6(
            src6, target.ip6, 58, icmp6(src6, target.ip6, 135, 0, body))))
        # A router advertisement with garbage options.
        ra = struct.pack("!BBHII", 64, 0, 1800, 0, 0) + rng.randbytes(rng.randrange(0, 64))
        link6 = ip6("fe80::%x" % rng.randrange(1, 0xFFFF))
        packets.append(ether(target.mac, src_mac, ETH_IP6, ipv6(
            link6, ip6("ff02::1"), 58, icmp6(link6, ip6("ff02::1"), 134, 0, ra))))
    return packets


def dhcp_garbage(rng):
    """A BOOTREPLY with random options: lengths past the end, no end, zero lengths."""
    fixed = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, rng.getrandbits(32), 0, 0,
                        b"\0" * 4, ip4(OFFERED), b"\0" * 4, b"\0" * 4, rng.randbytes(16),
                        b"\0" * 64, b"\0" * 128)
    options = bytearray(b"\x63\x82\x53\x63")
    for _ in range(rng.randrange(0, 12)):
        code = rng.choice([1, 3, 6, 51, 53, 54, 58, 59, 15, 12, rng.randrange(256)])
        length = rng.choice([0, 1, 3, 4, 255, rng.randrange(256)])
        options += bytes([code, length]) + rng.randbytes(min(length, rng.randrange(0, 300)))
    if rng.random() < 0.5:
        options.append(255)
    return fixed + bytes(options)


def mangle(rng, frame):
    """`frame` with one of its length fields, or its length, made wrong."""
    frame = bytearray(frame)
    kind = struct.unpack("!H", frame[12:14])[0]
    choice = rng.randrange(6)
    if choice == 0:
        return bytes(frame[:rng.randrange(0, len(frame))])
    if kind == ETH_IP and len(frame) >= 34:
        if choice == 1:
            frame[16:18] = struct.pack("!H", rng.randrange(65536))  # total length
        elif choice == 2:
            frame[14] = 0x40 | rng.randrange(16)  # header length
        elif choice == 3:
            frame[20:22] = struct.pack("!H", rng.choice([0x2000, 0x1FFF, 0x3FFF]))  # fragments
        elif choice == 4 and frame[23] == 17 and len(frame) >= 42:
            frame[38:40] = struct.pack("!H", rng.randrange(65536))  # UDP length
        elif choice == 4 and frame[23] == 6 and len(frame) >= 47:
            frame[46] = rng.randrange(16) << 4  # TCP data offset
        else:
            frame[rng.randrange(14, len(frame))] = rng.randrange(256)
        # Keep the IPv4 checksum right, so that the layers above see the lie.
        header = (frame[14] & 15) * 4
        if 20 <= header <= len(frame) - 14:
            frame[24:26] = b"\0\0"
            frame[24:26] = struct.pack("!H", checksum(bytes(frame[14:14 + header])))
    elif kind == ETH_IP6 and len(frame) >= 54:
        if choice in (1, 2):
            frame[18:20] = struct.pack("!H", rng.randrange(65536))  # payload length
        else:
            frame[rng.randrange(14, len(frame))] = rng.randrange(256)
    elif kind == ETH_ARP and len(frame) >= 42:
        frame[18 + rng.randrange(2)] = rng.randrange(256)  # hardware / protocol lengths
    return bytes(frame)


def random_frame(rng, wire, target):
    dst = rng.choice([target.mac, BROADCAST, bytes([rng.randrange(256) & 0xFE]) + rng.randbytes(5)])
    kind = rng.choice([ETH_IP, ETH_IP6, ETH_ARP, rng.randrange(65536)])
    return ether(dst, wire.mac, kind, rng.randbytes(rng.randrange(0, 1501)))


def frames(bridge, seconds, seed, targets):
    wire, rng = Wire(bridge), random.Random(seed)
    deadline = time.monotonic() + seconds
    counts = {"random": 0, "mangled": 0, "valid": 0}
    while time.monotonic() < deadline:
        for target in targets:
            packets = valid_packets(rng, wire, target)
            for _ in range(4):
                wire.send(random_frame(rng, wire, target))
                counts["random"] += 1
            for packet in packets:
                wire.send(mangle(rng, packet))
                counts["mangled"] += 1
            wire.send(rng.choice(packets))
            counts["valid"] += 1
        # Some 5,000 frames a second: more than a TCG guest takes, less than would starve the
        # other tests sharing the host's cores.
        time.sleep(0.002)
    print("frames: %d random, %d mangled, %d valid; %d sent" % (
        counts["random"], counts["mangled"], counts["valid"], wire.sent), flush=True)


def flood(name, bridge, seconds, seed, targets, make):
    """For `seconds`, the frames `make(rng, target)` gives for each target in turn."""
    wire, rng = Wire(bridge), random.Random(seed)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for target in targets:
            for frame in make(rng, target):
                wire.send(frame)
        time.sleep(0.001)
    print("%s: %d frames" % (name, wire.sent), flush=True)


def arp_storm(bridge, seconds, seed, targets):
    def make(rng, target):
        src_mac, src_ip = peer(rng)
        # Requests for the VM from new peers, replies nobody asked for, gratuitous ARP.
        return [
            ether(BROADCAST, src_mac, ETH_ARP,
                  arp(rng.choice([1, 2]), src_mac, src_ip, b"\0" * 6, target.ip)),
            ether(target.mac, src_mac, ETH_ARP, arp(2, src_mac, src_ip, target.mac, target.ip)),
            ether(BROADCAST, src_mac, ETH_ARP, arp(1, src_mac, src_ip, b"\0" * 6, src_ip)),
        ]
    flood("arp", bridge, seconds, seed, targets, make)


def syn_flood(bridge, seconds, seed, targets):
    def make(rng, target):
        src_mac, src_ip = peer(rng)
        segment = tcp(src_ip, target.ip, rng.randrange(1024, 65535), 80, rng.getrandbits(32),
                      0x02)
        return [ether(target.mac, src_mac, ETH_IP, ipv4(src_ip, target.ip, 6, segment))]
    flood("syn", bridge, seconds, seed, targets, make)


def connect_flood(seconds, count, addresses):
    """`count` connections to each address's port 80 opened at once, never sent a byte, closed
    after `seconds`: a client that holds every socket."""
    held, refused = [], 0
    deadline = time.monotonic() + seconds
    for address in addresses:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect((address, 80))
            except BlockingIOError:
                pass
            except OSError:
                refused += 1
            held.append(s)
    time.sleep(max(0.0, deadline - time.monotonic()))
    for s in held:
        s.close()
    print("connect: %d opened, %d refused at once" % (len(held), refused), flush=True)


def dhcp_message(kind, xid, chaddr, options=b"", yiaddr=OFFERED):
    fixed = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4,
                        ip4(yiaddr), b"\0" * 4, b"\0" * 4, chaddr.ljust(16, b"\0"), b"\0" * 64,
                        b"\0" * 128)
    return fixed + b"\x63\x82\x53\x63" + bytes([53, 1, kind]) + options


def lies(rng, xid, chaddr):
    """Offers a client must not take: every option's length wrong in its own way."""
    server = bytes([54, 4]) + ip4(FAKE_SERVER_IP)
    mask = bytes([1, 4]) + ip4("255.255.255.0")
    return [
        dhcp_message(2, xid, chaddr, server + bytes([1, 200]) + b"\xff" * 3),  # past the end
        dhcp_message(2, xid, chaddr, server + mask + bytes([51, 0]) + b"\xff"),  # lease time: 0 B
        dhcp_message(2, xid, chaddr, server + mask + bytes([3, 3]) + b"\1\2\3\xff"),  # router: 3 B
        dhcp_message(2, xid, chaddr, server + mask + bytes([6, 255]) + rng.randbytes(255)),
        dhcp_message(2, xid, chaddr, bytes([54, 2]) + b"\1\2" + mask + b"\xff"),  # short server
        dhcp_message(2, xid, chaddr, server + mask + b"\0" * 900),  # pads, no end
        dhcp_message(2, xid, chaddr, server + mask + b"\xff", yiaddr="255.255.255.255"),
        dhcp_message(2, xid, chaddr, server + mask + b"\xff", yiaddr="0.0.0.0"),
        dhcp_message(2, xid, chaddr, b"".join(bytes([1, 4]) + rng.randbytes(4)
                                              for _ in range(150)) + b"\xff"),  # 150 masks
        dhcp_message(2, xid, chaddr, bytes([53, 1, 5]) + server + b"\xff"),  # two types
        dhcp_message(2, xid ^ 1, chaddr, server + mask + b"\xff"),  # someone else's
    ]


def dhcp_server(bridge, seconds, vm_mac, hostsfile, dnsmasq):
    """DHCP as a VM might meet it on a bad day, to the VM at `vm_mac` (whom dnsmasq ignores
    until the end):

    1. silence: the DISCOVERs are only watched, their intervals printed (the backoff);
    2. lies: each DISCOVER gets every offer in `lies`, then one valid offer from a forged
       server, whose REQUEST is NAKed; three rounds;
    3. dnsmasq takes over (its hosts file emptied, SIGHUP) before the third NAK, after which
       the VM discovers again and gets a real lease."""
    wire, rng = Wire(bridge), random.Random(1)
    vm = mac(vm_mac)
    print("dhcp: listening", flush=True)
    start = time.monotonic()
    deadline = start + seconds
    discovers, naks = [], 0
    while naks < 3:
        frame = wire.receive(deadline)
        if frame is None:
            fail("dhcp: %d DISCOVERs %s, %d NAKs, then nothing before the deadline" % (
                len(discovers), intervals(discovers), naks))
        message = client_message(frame, vm)
        if message is None:
            if frame[6:12] == vm and os.environ.get("ABUSE_DEBUG"):
                print("dhcp: other frame from the VM: %s" % frame[:64].hex(), flush=True)
            continue
        kind, xid = message
        now = time.monotonic()
        if os.environ.get("ABUSE_DEBUG"):
            print("dhcp: kind %d from the VM to %s" % (kind, frame[:6].hex()), flush=True)
        if kind == 1:
            discovers.append(now)
            silent = len(discovers) < 4
            print("dhcp: DISCOVER at %.2f s%s" % (now - start, " (silent)" if silent else ""),
                  flush=True)
            if silent:
                continue
            for offer in lies(rng, xid, vm):
                send_dhcp(wire, offer)
            server = bytes([54, 4]) + ip4(FAKE_SERVER_IP)
            options = server + bytes([1, 4]) + ip4("255.255.255.0") + bytes([51, 4]) + \
                struct.pack("!I", 120) + b"\xff"
            send_dhcp(wire, dhcp_message(2, xid, vm, options))
            if os.environ.get("ABUSE_DEBUG"):
                print("dhcp: %d frames sent so far" % wire.sent, flush=True)
        elif kind == 3 and len(discovers) >= 4:
            naks += 1
            if naks == 3:
                open(hostsfile, "w").close()
                os.kill(dnsmasq, signal.SIGHUP)
                time.sleep(0.5)
            server = bytes([54, 4]) + ip4(FAKE_SERVER_IP)
            send_dhcp(wire, dhcp_message(6, xid, vm, server + b"\xff", yiaddr="0.0.0.0"))
            print("dhcp: REQUEST NAKed at %.2f s" % (now - start), flush=True)
    print("dhcp: intervals %s" % intervals(discovers[:4]), flush=True)


def intervals(times):
    return "[" + ", ".join("%.2f" % (b - a) for a, b in zip(times, times[1:])) + "]"


def client_message(frame, vm):
    """(message type, xid) of a DHCP message from `vm` in `frame`, or None."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[6:12] != vm:
        return None
    if struct.unpack("!H", frame[12:14])[0] != ETH_IP or frame[23] != 17:
        return None
    header = (frame[14] & 15) * 4
    udp_at = 14 + header
    if struct.unpack("!H", frame[udp_at + 2:udp_at + 4])[0] != 67:
        return None
    bootp = frame[udp_at + 8:]
    if len(bootp) < 240 or bootp[236:240] != b"\x63\x82\x53\x63":
        return None
    xid = struct.unpack("!I", bootp[4:8])[0]
    i = 240
    while i + 1 < len(bootp) and bootp[i] != 255:
        if bootp[i] == 0:
            i += 1
            continue
        code, length = bootp[i], bootp[i + 1]
        if code == 53 and length == 1 and i + 2 < len(bootp):
            return bootp[i + 2], xid
        i += 2 + length
    return None


def send_dhcp(wire, message):
    src = ip4(FAKE_SERVER_IP)
    dst = ip4("255.255.255.255")
    wire.send(ether(BROADCAST, FAKE_SERVER_MAC, ETH_IP,
                    ipv4(src, dst, 17, udp(src, dst, 67, 68, message))))


def main(argv):
    if len(argv) < 2:
        fail(__doc__)
    verb, args = argv[1], argv[2:]
    if verb in ("frames", "arp", "syn") and len(args) >= 4:
        attack = {"frames": frames, "arp": arp_storm, "syn": syn_flood}[verb]
        attack(args[0], float(args[1]), int(args[2]), [Target(t) for t in args[3:]])
    elif verb == "connect" and len(args) >= 3:
        connect_flood(float(args[0]), int(args[1]), args[2:])
    elif verb == "dhcp" and len(args) == 5:
        dhcp_server(args[0], float(args[1]), args[2], args[3], int(args[4]))
    else:
        fail("bad arguments: %s\n%s" % (" ".join(argv[1:]), __doc__))


if __name__ == "__main__":
    main(sys.argv)
