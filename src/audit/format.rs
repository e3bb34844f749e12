//! The bytes of an audit file, shared by the writer and the verifier so
//! that both compute MACs, hashes and signatures over the same input.
//!
//! A file holds one line per item, each ending in `\n`:
//!
//! 1. a header: `{"audit":"pgveil/1","file":NAME,"prev_seq":N,"prev_mac":M}`,
//!    the chain head the file continues from (seq 0 and 32 zero bytes for
//!    the very first file);
//! 2. records: `{"seq":N,…record fields…,"mac":"BASE64"}`;
//! 3. a seal: `{"seal":SEAL,"sig":"BASE64"}`.
//!
//! A record's *canonical bytes* are its line without the newline and
//! without the final `,"mac":"…"` member: the text before `,"mac":"` followed
//! by `}`. Its MAC is HMAC-SHA256(audit MAC key, previous MAC (32 raw
//! bytes) || canonical bytes). Working on the text as written, not on a
//! re-serialization, the check does not depend on how records serialize.
//!
//! The signature is Ed25519 over the exact bytes of `SEAL` as written; the
//! seal's `sha256` is the hex SHA-256 of every byte of the file before the
//! seal line. MACs, signatures and the zero MAC are standard base64.
//!
//! **The `sm` suite.** Audit keys of the `sm` suite (a keyring made with
//! `keys init --suite sm`) write `"suite":"sm"` in the header and in the
//! seal, MAC records with HMAC-SM3 (the same layout: its output is 32 bytes
//! too), hash the file with SM3 into the seal's `sm3` member (instead of
//! `sha256`), and sign the seal with SM2 (`r || s`, 64 bytes, default user
//! id). Files of the `aes` suite say nothing of it, as before suites.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};
use std::{fmt, fs, io};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sm3::Sm3;

use super::line::StatementLine;
use super::record::{AuditRecord, Timestamp};
use crate::protect::crypto::{hmac_sha256, hmac_sm3, SealSigner, Suite};

/// The value of a header's `audit` member.
pub(super) const FORMAT: &str = "pgveil/1";

const MAC_MEMBER: &str = ",\"mac\":\"";
const SEAL_PREFIX: &str = "{\"seal\":";
const SIG_MEMBER: &str = ",\"sig\":\"";
const LINE_END: &str = "\"}";

/// The last record written: where the next one continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ChainHead {
    pub seq: u64,
    pub mac: [u8; 32],
}

impl ChainHead {
    /// Before the first record ever written.
    pub(super) const GENESIS: Self = Self {
        seq: 0,
        mac: [0; 32],
    };
}

/// A UTC calendar day as `YYYYMMDD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Day(u32);

impl Day {
    pub(super) fn of(time: SystemTime) -> Self {
        let text = humantime::format_rfc3339_seconds(time).to_string();
        let digits: String = text[..10].chars().filter(char::is_ascii_digit).collect();
        Self(digits.parse().expect("RFC 3339 starts with YYYY-MM-DD"))
    }

    /// The day `days` before `time`'s.
    pub(super) fn days_before(time: SystemTime, days: u32) -> Self {
        let back = Duration::from_secs(u64::from(days) * 86_400);
        Self::of(time.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH))
    }
}

/// An audit file's name: `audit-YYYYMMDD-NNNN.jsonl`, numbered from 1
/// within the day. Files sort by (day, number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct FileName {
    pub day: Day,
    pub number: u32,
}

impl FileName {
    /// Parses a directory entry; `None` for files that are not audit files.
    pub(super) fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
        let (day, number) = rest.split_once('-')?;
        let digits = |s: &str, min: usize| s.len() >= min && s.bytes().all(|b| b.is_ascii_digit());
        if day.len() != 8 || !digits(day, 8) || !digits(number, 4) {
            return None;
        }
        Some(Self {
            day: Day(day.parse().ok()?),
            number: number.parse().ok()?,
        })
    }

    /// The file to start on `day` after `last`; never sorts before `last`,
    /// even if the clock went back.
    pub(super) fn next(day: Day, last: Option<Self>) -> Self {
        match last {
            Some(last) if last.day >= day => Self {
                day: last.day,
                number: last.number + 1,
            },
            _ => Self { day, number: 1 },
        }
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit-{:08}-{:04}.jsonl", self.day.0, self.number)
    }
}

/// The suffix of a compressed file: `audit-YYYYMMDD-NNNN.jsonl.zst`.
const COMPRESSED: &str = ".zst";

impl FileName {
    /// The name of its compressed form.
    pub(super) fn compressed(&self) -> String {
        format!("{self}{COMPRESSED}")
    }
}

/// An audit file of a directory, in the forms it is stored in: as written
/// (`NAME.jsonl`), compressed once sealed (`NAME.jsonl.zst`), or both for a
/// moment while it is being compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AuditFile {
    pub name: FileName,
    pub plain: bool,
    pub compressed: bool,
}

impl AuditFile {
    /// The entry that holds its bytes: the file as written while it
    /// exists (a compressed copy next to it may be unfinished), else the
    /// compressed one.
    pub(super) fn entry(&self) -> String {
        if self.plain {
            self.name.to_string()
        } else {
            self.name.compressed()
        }
    }
}

/// The audit files in `dir`, oldest first. Other entries are ignored.
pub(super) fn list_files(dir: &Path) -> io::Result<Vec<AuditFile>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?.file_name();
        let Some(entry) = entry.to_str() else {
            continue;
        };
        let (plain, compressed) = match entry.strip_suffix(COMPRESSED) {
            Some(plain) => (plain, true),
            None => (entry, false),
        };
        let Some(name) = FileName::parse(plain) else {
            continue;
        };
        let file = files.entry(name).or_insert(AuditFile {
            name,
            plain: false,
            compressed: false,
        });
        file.plain |= !compressed;
        file.compressed |= compressed;
    }
    Ok(files.into_values().collect())
}

/// The first line of a file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Header {
    pub audit: String,
    pub file: String,
    pub prev_seq: u64,
    pub prev_mac: String,
    /// The suite of the file's MACs, hash and signature; absent for `aes`.
    #[serde(default, skip_serializing_if = "Suite::is_default")]
    pub suite: Suite,
}

impl Header {
    pub(super) fn new(file: FileName, prev: ChainHead, suite: Suite) -> Self {
        Self {
            audit: FORMAT.into(),
            file: file.to_string(),
            prev_seq: prev.seq,
            prev_mac: STANDARD.encode(prev.mac),
            suite,
        }
    }

    pub(super) fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a header serializes");
        line.push(b'\n');
        line
    }

    pub(super) fn prev(&self) -> Option<ChainHead> {
        Some(ChainHead {
            seq: self.prev_seq,
            mac: decode_mac(&self.prev_mac)?,
        })
    }
}

/// The last line of a file, signed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Seal {
    pub file: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_mac: String,
    /// Hex SHA-256 of the file's bytes before the seal line (the `aes`
    /// suite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Hex SM3 of the same bytes (the `sm` suite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm3: Option<String>,
    /// Sealed by recovery (a writer starting after a crash, or resuming
    /// after a failed write), cut after the last complete record, not by
    /// the writer as it closed the file.
    pub recovered: bool,
    pub sealed: Timestamp,
    /// The suite of the file's MACs, hash and signature; absent for `aes`.
    #[serde(default, skip_serializing_if = "Suite::is_default")]
    pub suite: Suite,
}

impl Seal {
    /// The seal line, signed with `key`.
    pub(super) fn line(&self, key: &SealSigner) -> Vec<u8> {
        let seal = serde_json::to_string(self).expect("a seal serializes");
        let sig = STANDARD.encode(key.sign(seal.as_bytes()));
        format!("{SEAL_PREFIX}{seal}{SIG_MEMBER}{sig}{LINE_END}\n").into_bytes()
    }
}

/// Whether a line (without its newline) is a seal line.
pub(super) fn is_seal(line: &[u8]) -> bool {
    line.starts_with(SEAL_PREFIX.as_bytes())
}

/// A seal line split into the signed text and the signature.
pub(super) struct SealLine<'a> {
    pub seal: &'a [u8],
    pub sig: Vec<u8>,
}

/// Splits a seal line (without its newline); `None` if it is malformed.
pub(super) fn split_seal(line: &[u8]) -> Option<SealLine<'_>> {
    let inner = line
        .strip_prefix(SEAL_PREFIX.as_bytes())?
        .strip_suffix(LINE_END.as_bytes())?;
    let at = rfind(inner, SIG_MEMBER.as_bytes())?;
    let sig = STANDARD.decode(&inner[at + SIG_MEMBER.len()..]).ok()?;
    Some(SealLine {
        seal: &inner[..at],
        sig,
    })
}

/// A record line split into its canonical bytes, seq and MAC.
pub(super) struct RecordLine {
    pub canonical: Vec<u8>,
    pub seq: u64,
    pub mac: [u8; 32],
    /// What a gap or unclean-shutdown record says is missing.
    pub notice: Option<Notice>,
}

/// What a record says about records missing before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Notice {
    /// A gap record: `lost` records were never written.
    Gap { lost: u64 },
    /// An unclean-shutdown record: the run before ended without sealing
    /// its log, its last record on disk being `previous_last_seq`.
    UncleanShutdown { previous_last_seq: u64 },
}

/// What verification reads of a record's fields.
#[derive(Deserialize)]
struct Checked<'a> {
    seq: u64,
    #[serde(borrow)]
    event: Option<&'a str>,
    lost: Option<u64>,
    last_seq: Option<u64>,
}

/// A record that can be queued: it writes its JSON object.
pub(super) trait Body {
    fn write(&self, out: &mut Vec<u8>);
}

impl Body for AuditRecord {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            AuditRecord::Statement(record) => record.line().write(out),
            other => serde_json::to_writer(out, other).expect("a record serializes"),
        }
    }
}

impl Body for StatementLine<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        StatementLine::write(self, out);
    }
}

/// Records serialized and not yet numbered: the JSON object of each (its
/// *body*, which has no `seq` yet), one per line. Sessions serialize their
/// records into the writer's queue themselves, so that only bytes cross
/// to the writer, and the writer numbers and MACs the bodies as they are.
#[derive(Debug, Default)]
pub(super) struct Bodies {
    bytes: Vec<u8>,
    count: usize,
}

impl Bodies {
    /// The bodies of `records`, in order.
    #[cfg(test)]
    pub(super) fn of(records: &[AuditRecord]) -> Self {
        let mut bodies = Self::default();
        records.iter().for_each(|record| bodies.push(record));
        bodies
    }

    /// Adds `body`. Compact JSON holds no newline (strings escape
    /// theirs), so one ends each body.
    pub(super) fn push(&mut self, body: &impl Body) {
        body.write(&mut self.bytes);
        self.bytes.push(b'\n');
        self.count += 1;
    }

    /// Moves the bodies of `other` after these; into an empty one (the
    /// usual case: a batch taken whole) without copying them.
    pub(super) fn append(&mut self, other: &mut Self) {
        if self.bytes.is_empty() {
            std::mem::swap(self, other);
            other.clear();
            return;
        }
        self.bytes.append(&mut other.bytes);
        self.count += std::mem::take(&mut other.count);
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }

    /// Removes the first `n` bodies (all of them if there are fewer).
    pub(super) fn drain_front(&mut self, n: usize) {
        let n = n.min(self.count);
        let end: usize = self.iter().take(n).map(|body| body.len() + 1).sum();
        self.bytes.drain(..end);
        self.count -= n;
    }

    /// Takes the bodies out, leaving room for as many bytes again: a queue
    /// refills to about its last size.
    pub(super) fn take(&mut self) -> Self {
        let room = self.bytes.len();
        std::mem::replace(
            self,
            Self {
                bytes: Vec::with_capacity(room),
                count: 0,
            },
        )
    }

    pub(super) fn len(&self) -> usize {
        self.count
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each body, without its newline.
    pub(super) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.split(|&b| b == b'\n').take(self.count)
    }
}

/// Writes over `line` the line of the record whose body is `body`,
/// numbered `prev.seq + 1`: `{"seq":N,` and the body's members; returns
/// the new chain head.
pub(super) fn record_line(
    line: &mut Vec<u8>,
    body: &[u8],
    prev: ChainHead,
    mac_key: &MacKey,
) -> ChainHead {
    use std::io::Write;
    let seq = prev.seq + 1;
    line.clear();
    write!(line, "{{\"seq\":{seq},").expect("writing to memory");
    // A body is an object with its `event` member at least.
    line.extend_from_slice(body.strip_prefix(b"{").expect("a body is a JSON object"));
    let mac = mac_key.mac(&prev.mac, line);
    line.pop();
    line.extend_from_slice(MAC_MEMBER.as_bytes());
    let encoded = line.len();
    line.resize(encoded + MAC_BASE64_LEN, 0);
    STANDARD
        .encode_slice(mac, &mut line[encoded..])
        .expect("room for a base64 MAC");
    line.extend_from_slice(LINE_END.as_bytes());
    line.push(b'\n');
    ChainHead { seq, mac }
}

/// The length of a 32-byte MAC in padded base64.
const MAC_BASE64_LEN: usize = 44;

/// Splits a record line (without its newline); `None` if it is malformed.
pub(super) fn split_record(line: &[u8]) -> Option<RecordLine> {
    let inner = line.strip_suffix(LINE_END.as_bytes())?;
    let at = rfind(inner, MAC_MEMBER.as_bytes())?;
    let mac = decode_mac(std::str::from_utf8(&inner[at + MAC_MEMBER.len()..]).ok()?)?;
    let mut canonical = inner[..at].to_vec();
    canonical.push(b'}');
    let Checked {
        seq,
        event,
        lost,
        last_seq,
    } = serde_json::from_slice(&canonical).ok()?;
    let notice = match event {
        Some("gap") => lost.map(|lost| Notice::Gap { lost }),
        Some("unclean_shutdown") => Some(Notice::UncleanShutdown {
            previous_last_seq: last_seq.unwrap_or(seq.saturating_sub(1)),
        }),
        _ => None,
    };
    Some(RecordLine {
        canonical,
        seq,
        mac,
        notice,
    })
}

/// The audit MAC key, keyed once: every record's MAC starts from a copy
/// of the keyed state (zeroized when dropped, as the original is).
pub(super) enum MacKey {
    Sha256(Hmac<Sha256>),
    Sm3(Hmac<Sm3>),
}

impl MacKey {
    /// HMAC-SHA256 (`aes`) or HMAC-SM3 (`sm`) keyed with `key`.
    pub(super) fn new(suite: Suite, key: &[u8; 32]) -> Self {
        match suite {
            Suite::Aes => Self::Sha256(hmac_sha256(key)),
            Suite::Sm => Self::Sm3(hmac_sm3(key)),
        }
    }

    /// HMAC(key, prev || canonical).
    pub(super) fn mac(&self, prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
        match self {
            Self::Sha256(key) => key
                .clone()
                .chain_update(prev)
                .chain_update(canonical)
                .finalize()
                .into_bytes()
                .into(),
            Self::Sm3(key) => key
                .clone()
                .chain_update(prev)
                .chain_update(canonical)
                .finalize()
                .into_bytes()
                .into(),
        }
    }
}

/// The hash of a file's bytes before its seal: SHA-256 (`aes`) or SM3
/// (`sm`).
#[derive(Clone)]
pub(super) enum FileHash {
    Sha256(Sha256),
    Sm3(Sm3),
}

impl FileHash {
    pub(super) fn new(suite: Suite) -> Self {
        match suite {
            Suite::Aes => Self::Sha256(Sha256::new()),
            Suite::Sm => Self::Sm3(Sm3::new()),
        }
    }

    /// The hash of `bytes`.
    pub(super) fn of(suite: Suite, bytes: &[u8]) -> Self {
        let mut hash = Self::new(suite);
        hash.update(bytes);
        hash
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(hash) => hash.update(bytes),
            Self::Sm3(hash) => hash.update(bytes),
        }
    }

    /// The seal's `sha256` and `sm3` members: the one of the hash's
    /// algorithm is set, in lowercase hex.
    pub(super) fn finish(self) -> (Option<String>, Option<String>) {
        match self {
            Self::Sha256(hash) => (Some(hex::encode(hash.finalize())), None),
            Self::Sm3(hash) => (None, Some(hex::encode(hash.finalize()))),
        }
    }
}

pub(super) fn encode_mac(mac: &[u8; 32]) -> String {
    STANDARD.encode(mac)
}

pub(super) fn decode_mac(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text).ok()?.try_into().ok()
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::tests::statement;
    use crate::audit::NormalizedStatement;

    fn key() -> MacKey {
        MacKey::new(Suite::Aes, &[7; 32])
    }

    fn body(record: &AuditRecord) -> Vec<u8> {
        Bodies::of(std::slice::from_ref(record))
            .iter()
            .next()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn record_lines_split_back_into_their_canonical_bytes() {
        let mut line = Vec::new();
        let head = record_line(&mut line, &body(&statement(1)), ChainHead::GENESIS, &key());
        let text = std::str::from_utf8(&line).unwrap();
        assert!(
            text.starts_with("{\"seq\":1,\"event\":\"statement\","),
            "{text}"
        );
        assert!(text.ends_with("\"}\n"));
        serde_json::from_str::<serde_json::Value>(text).unwrap();
        let split = split_record(&line[..line.len() - 1]).unwrap();
        assert_eq!(split.seq, 1);
        assert_eq!(split.mac, head.mac);
        assert_eq!(
            key().mac(&[0; 32], &split.canonical),
            head.mac,
            "the canonical bytes are what was MACed"
        );
        let value: serde_json::Value = serde_json::from_slice(&split.canonical).unwrap();
        assert!(value.get("mac").is_none());
    }

    #[test]
    fn bodies_keep_records_whole_and_in_order() {
        let mut multiline = statement(2);
        if let AuditRecord::Statement(record) = &mut multiline {
            record.statement = NormalizedStatement::from_normalized("SELECT\n$1".into());
        }
        let records = [statement(1), multiline, statement(3)];
        let mut bodies = Bodies::of(&records[..1]);
        bodies.append(&mut Bodies::of(&records[1..]));
        assert_eq!(bodies.len(), 3);
        let decoded: Vec<AuditRecord> = bodies
            .iter()
            .map(|body| serde_json::from_slice(body).unwrap())
            .collect();
        assert_eq!(decoded, records);
        bodies.drain_front(2);
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies.iter().next().unwrap(), body(&records[2]));
        bodies.drain_front(5);
        assert!(bodies.is_empty() && bodies.iter().next().is_none());
    }

    #[test]
    fn a_record_line_is_its_seq_its_record_and_its_mac() {
        let mut line = Vec::new();
        record_line(
            &mut line,
            &body(&statement(1)),
            ChainHead {
                seq: 41,
                mac: [0; 32],
            },
            &key(),
        );
        let mut value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let object = value.as_object_mut().unwrap();
        assert_eq!(object.remove("seq"), Some(42.into()));
        assert!(object.remove("mac").is_some());
        let record: AuditRecord = serde_json::from_value(value).unwrap();
        assert_eq!(record, statement(1));
    }

    #[test]
    fn record_macs_are_hmac_sha256_of_the_previous_mac_and_the_canonical_bytes() {
        let key = key();
        let independent = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]);
        for (prev, canonical) in [([0; 32], &b"{\"seq\":1}"[..]), ([9; 32], b"{}")] {
            let input = [&prev[..], canonical].concat();
            let expected = ring::hmac::sign(&independent, &input);
            // Twice: each MAC starts from the keyed state, not the last one.
            assert_eq!(key.mac(&prev, canonical), expected.as_ref());
            assert_eq!(key.mac(&prev, canonical), expected.as_ref());
        }
    }

    /// The `sm` suite's record MAC is HMAC-SM3, here computed from its
    /// definition (RFC 2104 over SM3, 64-byte blocks) with the `sm3` crate
    /// alone.
    #[test]
    fn sm_record_macs_are_hmac_sm3() {
        let key = MacKey::new(Suite::Sm, &[7; 32]);
        let (prev, canonical) = ([9u8; 32], &b"{\"seq\":1}"[..]);
        let pad = |byte: u8| {
            let mut block = [byte; 64];
            block.iter_mut().take(32).for_each(|b| *b ^= 7);
            block
        };
        let inner = Sm3::new()
            .chain_update(pad(0x36))
            .chain_update(prev)
            .chain_update(canonical)
            .finalize();
        let expected = Sm3::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        assert_eq!(key.mac(&prev, canonical)[..], expected[..]);
        assert_ne!(
            key.mac(&prev, canonical),
            MacKey::new(Suite::Aes, &[7; 32]).mac(&prev, canonical)
        );
    }

    #[test]
    fn the_mac_chains_on_the_previous_one() {
        let mut line = Vec::new();
        let first = record_line(&mut line, &body(&statement(1)), ChainHead::GENESIS, &key());
        let second = record_line(&mut line, &body(&statement(1)), first, &key());
        let other = record_line(
            &mut line,
            &body(&statement(1)),
            ChainHead {
                seq: 1,
                mac: [1; 32],
            },
            &key(),
        );
        assert_eq!(second.seq, 2);
        assert_ne!(second.mac, other.mac);
    }

    #[test]
    fn file_names_sort_and_continue() {
        let name = FileName::parse("audit-20261125-0012.jsonl").unwrap();
        assert_eq!(name.to_string(), "audit-20261125-0012.jsonl");
        for bad in [
            "audit-2026112-0001.jsonl",
            "audit-20261125-01.jsonl",
            "x.jsonl",
        ] {
            assert!(FileName::parse(bad).is_none(), "{bad}");
        }
        let day = Day(20261125);
        assert_eq!(
            FileName::next(day, None).to_string(),
            "audit-20261125-0001.jsonl"
        );
        assert_eq!(FileName::next(day, Some(name)).number, 13);
        assert_eq!(FileName::next(Day(20261124), Some(name)).number, 13);
        assert_eq!(FileName::next(Day(20261126), Some(name)).number, 1);
        assert!(FileName::parse("audit-20261125-10000.jsonl").unwrap() > name);
    }

    #[test]
    fn days_are_utc() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_115_199);
        assert_eq!(Day::of(time), Day(20251125));
        assert_eq!(Day::of(time + Duration::from_secs(1)), Day(20251126));
        assert_eq!(Day::days_before(time, 30), Day(20251026));
    }

    #[test]
    fn seals_split_into_signed_text_and_signature() {
        use crate::protect::crypto::SealVerifier;
        for suite in [Suite::Aes, Suite::Sm] {
            let secret = SealSigner::generate(suite).unwrap();
            let key = SealSigner::from_secret(suite, &secret).unwrap();
            let (sha256, sm3) = FileHash::of(suite, b"file").finish();
            let seal = Seal {
                file: "audit-20261125-0001.jsonl".into(),
                first_seq: 1,
                last_seq: 2,
                last_mac: encode_mac(&[3; 32]),
                sha256,
                sm3,
                recovered: false,
                sealed: Timestamp::now(),
                suite,
            };
            let line = seal.line(&key);
            assert!(is_seal(&line));
            let text = std::str::from_utf8(&line).unwrap();
            assert_eq!(
                text.contains("\"suite\":\"sm\""),
                suite == Suite::Sm,
                "{text}"
            );
            assert_eq!(text.contains("\"sm3\":"), suite == Suite::Sm, "{text}");
            assert_eq!(text.contains("\"sha256\":"), suite == Suite::Aes, "{text}");
            let split = split_seal(&line[..line.len() - 1]).unwrap();
            assert_eq!(split.seal, serde_json::to_vec(&seal).unwrap());
            let verifier = SealVerifier::from_raw(&key.public_key()).unwrap();
            assert!(verifier.verify(split.seal, &split.sig));
        }
    }

    #[test]
    fn file_hashes_are_sha256_and_sm3() {
        assert_eq!(
            FileHash::of(Suite::Sm, b"abc").finish(),
            (
                None,
                Some("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0".into())
            )
        );
        assert_eq!(
            FileHash::of(Suite::Aes, b"abc").finish().0.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
