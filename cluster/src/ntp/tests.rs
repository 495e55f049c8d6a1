//! Unit tests of the NTP packet code: timestamps, the server's refusals and the client's checks.

use super::*;

const SEC: i128 = 1_000_000_000;

fn ts(unix_nanos: i128) -> NtpTimestamp {
    NtpTimestamp::from_unix_nanos(unix_nanos)
}

/// A request like chrony's: version 4, mode 3, a random-looking transmit timestamp.
fn client_request(version: u8) -> [u8; 48] {
    let mut p = Packet::decode(&request(NtpTimestamp(0xE6C0_1234_5678_9ABC))).unwrap();
    p.version = version;
    p.encode()
}

fn clock() -> ServerClock {
    let now = 1_795_000_000 * SEC;
    ServerClock {
        reference: ts(now - SEC),
        receive: ts(now),
        transmit: ts(now + 20_000),
    }
}

fn with_mode(mode: u8) -> Vec<u8> {
    let mut b = client_request(4).to_vec();
    b[0] = (b[0] & !7) | mode;
    b
}

fn with_version(version: u8) -> Vec<u8> {
    let mut b = client_request(4).to_vec();
    b[0] = (b[0] & !0x38) | (version << 3);
    b
}

fn with_trailer(trailer: &[u8]) -> Vec<u8> {
    let mut b = client_request(4).to_vec();
    b.extend_from_slice(trailer);
    b
}

/// An RFC 7822 extension field of `len` bytes.
fn field(len: u16) -> Vec<u8> {
    let mut f = vec![0u8; usize::from(len)];
    f[0..2].copy_from_slice(&0x0104u16.to_be_bytes());
    f[2..4].copy_from_slice(&len.to_be_bytes());
    f
}

#[test]
fn timestamps_convert_to_and_from_unix_time() {
    assert_eq!(ts(0), NtpTimestamp(2_208_988_800 << 32));
    assert_eq!(ts(SEC / 2).fraction(), 0x8000_0000);
    assert_eq!(ts(-SEC).seconds(), 2_208_988_799);
    let d = NtpTimestamp::from_unix_duration(Duration::new(1_795_000_000, 123_456_789));
    assert_eq!(d.to_unix_nanos(), 1_795_000_000 * SEC + 123_456_789);
    // 2036-02-07T06:28:16Z starts NTP era 1: the seconds field wraps to 0.
    let era1 = 2_085_978_496 * SEC + 250_000_000;
    assert_eq!(ts(era1).seconds(), 0);
    assert_eq!(ts(era1).to_unix_nanos(), era1);
    // Differences are right across the era boundary.
    assert_eq!(ts(era1).nanos_since(ts(era1 - 3 * SEC)), 3_000_000_000);
    assert_eq!(ts(era1 - 3 * SEC).nanos_since(ts(era1)), -3_000_000_000);
}

#[test]
fn timestamps_keep_nanosecond_precision() {
    for n in [
        0,
        1,
        999_999_999,
        1_795_000_000 * SEC + 1,
        1_795_000_000 * SEC + 999_999_999,
    ] {
        assert_eq!(ts(n).to_unix_nanos(), n, "{n}");
    }
}

#[test]
fn header_encodes_and_decodes() {
    let p = Packet {
        leap: Leap::DeleteSecond,
        version: 3,
        mode: Mode::Broadcast,
        stratum: 2,
        poll: -3,
        precision: -24,
        root_delay: 0x0001_8000,
        root_dispersion: 7,
        reference_id: [10, 0, 0, 1],
        reference_time: NtpTimestamp(1),
        origin: NtpTimestamp(2),
        receive: NtpTimestamp(3),
        transmit: NtpTimestamp(u64::MAX),
    };
    let bytes = p.encode();
    assert_eq!(bytes[0], 0b10_011_101);
    assert_eq!(Packet::decode(&bytes).unwrap(), p);
}

#[test]
fn answers_a_client_with_mode_4_in_its_own_version() {
    for version in [3, 4] {
        let req = client_request(version);
        let reply = answer(&req, &ServerParams::local(), clock()).unwrap();
        let p = Packet::decode(&reply).unwrap();
        assert_eq!(
            (p.version, p.mode, p.leap),
            (version, Mode::Server, Leap::NoWarning)
        );
        assert_eq!((p.stratum, &p.reference_id), (8, b"LOCL"));
        assert_eq!(p.origin, Packet::decode(&req).unwrap().transmit);
        assert_eq!(
            (p.reference_time, p.receive, p.transmit),
            (clock().reference, clock().receive, clock().transmit)
        );
        assert_eq!(p.poll, 4);
    }
}

#[test]
fn transmit_is_stamped_last() {
    let mut reply = answer(&client_request(4), &ServerParams::local(), clock()).unwrap();
    stamp_transmit(&mut reply, ts(1_795_000_001 * SEC));
    let p = Packet::decode(&reply).unwrap();
    assert_eq!(p.transmit, ts(1_795_000_001 * SEC));
    assert_eq!(p.receive, clock().receive);
}

#[test]
fn answers_requests_with_well_formed_extension_fields_in_48_bytes() {
    for trailer in [
        field(28),
        [field(16), field(32)].concat(),
        field((MAX_REQUEST_LEN - HEADER_LEN) as u16),
    ] {
        let req = with_trailer(&trailer);
        let reply = answer(&req, &ServerParams::local(), clock()).unwrap();
        assert!(reply.len() <= req.len());
    }
}

#[test]
fn refuses_malformed_and_unwanted_packets_with_their_reason() {
    let zero_transmit = {
        let mut b = client_request(4);
        b[40..48].fill(0);
        b.to_vec()
    };
    let cases: Vec<(&str, Vec<u8>, NtpError)> = vec![
        ("empty", vec![], NtpError::TooShort(0)),
        (
            "47 bytes",
            client_request(4)[..47].to_vec(),
            NtpError::TooShort(47),
        ),
        (
            "version 0",
            with_version(0),
            NtpError::UnsupportedVersion(0),
        ),
        (
            "version 1",
            with_version(1),
            NtpError::UnsupportedVersion(1),
        ),
        (
            "version 2",
            with_version(2),
            NtpError::UnsupportedVersion(2),
        ),
        (
            "version 5",
            with_version(5),
            NtpError::UnsupportedVersion(5),
        ),
        (
            "version 7",
            with_version(7),
            NtpError::UnsupportedVersion(7),
        ),
        (
            "mode 0",
            with_mode(0),
            NtpError::NotClientRequest(Mode::Reserved),
        ),
        (
            "mode 1",
            with_mode(1),
            NtpError::NotClientRequest(Mode::SymmetricActive),
        ),
        (
            "mode 2",
            with_mode(2),
            NtpError::NotClientRequest(Mode::SymmetricPassive),
        ),
        (
            "mode 4",
            with_mode(4),
            NtpError::NotClientRequest(Mode::Server),
        ),
        (
            "mode 5",
            with_mode(5),
            NtpError::NotClientRequest(Mode::Broadcast),
        ),
        (
            "mode 6",
            with_mode(6),
            NtpError::NotClientRequest(Mode::Control),
        ),
        (
            "mode 7",
            with_mode(7),
            NtpError::NotClientRequest(Mode::Private),
        ),
        (
            "952 zero bytes after",
            with_trailer(&[0; 952]),
            NtpError::MalformedExtension(48),
        ),
        (
            "one byte after",
            with_trailer(&[0]),
            NtpError::MalformedExtension(48),
        ),
        (
            "field of 12",
            with_trailer(&field(12)[..])
                .into_iter()
                .chain([0; 16])
                .collect(),
            NtpError::MalformedExtension(48),
        ),
        (
            "field of 30",
            with_trailer(&field(30)),
            NtpError::MalformedExtension(48),
        ),
        (
            "field longer than packet",
            with_trailer(&field(64)[..40]),
            NtpError::MalformedExtension(48),
        ),
        (
            "field then 3 bytes",
            with_trailer(&[field(28), vec![1, 2, 3]].concat()),
            NtpError::MalformedExtension(76),
        ),
        (
            "md5 mac",
            with_trailer(&[7; 20]),
            NtpError::Authenticated(20),
        ),
        (
            "sha1 mac after field",
            with_trailer(&[field(28), vec![7; 24]].concat()),
            NtpError::Authenticated(24),
        ),
        (
            "zero transmit",
            zero_transmit,
            NtpError::NoTransmitTimestamp,
        ),
        (
            "one byte over the bound",
            with_trailer(&[field(1024), vec![0]].concat()),
            NtpError::TooLong(MAX_REQUEST_LEN + 1),
        ),
        (
            "4097 bytes",
            with_trailer(&[field(4048), vec![0]].concat()),
            NtpError::TooLong(4097),
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(
            answer(&bytes, &ServerParams::local(), clock()),
            Err(expected),
            "{name}"
        );
    }
}

#[test]
fn refusals_read_as_sentences() {
    assert_eq!(
        NtpError::NotClientRequest(Mode::Control).to_string(),
        "mode 6 (Control) is not a client request"
    );
    assert_eq!(
        NtpError::TooShort(12).to_string(),
        "packet of 12 bytes is shorter than the 48-byte header"
    );
    assert_eq!(
        NtpError::TooLong(4097).to_string(),
        "request of 4097 bytes is longer than the 1072 bytes answered"
    );
}

/// A server reply made by hand: t2 and t3 in server time.
fn reply_to(t1: NtpTimestamp, t2: NtpTimestamp, t3: NtpTimestamp) -> Packet {
    Packet {
        leap: Leap::NoWarning,
        version: 4,
        mode: Mode::Server,
        stratum: 8,
        poll: 4,
        precision: -20,
        root_delay: 0,
        root_dispersion: 0,
        reference_id: *b"LOCL",
        reference_time: t2,
        origin: t1,
        receive: t2,
        transmit: t3,
    }
}

#[test]
fn client_computes_offset_and_delay() {
    // Local clock 5 s behind; 1 ms each way on the wire; 1 ms in the server.
    let t1 = ts(100 * SEC);
    let t2 = ts(105 * SEC + 1_000_000);
    let t3 = ts(105 * SEC + 2_000_000);
    let t4 = ts(100 * SEC + 3_000_000);
    let s = Sample::from_reply(&reply_to(t1, t2, t3).encode(), t1, t4).unwrap();
    assert!(
        (s.offset_nanos - 5_000_000_000).abs() <= 2,
        "{}",
        s.offset_nanos
    );
    assert!((s.delay_nanos - 2_000_000).abs() <= 2, "{}", s.delay_nanos);
    assert_eq!((s.stratum, &s.reference_id), (8, b"LOCL"));
}

#[test]
fn client_and_server_agree() {
    let t1 = ts(1_795_000_000 * SEC);
    let reply = answer(
        &request(t1),
        &ServerParams::local(),
        ServerClock {
            reference: t1,
            receive: ts(1_795_000_000 * SEC - 40_000_000),
            transmit: ts(1_795_000_000 * SEC - 39_000_000),
        },
    )
    .unwrap();
    let s = Sample::from_reply(&reply, t1, ts(1_795_000_000 * SEC + 3_000_000)).unwrap();
    assert!(
        (s.offset_nanos + 41_000_000).abs() <= 2,
        "{}",
        s.offset_nanos
    );
    assert!((s.delay_nanos - 2_000_000).abs() <= 2, "{}", s.delay_nanos);
}

#[test]
fn client_refuses_bad_replies_with_their_reason() {
    let t1 = ts(100 * SEC);
    let t4 = ts(100 * SEC + 3_000_000);
    let good = reply_to(t1, ts(100 * SEC + 1_000_000), ts(100 * SEC + 2_000_000));
    let edit = |f: &dyn Fn(&mut Packet)| {
        let mut p = good;
        f(&mut p);
        p.encode().to_vec()
    };
    let cases: Vec<(&str, Vec<u8>, NtpError)> = vec![
        (
            "short",
            good.encode()[..40].to_vec(),
            NtpError::TooShort(40),
        ),
        (
            "version 0",
            edit(&|p| p.version = 0),
            NtpError::UnsupportedVersion(0),
        ),
        (
            "mode 3",
            edit(&|p| p.mode = Mode::Client),
            NtpError::NotServerReply(Mode::Client),
        ),
        (
            "mode 5",
            edit(&|p| p.mode = Mode::Broadcast),
            NtpError::NotServerReply(Mode::Broadcast),
        ),
        (
            "other origin",
            edit(&|p| p.origin = ts(99 * SEC)),
            NtpError::OriginMismatch,
        ),
        (
            "kiss-o'-death",
            edit(&|p| {
                p.stratum = 0;
                p.reference_id = *b"RATE";
            }),
            NtpError::KissOfDeath("RATE".into()),
        ),
        (
            "stratum 16",
            edit(&|p| p.stratum = 16),
            NtpError::BadStratum(16),
        ),
        (
            "leap 3",
            edit(&|p| p.leap = Leap::Unsynchronized),
            NtpError::Unsynchronized,
        ),
        (
            "zero receive",
            edit(&|p| p.receive = NtpTimestamp::ZERO),
            NtpError::BadTimestamps,
        ),
        (
            "transmit before receive",
            edit(&|p| p.transmit = ts(100 * SEC)),
            NtpError::BadTimestamps,
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(Sample::from_reply(&bytes, t1, t4), Err(expected), "{name}");
    }
}

#[test]
fn best_sample_is_the_one_with_least_delay() {
    let s = |offset_nanos, delay_nanos| Sample {
        offset_nanos,
        delay_nanos,
        stratum: 8,
        reference_id: *b"LOCL",
    };
    let samples = [s(10, 900), s(20, 300), s(30, 500)];
    assert_eq!(best_by_delay(&samples).unwrap().offset_nanos, 20);
    assert_eq!(best_by_delay(&[]), None);
}
