//! The QEMU guest agent (net family): what libvirt, KubeVirt, oVirt and Proxmox ask of a VM's
//! agent, answered by the VM itself. `protocol` is the agent (framing, commands, replies) and
//! `json` its reader, both pure and tested on the host; the channel they speak over is the
//! virtio-serial port `org.qemu.guest_agent.0`.

pub mod json;
pub mod protocol;

use crate::net::text;
