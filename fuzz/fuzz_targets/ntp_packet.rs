//! NTP datagrams from the network, both halves: the seed's server answers a request, firstboot's
//! client reads a reply. Decoding then encoding gives the same 48 bytes, and an answer echoes
//! the request's transmit time as its origin.
#![no_main]

use cluster::ntp::{Mode, NtpTimestamp, Packet, Sample, ServerClock, ServerParams, answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    assert_eq!(packet.encode()[..], data[..48]);

    let clock = ServerClock {
        reference: NtpTimestamp(0xe000_0000_0000_0000),
        receive: NtpTimestamp(0xe000_0001_0000_0000),
        transmit: NtpTimestamp(0xe000_0001_0000_1000),
    };
    if let Ok(reply) = answer(data, &ServerParams::local(), clock) {
        let reply = Packet::decode(&reply).expect("an answer is a whole header");
        assert_eq!(reply.mode, Mode::Server);
        assert_eq!(reply.version, packet.version);
        assert_eq!(reply.origin, packet.transmit);
    }

    // The client half: a reply matched to the request it claims to answer, read at any time.
    let t4 = NtpTimestamp(packet.transmit.0.wrapping_add(data.len() as u64));
    if let Ok(sample) = Sample::from_reply(data, packet.origin, t4) {
        assert_eq!(sample.stratum, packet.stratum);
        assert!((1..16).contains(&sample.stratum));
    }
});
