//! SNTP (RFC 5905 / RFC 4330) packets: both the seed's server answer and firstboot's client check.
//!
//! Pure: the caller reads the clock and the socket and passes timestamps and bytes in.
//!
//! What the server refuses, decided once (each refusal is an [`NtpError`] variant):
//! - anything shorter than the 48-byte header, or longer than [`MAX_REQUEST_LEN`];
//! - versions other than 3 and 4: version 0 and 5..7 do not exist, and versions 1 and 2
//!   (RFC 1059/1119) are decades obsolete and laid out differently enough (v1 has no mode field)
//!   that answering them only widens what the seed reacts to;
//! - every mode but 3 (client): symmetric (1, 2), server (4) and broadcast (5) packets are not
//!   questions, and control (6) and private (7) are the classic amplification vectors;
//! - a request with a zero transmit timestamp, which no client could match an answer to;
//! - bytes after the header that are not well-formed RFC 7822 extension fields, and requests
//!   carrying a MAC: the seed holds no NTP keys, and an unauthenticated answer to an
//!   authenticated question would be dropped by the client anyway.
//!
//! An answer is always exactly 48 bytes, so never larger than the request it answers.

use std::fmt;
use std::time::Duration;

/// Length of the NTP header, and of every answer the seed sends.
pub const HEADER_LEN: usize = 48;

/// Longest request the server answers: the header and at most 1024 bytes of extension fields,
/// the bound chrony assumes of every packet it receives (`NTP_MAX_EXTENSIONS_LENGTH`). RFC 5905
/// and RFC 7822 set none; a server that reads into a buffer one byte longer knows a datagram it
/// filled was longer still. Lengths between 48 and this bound that are not a whole number of
/// 4-byte words are refused as malformed extension fields: the header, every extension field
/// and a MAC (20 or 24 bytes) are each whole words.
pub const MAX_REQUEST_LEN: usize = HEADER_LEN + 1024;

/// Seconds between the NTP epoch (1900-01-01) and the Unix epoch (1970-01-01).
pub const UNIX_EPOCH_NTP_SECS: u64 = 2_208_988_800;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// An RFC 5905 timestamp: 32.32 fixed-point seconds since 1900 (era-relative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// The zero timestamp, meaning "unknown" on the wire.
    pub const ZERO: NtpTimestamp = NtpTimestamp(0);

    /// From nanoseconds since the Unix epoch (negative before 1970).
    pub fn from_unix_nanos(nanos: i128) -> NtpTimestamp {
        let secs = nanos.div_euclid(NANOS_PER_SEC) + i128::from(UNIX_EPOCH_NTP_SECS);
        let sub = nanos.rem_euclid(NANOS_PER_SEC);
        // Rounded to the nearest 2^-32 s; cannot reach 2^32 since sub < 10^9.
        let frac = ((sub << 32) + NANOS_PER_SEC / 2) / NANOS_PER_SEC;
        // Seconds wrap modulo 2^32: the era is implicit on the wire.
        let secs = (secs as u64) & 0xFFFF_FFFF;
        NtpTimestamp((secs << 32) | frac as u64)
    }

    /// From a duration since the Unix epoch (what `SystemTime::duration_since(UNIX_EPOCH)` gives).
    pub fn from_unix_duration(since_epoch: Duration) -> NtpTimestamp {
        NtpTimestamp::from_unix_nanos(since_epoch.as_nanos() as i128)
    }

    /// Nanoseconds since the Unix epoch. The era is chosen as RFC 4330 section 3 says: a set top
    /// bit means 1968..2036 (era 0), a clear one means 2036..2104 (era 1).
    pub fn to_unix_nanos(self) -> i128 {
        let mut secs = i128::from(self.seconds());
        if secs & 0x8000_0000 == 0 {
            secs += 1 << 32;
        }
        let unix_secs = secs - i128::from(UNIX_EPOCH_NTP_SECS);
        let sub = (i128::from(self.fraction()) * NANOS_PER_SEC + (1 << 31)) >> 32;
        unix_secs * NANOS_PER_SEC + sub
    }

    /// The whole seconds part.
    pub fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The fraction part, in units of 2^-32 s.
    pub fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// `self - earlier` in nanoseconds, computed modulo 2^64 as RFC 5905 does, so it is right
    /// across an era boundary as long as the two are within 68 years.
    pub fn nanos_since(self, earlier: NtpTimestamp) -> i64 {
        let fixed = self.0.wrapping_sub(earlier.0) as i64;
        ((i128::from(fixed) * NANOS_PER_SEC) >> 32) as i64
    }

    fn read(bytes: &[u8]) -> NtpTimestamp {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[..8]);
        NtpTimestamp(u64::from_be_bytes(b))
    }
}

/// The leap indicator (LI) field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leap {
    NoWarning = 0,
    AddSecond = 1,
    DeleteSecond = 2,
    /// The sender's clock is not synchronised; clients refuse such a server.
    Unsynchronized = 3,
}

impl Leap {
    fn from_bits(bits: u8) -> Leap {
        match bits & 3 {
            0 => Leap::NoWarning,
            1 => Leap::AddSecond,
            2 => Leap::DeleteSecond,
            _ => Leap::Unsynchronized,
        }
    }
}

/// The association mode field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Reserved = 0,
    SymmetricActive = 1,
    SymmetricPassive = 2,
    Client = 3,
    Server = 4,
    Broadcast = 5,
    Control = 6,
    Private = 7,
}

impl Mode {
    fn from_bits(bits: u8) -> Mode {
        match bits & 7 {
            0 => Mode::Reserved,
            1 => Mode::SymmetricActive,
            2 => Mode::SymmetricPassive,
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            6 => Mode::Control,
            _ => Mode::Private,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({self:?})", *self as u8)
    }
}

/// Why a packet was refused, by the server ([`answer`]) or the client ([`Sample::from_reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NtpError {
    #[error("packet of {0} bytes is shorter than the 48-byte header")]
    TooShort(usize),
    #[error("request of {0} bytes is longer than the {max} bytes answered", max = MAX_REQUEST_LEN)]
    TooLong(usize),
    #[error("ntp version {0} is not answered (only 3 and 4)")]
    UnsupportedVersion(u8),
    #[error("mode {0} is not a client request")]
    NotClientRequest(Mode),
    #[error("request has a zero transmit timestamp")]
    NoTransmitTimestamp,
    #[error("malformed extension field at byte {0}")]
    MalformedExtension(usize),
    #[error("authenticated request (mac of {0} bytes) but the server holds no keys")]
    Authenticated(usize),
    #[error("mode {0} is not a server reply")]
    NotServerReply(Mode),
    #[error("reply's origin timestamp does not match the request's transmit timestamp")]
    OriginMismatch,
    #[error("server's clock is unsynchronised (leap indicator 3)")]
    Unsynchronized,
    #[error("kiss-o'-death from server: {0}")]
    KissOfDeath(String),
    #[error("server stratum {0} is not usable")]
    BadStratum(u8),
    #[error("reply's timestamps are inconsistent (zero, or transmit before receive)")]
    BadTimestamps,
}

/// The 48-byte NTP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub leap: Leap,
    pub version: u8,
    pub mode: Mode,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    /// Root delay, NTP short format (16.16 seconds).
    pub root_delay: u32,
    /// Root dispersion, NTP short format (16.16 seconds).
    pub root_dispersion: u32,
    pub reference_id: [u8; 4],
    pub reference_time: NtpTimestamp,
    pub origin: NtpTimestamp,
    pub receive: NtpTimestamp,
    pub transmit: NtpTimestamp,
}

impl Packet {
    /// Reads the header; bytes after it are left to the caller.
    pub fn decode(bytes: &[u8]) -> Result<Packet, NtpError> {
        if bytes.len() < HEADER_LEN {
            return Err(NtpError::TooShort(bytes.len()));
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Ok(Packet {
            leap: Leap::from_bits(bytes[0] >> 6),
            version: (bytes[0] >> 3) & 7,
            mode: Mode::from_bits(bytes[0]),
            stratum: bytes[1],
            poll: bytes[2] as i8,
            precision: bytes[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            reference_id: [bytes[12], bytes[13], bytes[14], bytes[15]],
            reference_time: NtpTimestamp::read(&bytes[16..]),
            origin: NtpTimestamp::read(&bytes[24..]),
            receive: NtpTimestamp::read(&bytes[32..]),
            transmit: NtpTimestamp::read(&bytes[40..]),
        })
    }

    /// Writes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = ((self.leap as u8) << 6) | ((self.version & 7) << 3) | self.mode as u8;
        out[1] = self.stratum;
        out[2] = self.poll as u8;
        out[3] = self.precision as u8;
        out[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        out[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        out[12..16].copy_from_slice(&self.reference_id);
        out[16..24].copy_from_slice(&self.reference_time.0.to_be_bytes());
        out[24..32].copy_from_slice(&self.origin.0.to_be_bytes());
        out[32..40].copy_from_slice(&self.receive.0.to_be_bytes());
        out[40..48].copy_from_slice(&self.transmit.0.to_be_bytes());
        out
    }
}

/// Checks what follows the header: nothing, or RFC 7822 extension fields (type, length ≥ 16 and
/// a multiple of 4, value), possibly ending in a MAC (key id + 16 or 20 byte digest).
fn check_trailer(packet: &[u8]) -> Result<(), NtpError> {
    let mut at = HEADER_LEN;
    // More than a MAC's worth left means an extension field starts here.
    while packet.len() - at > 24 {
        let len = usize::from(u16::from_be_bytes([packet[at + 2], packet[at + 3]]));
        if len < 16 || len % 4 != 0 || len > packet.len() - at {
            return Err(NtpError::MalformedExtension(at));
        }
        at += len;
    }
    match packet.len() - at {
        0 => Ok(()),
        mac @ (20 | 24) => Err(NtpError::Authenticated(mac)),
        _ => Err(NtpError::MalformedExtension(at)),
    }
}

/// Checks a datagram a client sent to the server; `Ok` is the request's header.
pub fn check_request(request: &[u8]) -> Result<Packet, NtpError> {
    if request.len() > MAX_REQUEST_LEN {
        return Err(NtpError::TooLong(request.len()));
    }
    let packet = Packet::decode(request)?;
    if !(3..=4).contains(&packet.version) {
        return Err(NtpError::UnsupportedVersion(packet.version));
    }
    if packet.mode != Mode::Client {
        return Err(NtpError::NotClientRequest(packet.mode));
    }
    check_trailer(request)?;
    if packet.transmit == NtpTimestamp::ZERO {
        return Err(NtpError::NoTransmitTimestamp);
    }
    Ok(packet)
}

/// What the server says about itself in every answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerParams {
    /// 1..=15; the seed uses [`LOCAL_STRATUM`].
    pub stratum: u8,
    /// For stratum ≥ 2 the IPv4 address of the upstream; for a local reference four ASCII bytes.
    pub reference_id: [u8; 4],
    /// log2 seconds of the clock's precision (-20 ≈ 1 µs).
    pub precision: i8,
    /// Root delay and dispersion, NTP short format (16.16 seconds).
    pub root_delay: u32,
    pub root_dispersion: u32,
}

/// The stratum the seed serves at, as chrony's `local stratum 8`: the seed is the LAN's
/// reference but not a real time source, so any true stratum 1..7 source a client also knows
/// wins over it, while 8 stays far enough from 16 (unsynchronised) for clients of clients.
pub const LOCAL_STRATUM: u8 = 8;

/// The reference id of a local, undisciplined clock (what ntpd and chrony show as `LOCL`).
pub const LOCAL_REFERENCE_ID: [u8; 4] = *b"LOCL";

impl ServerParams {
    /// The seed's answer parameters: stratum 8, `LOCL`, microsecond precision, and a root
    /// dispersion of about 1 ms so clients see a small but honest root distance.
    pub fn local() -> ServerParams {
        ServerParams {
            stratum: LOCAL_STRATUM,
            reference_id: LOCAL_REFERENCE_ID,
            precision: -20,
            root_delay: 0,
            root_dispersion: 0x0000_0042, // 66/65536 s ≈ 1 ms
        }
    }
}

/// The server's clock readings for one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerClock {
    /// When the server's clock was last set or corrected (never after `transmit`).
    pub reference: NtpTimestamp,
    /// When the request arrived.
    pub receive: NtpTimestamp,
    /// When the answer leaves.
    pub transmit: NtpTimestamp,
}

/// Answers a client request (mode 3) with a 48-byte server reply (mode 4) of the same version,
/// or says why the request gets no answer at all.
pub fn answer(
    request: &[u8],
    server: &ServerParams,
    clock: ServerClock,
) -> Result<[u8; HEADER_LEN], NtpError> {
    let asked = check_request(request)?;
    let reply = Packet {
        leap: Leap::NoWarning,
        version: asked.version,
        mode: Mode::Server,
        stratum: server.stratum,
        poll: asked.poll,
        precision: server.precision,
        root_delay: server.root_delay,
        root_dispersion: server.root_dispersion,
        reference_id: server.reference_id,
        reference_time: clock.reference,
        origin: asked.transmit,
        receive: clock.receive,
        transmit: clock.transmit,
    };
    Ok(reply.encode())
}

/// Writes the transmit timestamp into an encoded packet, so a server can read its clock for it
/// at the last moment before sending.
pub fn stamp_transmit(packet: &mut [u8; HEADER_LEN], transmit: NtpTimestamp) {
    packet[40..48].copy_from_slice(&transmit.0.to_be_bytes());
}

/// A client request (version 4, mode 3) carrying `transmit` (t1), which the caller keeps to
/// match the reply with [`Sample::from_reply`].
pub fn request(transmit: NtpTimestamp) -> [u8; HEADER_LEN] {
    Packet {
        leap: Leap::Unsynchronized,
        version: 4,
        mode: Mode::Client,
        stratum: 0,
        poll: 4,
        precision: -20,
        root_delay: 0,
        root_dispersion: 0,
        reference_id: [0; 4],
        reference_time: NtpTimestamp::ZERO,
        origin: NtpTimestamp::ZERO,
        receive: NtpTimestamp::ZERO,
        transmit,
    }
    .encode()
}

/// One exchange with a server: how far the local clock is off, and how long the round trip was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Server time minus local time, in nanoseconds: add it to the local clock to correct it.
    pub offset_nanos: i64,
    /// Round-trip delay minus the server's processing time, in nanoseconds.
    pub delay_nanos: i64,
    pub stratum: u8,
    pub reference_id: [u8; 4],
}

impl Sample {
    /// Checks a server's reply to a request sent at `t1` (local clock) and received at `t4`, and
    /// computes offset and delay by RFC 5905's formulas.
    pub fn from_reply(
        reply: &[u8],
        t1: NtpTimestamp,
        t4: NtpTimestamp,
    ) -> Result<Sample, NtpError> {
        let p = Packet::decode(reply)?;
        if !(1..=4).contains(&p.version) {
            return Err(NtpError::UnsupportedVersion(p.version));
        }
        if p.mode != Mode::Server {
            return Err(NtpError::NotServerReply(p.mode));
        }
        if p.origin != t1 {
            return Err(NtpError::OriginMismatch);
        }
        if p.stratum == 0 {
            return Err(NtpError::KissOfDeath(
                String::from_utf8_lossy(&p.reference_id).into_owned(),
            ));
        }
        if p.stratum >= 16 {
            return Err(NtpError::BadStratum(p.stratum));
        }
        if p.leap == Leap::Unsynchronized {
            return Err(NtpError::Unsynchronized);
        }
        let (t2, t3) = (p.receive, p.transmit);
        if t2 == NtpTimestamp::ZERO || t3 == NtpTimestamp::ZERO || t3.nanos_since(t2) < 0 {
            return Err(NtpError::BadTimestamps);
        }
        let offset = (i128::from(t2.nanos_since(t1)) + i128::from(t3.nanos_since(t4))) / 2;
        let delay = t4.nanos_since(t1) - t3.nanos_since(t2);
        Ok(Sample {
            offset_nanos: offset as i64,
            delay_nanos: delay,
            stratum: p.stratum,
            reference_id: p.reference_id,
        })
    }
}

/// The sample with the smallest delay, the one least disturbed by queueing (RFC 5905's clock
/// filter picks the same).
pub fn best_by_delay(samples: &[Sample]) -> Option<&Sample> {
    samples.iter().min_by_key(|s| s.delay_nanos)
}

#[cfg(test)]
mod tests;
