//! Client→server message streams through the [`Framer`] and the client
//! tap ([`ClientTap`], built as `session.rs` builds it, with the sample
//! policy), in reads cut anywhere:
//!
//! - any bytes, and valid streams with corrupted lengths, truncated
//!   bodies, bad counts, huge declared lengths: no panic; pgveil sends
//!   only whole, well-framed messages, and stops exactly where
//!   PostgreSQL's framing rules say the input is broken;
//! - streams whose values marked `SECRET` go only to protected columns
//!   (Query and Parse texts, Bind values, COPY data), with their bodies
//!   corrupted: a model of how PostgreSQL reads what pgveil sends on
//!   ([`Server`]) never runs a marked value, whatever pgveil made of the
//!   messages.

use std::collections::HashMap;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::select;

use super::{config, slot};
use crate::proxy::relay::split;
use crate::session::catalog::Catalog;
use crate::session::ledger::{Ledger, Values};
use crate::session::protection::Adopted;
use crate::session::state::SessionState;
use crate::sql::{ColumnType, ServerObjects};
use crate::text::encoding::ClientEncoding;
use crate::wire::frame::check_header;
use crate::wire::{Framer, Side};
use crate::write::tap::ClientTap;

/// The sample CRM's `customers`, as the catalog reads it at login.
fn catalog() -> Catalog {
    let columns = [
        ("id", ColumnType::Other("bigint".into())),
        ("full_name", ColumnType::Text),
        ("email", ColumnType::Text),
        ("phone", ColumnType::Text),
        ("national_id", ColumnType::Text),
        ("address", ColumnType::Text),
        ("segment", ColumnType::Text),
        ("created_at", ColumnType::Other("timestamptz".into())),
    ];
    Catalog {
        roles: vec!["crm_app".into()],
        columns: HashMap::from([(
            ("public".into(), "customers".into()),
            columns.map(|(c, t)| (c.to_owned(), t)).to_vec(),
        )]),
        attributes: HashMap::new(),
        guards: Vec::new(),
        objects: ServerObjects::default(),
        declared: Values::default(),
    }
}

/// What the client tap sends on for `input`, read in pieces of the
/// sizes `reads` (cycled), and whether it stopped on a framing error.
fn relay(input: &[u8], reads: &[usize]) -> (Vec<u8>, bool) {
    let catalog = catalog();
    let shared = SessionState::new(
        ClientEncoding::default(),
        true,
        Ledger::new(Values::default()),
    );
    let adopted = Adopted::first(slot());
    let mut tap = ClientTap::new(adopted.as_ref(), slot(), &shared, &catalog, None);
    let mut framer = Framer::new(Side::Frontend);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut sent = Vec::new();
    let mut at = 0;
    for &n in reads.iter().cycle() {
        let end = (at + n.max(1)).min(input.len());
        buf.extend_from_slice(&input[at..end]);
        at = end;
        let result = split(&mut framer, &mut buf, &mut tap, &mut out);
        for chunk in out.drain(..) {
            sent.extend_from_slice(&chunk);
        }
        if result.is_err() {
            return (sent, true);
        }
        if at == input.len() {
            break;
        }
    }
    (sent, false)
}

/// The whole messages of `bytes` by PostgreSQL's framing rules, and
/// whether a header is broken (the server ends the session there).
fn frames(bytes: &[u8]) -> (Vec<(u8, &[u8])>, bool) {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let tag = rest[0];
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let limit = match tag {
            b'Q' | b'P' | b'B' | b'F' | b'd' => 0x3fff_fffe,
            b'p' => 65_535,
            b'S' | b'H' | b'X' | b'C' | b'D' | b'E' | b'c' | b'f' => 10_000,
            _ => return (frames, true),
        };
        if !(4..=limit).contains(&len) {
            return (frames, true);
        }
        let total = len as usize + 1;
        if rest.len() < total {
            break;
        }
        frames.push((tag, &rest[5..total]));
        rest = &rest[total..];
    }
    (frames, false)
}

/// Reads a message body as PostgreSQL's `pq_getmsg*` functions do.
struct Body<'b>(&'b [u8]);

impl<'b> Body<'b> {
    fn bytes(&mut self, n: usize) -> Option<&'b [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    /// `pq_getmsgint(msg, 2)`: unsigned.
    fn u16(&mut self) -> Option<usize> {
        self.bytes(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn i32(&mut self) -> Option<i32> {
        self.bytes(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Option<&'b [u8]> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let s = &self.0[..end];
        self.0 = &self.0[end + 1..];
        Some(s)
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// A statement the generated streams prepare: its text, its parameter
/// count and the parameters that go to protected columns.
struct Template {
    sql: &'static str,
    params: usize,
    protected: &'static [usize],
}

const TEMPLATES: &[Template] = &[
    Template {
        sql: "INSERT INTO customers (email, segment) VALUES ($1, $2)",
        params: 2,
        protected: &[1],
    },
    Template {
        sql: "INSERT INTO customers (segment, full_name, phone) VALUES ($1, $2, $3)",
        params: 3,
        protected: &[2, 3],
    },
    Template {
        sql: "SELECT id FROM customers WHERE email = $1",
        params: 1,
        protected: &[1],
    },
    Template {
        sql: "UPDATE customers SET address = $2 WHERE phone = $1",
        params: 2,
        protected: &[1, 2],
    },
    Template {
        sql: "SELECT id FROM customers WHERE email = ANY($1)",
        params: 1,
        protected: &[1],
    },
    Template {
        sql: "SELECT $1::text",
        params: 1,
        protected: &[],
    },
    Template {
        sql: r"INSERT INTO customers (email, segment) VALUES ('SECRET-p', E'a\\b')",
        params: 0,
        protected: &[],
    },
];

/// Simple-protocol texts with marked values where protected columns
/// take them.
const QUERIES: &[&str] = &[
    "INSERT INTO customers (email, phone, segment) VALUES ('SECRET-q1', E'SECRET-q2\\\\', 'x')",
    "UPDATE customers SET address = $$SECRET-q3$$ WHERE email = 'SECRET-q4'",
    r"SELECT id FROM customers WHERE email IN ('SECRET-q5', U&'SECRET-q6\00e9')",
    r"INSERT INTO customers (email, segment) VALUES ('SECRET-q7\', 'a\')",
    "SELECT 1",
    "SET pgveil.purpose = 'kyc'",
    "COPY customers (email, segment) FROM STDIN",
];

/// What PostgreSQL does with the messages pgveil sends: which statements
/// exist, whether it skips to Sync after an error, whether a COPY is
/// reading data. It runs a marked value only if one is still in a text,
/// a protected parameter or COPY data it accepts.
#[derive(Default)]
struct Server {
    /// Prepared statements: parameter count and protected parameters.
    statements: HashMap<Vec<u8>, (usize, &'static [usize])>,
    skipping: bool,
    copying: bool,
}

impl Server {
    /// Reads `frames`; the first marked value run, if any.
    fn run(&mut self, frames: &[(u8, &[u8])]) -> Result<(), String> {
        for &(tag, body) in frames {
            if self.copying {
                match tag {
                    b'd' if contains_secret(body) => return Err(leak("COPY data", body)),
                    b'd' | b'H' | b'S' => {}
                    _ => self.copying = false,
                }
                continue;
            }
            if tag == b'S' {
                self.skipping = false;
                continue;
            }
            if self.skipping {
                continue;
            }
            let ok = match tag {
                b'Q' => self.query(body)?,
                b'P' => self.parse(body)?,
                b'B' => self.bind(body)?,
                b'C' => self.close(body),
                b'X' => return Ok(()),
                _ => Some(()),
            };
            if ok.is_none() && tag != b'Q' {
                self.skipping = true;
            }
        }
        Ok(())
    }

    fn query(&mut self, body: &[u8]) -> Result<Option<()>, String> {
        let mut body = Body(body);
        let Some(text) = body.string().filter(|_| body.end().is_some()) else {
            return Ok(None);
        };
        if contains_secret(text) {
            return Err(leak("Query", text));
        }
        self.copying = text.starts_with(b"COPY customers");
        Ok(Some(()))
    }

    fn parse(&mut self, body: &[u8]) -> Result<Option<()>, String> {
        let mut body = Body(body);
        let (Some(name), Some(text)) = (body.string(), body.string()) else {
            return Ok(None);
        };
        let Some(types) = body.u16().filter(|&n| body.bytes(4 * n).is_some()) else {
            return Ok(None);
        };
        if body.end().is_none() {
            return Ok(None);
        }
        if contains_secret(text) {
            return Err(leak("Parse", text));
        }
        if !name.is_empty() && self.statements.contains_key(name) {
            return Ok(None);
        }
        let template = TEMPLATES.iter().find(|t| t.sql.as_bytes() == text);
        // The server counts the parameters declared and those used.
        let shape = template.map_or((types, &[][..]), |t| (t.params.max(types), t.protected));
        self.statements.insert(name.to_vec(), shape);
        Ok(Some(()))
    }

    fn bind(&mut self, body: &[u8]) -> Result<Option<()>, String> {
        let mut body = Body(body);
        let (Some(_portal), Some(name)) = (body.string(), body.string()) else {
            return Ok(None);
        };
        let Some(formats) = body.u16() else {
            return Ok(None);
        };
        if body.bytes(2 * formats).is_none() {
            return Ok(None);
        }
        let Some(count) = body.u16() else {
            return Ok(None);
        };
        let Some(&(params, protected)) = self.statements.get(name) else {
            return Ok(None);
        };
        if formats > 1 && formats != count || count != params {
            return Ok(None);
        }
        let mut values = Vec::new();
        for _ in 0..count {
            let value = match body.i32() {
                Some(-1) => None,
                Some(len) if len >= 0 => match body.bytes(len as usize) {
                    Some(value) => Some(value),
                    None => return Ok(None),
                },
                _ => return Ok(None),
            };
            values.push(value);
        }
        let results = body.u16().and_then(|n| body.bytes(2 * n));
        if results.is_none() || body.end().is_none() {
            return Ok(None);
        }
        for &n in protected {
            if let Some(value) = values[n - 1].filter(|v| contains_secret(v)) {
                return Err(leak(&format!("Bind parameter ${n}"), value));
            }
        }
        Ok(Some(()))
    }

    fn close(&mut self, body: &[u8]) -> Option<()> {
        let mut body = Body(body);
        let kind = body.bytes(1)?[0];
        let name = body.string()?;
        body.end()?;
        match kind {
            b'S' => {
                self.statements.remove(name);
                Some(())
            }
            b'P' => Some(()),
            _ => None,
        }
    }
}

fn contains_secret(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"SECRET")
}

fn leak(what: &str, bytes: &[u8]) -> String {
    format!(
        "the server runs a marked value in {what}: {:?}",
        String::from_utf8_lossy(bytes)
    )
}

/// A client message, as generated.
#[derive(Clone, Debug)]
enum Message {
    Query(&'static str),
    Parse {
        name: String,
        template: usize,
        types: Vec<u32>,
    },
    Bind {
        statement: String,
        /// For the template's parameters: marked where protected.
        template: usize,
        binary: bool,
        formats: Option<i16>,
        count: Option<i16>,
    },
    Execute,
    Sync,
    Flush,
    Describe(String),
    Close(u8, String),
    CopyData(Vec<u8>),
    CopyDone,
    CopyFail,
    FunctionCall(u32),
    Terminate,
}

impl Message {
    fn tag_and_body(&self) -> (u8, Vec<u8>) {
        let cstr = |s: &str| [s.as_bytes(), b"\0"].concat();
        match self {
            Message::Query(sql) => (b'Q', cstr(sql)),
            Message::Parse {
                name,
                template,
                types,
            } => {
                let mut body = cstr(name);
                body.extend(cstr(TEMPLATES[*template].sql));
                body.extend((types.len() as u16).to_be_bytes());
                for t in types {
                    body.extend(t.to_be_bytes());
                }
                (b'P', body)
            }
            Message::Bind {
                statement,
                template,
                binary,
                formats,
                count,
            } => {
                let template = &TEMPLATES[*template];
                let mut body = cstr("");
                body.extend(cstr(statement));
                let format = i16::from(*binary);
                body.extend(formats.unwrap_or(1).to_be_bytes());
                if formats.is_none() {
                    body.extend(format.to_be_bytes());
                }
                body.extend(count.unwrap_or(template.params as i16).to_be_bytes());
                for n in 1..=template.params {
                    let value = match (template.protected.contains(&n), template.sql) {
                        (true, sql) if sql.contains("ANY") => format!("{{SECRET-a{n},b}}"),
                        (true, _) => format!("SECRET-b{n}"),
                        (false, _) => format!("plain{n}"),
                    };
                    body.extend((value.len() as i32).to_be_bytes());
                    body.extend(value.as_bytes());
                }
                body.extend(0u16.to_be_bytes());
                (b'B', body)
            }
            Message::Execute => (b'E', vec![0, 0, 0, 0, 0]),
            Message::Sync => (b'S', Vec::new()),
            Message::Flush => (b'H', Vec::new()),
            Message::Describe(name) => (b'D', [&b"S"[..], &cstr(name)].concat()),
            Message::Close(kind, name) => (b'C', [&[*kind][..], &cstr(name)].concat()),
            Message::CopyData(data) => (b'd', data.clone()),
            Message::CopyDone => (b'c', Vec::new()),
            Message::CopyFail => (b'f', cstr("stop")),
            Message::FunctionCall(oid) => {
                let mut body = oid.to_be_bytes().to_vec();
                body.extend([0, 0, 0, 0, 0, 0]);
                (b'F', body)
            }
            Message::Terminate => (b'X', Vec::new()),
        }
    }
}

/// How a message's body is damaged; its length word then counts the
/// damaged body, unless [`Damage::Length`] sets it.
#[derive(Clone, Debug)]
enum Damage {
    Truncate(usize),
    Append(Vec<u8>),
    Patch(usize, Vec<u8>),
    Length(i32),
}

fn message() -> impl Strategy<Value = Message> {
    let name = || select(vec!["", "s1", "s2", "s3"]).prop_map(str::to_owned);
    let template = 0..TEMPLATES.len();
    prop_oneof![
        2 => select(QUERIES).prop_map(Message::Query),
        3 => (name(), template.clone(), prop::collection::vec(select(vec![0u32, 25, 23]), 0..3))
            .prop_map(|(name, template, types)| Message::Parse { name, template, types }),
        4 => (
            name(),
            template,
            any::<bool>(),
            prop::option::weighted(0.2, any::<i16>()),
            prop::option::weighted(0.2, any::<i16>()),
        )
            .prop_map(|(statement, template, binary, formats, count)| Message::Bind {
                statement,
                template,
                binary,
                formats,
                count,
            }),
        2 => Just(Message::Execute),
        3 => Just(Message::Sync),
        1 => Just(Message::Flush),
        1 => name().prop_map(Message::Describe),
        1 => (select(vec![b'S', b'P', b'x']), name())
            .prop_map(move |(kind, name)| Message::Close(kind, name)),
        2 => select(vec![&b"SECRET-c1\tx\n"[..], b"SECRET-c2\\\t", b"a\tb\n\\.\n", b"SECRET-c3"])
            .prop_map(|d| Message::CopyData(d.to_vec())),
        1 => Just(Message::CopyDone),
        1 => Just(Message::CopyFail),
        1 => select(vec![2078u32, 1242, 0]).prop_map(Message::FunctionCall),
        1 => Just(Message::Terminate),
    ]
}

fn damage(lengths: bool) -> impl Strategy<Value = Damage> {
    let length = if lengths { 1 } else { 0 };
    prop_oneof![
        2 => (0..64usize).prop_map(Damage::Truncate),
        2 => prop::collection::vec(any::<u8>(), 1..6).prop_map(Damage::Append),
        3 => (0..48usize, prop::collection::vec(
            select(vec![0u8, 0xff, 0x7f, 0x80, 1, 2, b'S', b'\\']), 1..4))
            .prop_map(|(at, bytes)| Damage::Patch(at, bytes)),
        length => prop_oneof![
            any::<i32>(),
            Just(i32::MAX),
            Just(0x3fff_ffff),
            Just(3),
            Just(-1),
            0..40i32,
        ]
        .prop_map(Damage::Length),
    ]
}

/// Messages with some damaged, as bytes: statements parsed again under
/// their name, Parses and Closes damaged too (see `crate::session::ledger::parsed`).
fn stream(lengths: bool) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (message(), prop::option::weighted(0.25, damage(lengths))),
        1..24,
    )
    .prop_map(move |messages| {
        let mut bytes = Vec::new();
        for (message, damage) in messages {
            let (tag, mut body) = message.tag_and_body();
            let mut length = None;
            match damage {
                Some(Damage::Truncate(n)) => body.truncate(n),
                Some(Damage::Append(more)) => body.extend(more),
                // A text changed in place may name another column: the
                // client's to write as it likes.
                Some(Damage::Patch(..)) if matches!(tag, b'Q' | b'P') => {}
                Some(Damage::Patch(at, patch)) => {
                    for (i, b) in patch.into_iter().enumerate() {
                        if let Some(byte) = body.get_mut(at + i) {
                            *byte = b;
                        }
                    }
                }
                Some(Damage::Length(len)) => length = Some(len),
                None => {}
            }
            bytes.push(tag);
            let len = length.unwrap_or(body.len() as i32 + 4);
            bytes.extend(len.to_be_bytes());
            bytes.extend(body);
        }
        bytes
    })
}

fn reads() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1..8usize, 8..64usize, Just(1 << 20)], 1..6)
}

/// pgveil sends whole, well-framed messages, and stops where the input's
/// framing breaks, not before.
fn check_framing(input: &[u8], reads: &[usize]) -> Result<(), TestCaseError> {
    let (sent, failed) = relay(input, reads);
    let (_, input_broken) = frames(input);
    prop_assert_eq!(failed, input_broken, "framing error reported");
    let (whole, broken) = frames(&sent);
    prop_assert!(!broken, "pgveil sent a broken header");
    let framed: usize = whole.iter().map(|(_, body)| body.len() + 5).sum();
    if framed != sent.len() {
        // Only a message still arriving may be cut, and only if forwarded
        // as it came: its header is whole and valid.
        let tail = &sent[framed..];
        prop_assert!(tail.len() < 5 || check_header(Side::Frontend, &tail[..5]).is_ok());
    }
    Ok(())
}

fn check_secrets(input: &[u8], reads: &[usize]) -> Result<(), TestCaseError> {
    let (sent, _) = relay(input, reads);
    let (frames, _) = frames(&sent);
    if let Err(leak) = Server::default().run(&frames) {
        return Err(TestCaseError::fail(format!(
            "{leak}\ninput: {:?}\nsent: {:?}",
            String::from_utf8_lossy(input),
            String::from_utf8_lossy(&sent)
        )));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_bytes_are_framed_without_panic(
        input in prop::collection::vec(
            prop_oneof![any::<u8>(), select(b"QPBESHCDdcfFX\0\x00\x00\x00\x04".to_vec())],
            0..200,
        ),
        reads in reads(),
    ) {
        check_framing(&input, &reads)?;
    }

    #[test]
    fn damaged_streams_are_framed_without_panic(
        input in stream(true),
        reads in reads(),
    ) {
        check_framing(&input, &reads)?;
    }

    #[test]
    fn damaged_messages_never_send_a_protected_value(
        input in stream(false),
        reads in reads(),
    ) {
        check_secrets(&input, &reads)?;
    }
}

/// The bytes of `messages`, undamaged.
fn bytes_of(messages: &[Message]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| {
            let (tag, body) = m.tag_and_body();
            [
                vec![tag],
                (body.len() as i32 + 4).to_be_bytes().to_vec(),
                body,
            ]
            .concat()
        })
        .collect()
}

fn parse(name: &str, template: usize) -> Message {
    Message::Parse {
        name: name.into(),
        template,
        types: Vec::new(),
    }
}

fn bind(statement: &str, template: usize) -> Message {
    Message::Bind {
        statement: statement.into(),
        template,
        binary: false,
        formats: None,
        count: None,
    }
}

#[test]
fn slots_follow_the_server_when_a_name_is_parsed_again() {
    // s1 writes $1 to email; parsing s1 again fails on the server
    // (42P05, the statement exists) but pgveil forgets s1's slots, so the
    // next Bind of s1 sends $1 in plaintext.
    let input = bytes_of(&[
        parse("s1", 0),
        Message::Sync,
        parse("s1", 5),
        Message::Sync,
        bind("s1", 0),
        Message::Execute,
        Message::Sync,
    ]);
    check_secrets(&input, &[1 << 20]).unwrap();
}

#[test]
fn slots_follow_the_server_when_a_parse_is_malformed() {
    // The unnamed statement writes $1 to email. A second unnamed Parse
    // with a byte after its parameter types is rejected by the server
    // before it drops the unnamed statement (08P01, invalid message
    // format); pgveil reads it and takes its slots (none).
    let mut input = bytes_of(&[parse("", 0), Message::Sync]);
    let (tag, mut body) = parse("", 5).tag_and_body();
    body.push(0);
    input.push(tag);
    input.extend((body.len() as i32 + 4).to_be_bytes());
    input.extend(body);
    input.extend(bytes_of(&[
        Message::Sync,
        bind("", 0),
        Message::Execute,
        Message::Sync,
    ]));
    check_secrets(&input, &[1 << 20]).unwrap();
}

#[test]
fn slots_follow_the_server_when_a_close_is_malformed() {
    // Close of s1 with a byte after its name: the server rejects it
    // (08P01) and keeps s1; pgveil forgets its slots.
    let mut input = bytes_of(&[parse("s1", 0), Message::Sync]);
    input.extend(b"C\0\0\0\x09Ss1\0\0");
    input.extend(bytes_of(&[
        Message::Sync,
        bind("s1", 0),
        Message::Execute,
        Message::Sync,
    ]));
    check_secrets(&input, &[1 << 20]).unwrap();
}

#[test]
fn bind_counts_are_read_as_postgresql_reads_them() {
    // A Bind with 32768 parameter format codes (0x8000): PostgreSQL
    // reads the count unsigned (pq_getmsgint), pgveil as an i16, -32768,
    // so as no format codes, and the first code as a parameter count of
    // 0: it encrypts nothing and forwards the message as it came, while
    // the server reads 32768 codes and 32768 parameters, the first for
    // email, in plaintext.
    let types = vec![25u32; 32768];
    let mut input = bytes_of(&[Message::Parse {
        name: "s1".into(),
        template: 0,
        types,
    }]);
    let mut body = b"\0s1\0".to_vec();
    body.extend(0x8000u16.to_be_bytes());
    body.extend(vec![0u8; 2 * 32768]);
    body.extend(0x8000u16.to_be_bytes());
    for n in 0..32768 {
        let value: &[u8] = if n == 0 { b"SECRET-b1" } else { b"x" };
        body.extend((value.len() as i32).to_be_bytes());
        body.extend(value);
    }
    body.extend(0u16.to_be_bytes());
    input.push(b'B');
    input.extend((body.len() as i32 + 4).to_be_bytes());
    input.extend(body);
    input.extend(bytes_of(&[Message::Execute, Message::Sync]));
    check_secrets(&input, &[1 << 20]).unwrap();
}
