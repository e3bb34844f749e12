//! Reveals protected values in results, as the policy allows the reader.
//!
//! Every field of every `DataRow` is checked for pgveil's ciphertext (a
//! prefix comparison; see `crypto::looks_encrypted_text`). This finds
//! protected values wherever they appear: plain column references, aliases,
//! views, `COALESCE`, `UNION`, CTEs, cursors, `RETURNING`, and prepared
//! statements whose rows arrive without a new RowDescription. The
//! ciphertext names its key, the key its domain, the domain its columns,
//! and the columns' rules decide: plaintext, a mask, a pseudonym, NULL, or
//! an error. A row with no ciphertext is forwarded untouched and uncopied.
//! A value that looks like ciphertext but does not decrypt is forwarded as
//! it is: still ciphertext, never plaintext.

use std::sync::atomic::Ordering;

use bytes::{BufMut, Bytes, BytesMut};
use tracing::warn;

use crate::copy_out;
use crate::crypto::{self, Envelope};
use crate::declared::Values;
use crate::encoding::ClientEncoding;
use crate::encrypt::Shared;
use crate::policy::Action;
use crate::protocol::reply::{self, Severity};
use crate::relay::Tap;
use crate::rewrite::CopyOptions;
use crate::trail::{command_tag, tag_rows, Trail};
use crate::veil::Veil;

/// SQLSTATE for a value the reader may not see: `insufficient_privilege`.
const DENIED: &str = "42501";

/// What a reader gets in place of one value.
pub enum Revealed {
    /// The value as it is (not pgveil's ciphertext, or not decryptable).
    Keep,
    /// This, in the reader's encoding.
    Value(Vec<u8>),
    Null,
    /// Access denied by the policy of this column.
    Denied(String),
}

/// The reader's identity, as the policy sees it, and its encoding.
pub struct Reader<'a> {
    pub roles: &'a [String],
    pub purpose: Option<&'a str>,
    pub encoding: ClientEncoding,
    /// Where reads of protected columns are noted, with audit on.
    pub trail: Option<&'a Trail>,
}

/// The server-to-client tap. Without a policy it only notes FATAL errors.
/// With one it reveals rows, follows transaction ends for the session's
/// declarations, and tidies the errors of pgveil's refusals.
pub struct ServerTap<'a> {
    veil: Option<&'a Veil>,
    shared: &'a Shared,
    roles: &'a [String],
    /// After a denied value: drop the rest of the result up to ReadyForQuery.
    skipping: bool,
    /// ParseComplete/BindComplete held while a refusal is pending: the
    /// last two are the refusal statement's own, not the client's.
    held: Vec<Bytes>,
    /// The options of the COPY TO whose data is flowing, if known.
    copy_out: Option<CopyOptions>,
    /// The session's audit trail, with audit on.
    trail: Option<&'a Trail>,
}

impl<'a> ServerTap<'a> {
    pub fn new(
        veil: Option<&'a Veil>,
        shared: &'a Shared,
        roles: &'a [String],
        trail: Option<&'a Trail>,
    ) -> Self {
        Self {
            veil,
            shared,
            roles,
            trail,
            skipping: false,
            held: Vec::new(),
            copy_out: None,
        }
    }

    /// Runs `f` with the session's reader. The declarations' lock is held
    /// only inside `f`.
    fn with_reader<R>(&self, f: impl FnOnce(&Reader<'_>) -> R) -> R {
        let declared = self.shared.declared();
        f(&Reader {
            roles: self.roles,
            purpose: declared.current().purpose.as_deref(),
            encoding: self.shared.encoding(),
            trail: self.trail,
        })
    }

    fn copy_row(&mut self, veil: &Veil, options: &CopyOptions, frame: Bytes, out: &mut Vec<Bytes>) {
        match self.with_reader(|reader| copy_out::reveal_row(veil, reader, options, &frame[5..])) {
            Ok(None) => out.push(frame),
            Ok(Some(row)) => out.push(reply::frame_of(b'd', &row)),
            Err(column) => {
                out.push(denied(&column));
                self.deny();
            }
        }
    }

    fn row(&mut self, veil: &Veil, frame: Bytes, out: &mut Vec<Bytes>) {
        if !has_ciphertext(&frame) {
            // Most rows: no lock, no copy.
            return out.push(frame);
        }
        match self.with_reader(|reader| data_row(veil, reader, frame)) {
            Ok(row) => out.push(row),
            Err(denied) => {
                out.push(denied);
                self.deny();
            }
        }
    }

    /// A value was denied: the statement fails with 42501, and the rest of
    /// the server's answer up to ReadyForQuery is dropped.
    fn deny(&mut self) {
        self.skipping = true;
        if let Some(trail) = self.trail {
            trail.failed(DENIED.as_bytes(), &self.declared());
        }
    }

    fn declared(&self) -> Values {
        self.shared.declared().current().clone()
    }

    /// Tells the audit trail how the server answers.
    fn audit(&self, trail: &Trail, tag: u8, frame: &[u8]) {
        match tag {
            b'C' => trail.completed(tag_rows(frame), &self.declared()),
            b'I' | b's' => trail.completed(0, &self.declared()),
            b'E' => trail.failed(
                reply::error_field(frame, b'C').unwrap_or_default(),
                &self.declared(),
            ),
            b'Z' => trail.ready(&self.declared()),
            _ => {}
        }
    }

    fn error(&mut self, frame: Bytes, out: &mut Vec<Bytes>) {
        let marker = self.veil.map(Veil::refusal_marker);
        let ours = marker.is_some_and(|m| reply::error_field(&frame, b's') == Some(m.as_bytes()));
        if !ours {
            if matches!(reply::error_field(&frame, b'V'), Some(b"FATAL" | b"PANIC")) {
                self.shared.server_fatal.store(true, Ordering::Relaxed);
            }
            out.append(&mut self.held);
            return out.push(frame);
        }
        if self.held.len() >= 2 && self.shared.pending_refusals.load(Ordering::Relaxed) > 0 {
            self.held.truncate(self.held.len() - 2);
            self.shared.pending_refusals.fetch_sub(1, Ordering::Relaxed);
        }
        out.append(&mut self.held);
        out.push(refusal_error(&frame));
    }

    /// Tells the declarations how the server answers: they follow the
    /// server, whatever the client is shown.
    fn track(&self, tag: u8, frame: &[u8]) {
        if self.veil.is_none() {
            return;
        }
        let mut declared = self.shared.declared();
        match tag {
            b'C' => declared.completed(command_tag(frame)),
            b'I' | b's' => declared.completed(b""),
            b'E' => declared.failed(),
            b'G' => declared.copy_started(),
            b'Z' => declared.ready(frame.get(5).copied().unwrap_or(b'I')),
            _ => {}
        }
    }

    /// ReadyForQuery: the Query or batch is answered.
    fn ready(&mut self, frame: &[u8]) {
        self.track(b'Z', frame);
        // A COPY TO that failed before its data never started.
        self.copy_out = None;
        self.shared
            .copy_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Tap for ServerTap<'_> {
    fn wants(&self, tag: u8) -> bool {
        if tag == b'E' || self.skipping || !self.held.is_empty() {
            return true;
        }
        if self.trail.is_some() && matches!(tag, b'C' | b'I' | b's' | b'Z') {
            return true;
        }
        self.veil.is_some()
            && match tag {
                b'D' | b'Z' | b'S' | b'H' | b'C' | b'I' | b's' | b'G' => true,
                b'd' | b'c' => self.copy_out.is_some(),
                b'1' | b'2' => self.shared.pending_refusals.load(Ordering::Relaxed) > 0,
                _ => false,
            }
    }

    fn see(&mut self, tag: u8, frame: Bytes, out: &mut Vec<Bytes>) {
        if tag != b'Z' {
            self.track(tag, &frame);
        }
        if self.skipping {
            self.skipping = tag != b'Z';
            if tag == b'Z' {
                if let Some(trail) = self.trail {
                    self.audit(trail, tag, &frame);
                }
                self.ready(&frame);
                out.push(frame);
            }
            return;
        }
        if let Some(trail) = self.trail {
            self.audit(trail, tag, &frame);
        }
        match (tag, self.veil) {
            (b'E', _) => self.error(frame, out),
            (b'1' | b'2', _) if self.shared.pending_refusals.load(Ordering::Relaxed) > 0 => {
                self.held.push(frame)
            }
            (b'D', Some(veil)) => {
                out.append(&mut self.held);
                self.row(veil, frame, out)
            }
            (b'H', Some(_)) => {
                self.copy_out = self.shared.next_copy_out();
                out.push(frame)
            }
            (b'd', Some(veil)) => match self.copy_out.take() {
                Some(options) => {
                    self.copy_row(veil, &options, frame, out);
                    self.copy_out = Some(options);
                }
                None => out.push(frame),
            },
            (b'c', _) => {
                self.copy_out = None;
                out.push(frame)
            }
            (b'S', Some(_)) => {
                out.append(&mut self.held);
                self.parameter_status(&frame);
                out.push(frame)
            }
            (b'Z', Some(_)) => {
                out.append(&mut self.held);
                self.ready(&frame);
                out.push(frame)
            }
            _ => {
                out.append(&mut self.held);
                out.push(frame)
            }
        }
    }
}

impl ServerTap<'_> {
    /// Follows `client_encoding` as the server reports it.
    fn parameter_status(&self, frame: &[u8]) {
        if let Some(name) = client_encoding(frame) {
            *self
                .shared
                .encoding
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = ClientEncoding::from_pg_name(name);
        }
    }
}

/// The value of a ParameterStatus frame for `client_encoding`.
pub fn client_encoding(frame: &[u8]) -> Option<&str> {
    let value = frame.get(5..)?.strip_prefix(b"client_encoding\0")?;
    let end = value.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&value[..end]).ok()
}

/// pgveil's refusal as the client should see it: severity, SQLSTATE and
/// message, without the marker and the PL/pgSQL context of the statement
/// that raised it.
fn refusal_error(frame: &[u8]) -> Bytes {
    let field =
        |code| reply::error_field(frame, code).map(|v| String::from_utf8_lossy(v).into_owned());
    let code = field(b'C').unwrap_or_else(|| "XX000".into());
    let message = field(b'M').unwrap_or_default();
    reply::error(Severity::Error, &code, &message)
}

/// The error a reader gets for a value the policy denies it.
pub fn denied(column: &str) -> Bytes {
    let message = format!("pgveil: access to column {column} is denied by policy");
    reply::error(Severity::Error, DENIED, &message)
}

/// Rewrites one DataRow frame for `reader`. `Err` carries the ErrorResponse
/// to send instead when a value is denied.
pub fn data_row(veil: &Veil, reader: &Reader<'_>, frame: Bytes) -> Result<Bytes, Bytes> {
    if !has_ciphertext(&frame) {
        return Ok(frame);
    }
    let fields: Vec<Option<&[u8]>> = Fields::of(&frame).collect();
    if fields.len() != Fields::count(&frame) {
        return Ok(frame);
    }
    let mut body = BytesMut::with_capacity(frame.len());
    body.put_u16(fields.len() as u16);
    for field in &fields {
        match field.map_or(Revealed::Keep, |value| reveal_value(veil, reader, value)) {
            Revealed::Keep => put_field(&mut body, *field),
            Revealed::Value(value) => put_field(&mut body, Some(&value)),
            Revealed::Null => put_field(&mut body, None),
            Revealed::Denied(column) => {
                return Err(denied(&column));
            }
        }
    }
    Ok(reply::frame_of(b'D', &body))
}

/// Whether any field of a DataRow frame looks like pgveil's ciphertext.
fn has_ciphertext(frame: &[u8]) -> bool {
    Fields::of(frame).flatten().any(looks_encrypted)
}

fn looks_encrypted(field: &[u8]) -> bool {
    crypto::looks_encrypted_text(field) || field.starts_with(crypto::MAGIC)
}

/// What `reader` may see of one value.
pub fn reveal_value(veil: &Veil, reader: &Reader<'_>, value: &[u8]) -> Revealed {
    let Some(envelope) = parse(value) else {
        return Revealed::Keep;
    };
    let Some((action, column)) = veil.decide(envelope.key_ref(), reader.roles, reader.purpose)
    else {
        return Revealed::Keep;
    };
    let note = |action| {
        if let Some(trail) = reader.trail {
            trail.read(column.qualified_name(), action);
        }
    };
    let domain = column.domain.as_str();
    let plaintext = match action {
        Action::Null => {
            note(Some(action));
            return Revealed::Null;
        }
        Action::Deny => {
            note(Some(action));
            return Revealed::Denied(column.qualified_name());
        }
        _ => match veil.keyring.decrypt(domain, envelope) {
            Ok(plaintext) => plaintext,
            Err(e) => {
                warn!(column = %column.qualified_name(), "ciphertext does not decrypt: {e}");
                note(None);
                return Revealed::Keep;
            }
        },
    };
    if action == Action::Plaintext && reader.trail.is_some_and(Trail::blocked) {
        note(Some(Action::Deny));
        return Revealed::Denied(column.qualified_name());
    }
    note(Some(action));
    let text = String::from_utf8_lossy(&plaintext);
    match action {
        Action::Plaintext => Revealed::Value(reader.encoding.encode(&text).into_owned()),
        Action::Masked => {
            let masked = column.mask.apply(&text);
            Revealed::Value(reader.encoding.encode(&masked).into_owned())
        }
        Action::Pseudonym => match veil.keyring.pseudonym(domain, &plaintext) {
            Ok(token) => Revealed::Value(token.into_bytes()),
            Err(_) => Revealed::Null,
        },
        Action::Null | Action::Deny => unreachable!("handled before decryption"),
    }
}

fn parse(value: &[u8]) -> Option<Envelope> {
    let parsed = if value.starts_with(crypto::MAGIC) {
        crypto::parse_bytes(value)
    } else {
        crypto::parse_text(value)
    };
    parsed.ok().flatten()
}

/// The fields of a DataRow frame, `None` for SQL NULL. A malformed frame
/// ends the iteration early; it is then passed on as PostgreSQL wrote it,
/// for the client to judge.
pub struct Fields<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Fields<'a> {
    pub fn of(frame: &'a [u8]) -> Self {
        Fields {
            rest: frame.get(7..).unwrap_or_default(),
            left: Self::count(frame),
        }
    }

    /// The field count the frame announces.
    fn count(frame: &[u8]) -> usize {
        frame
            .get(5..7)
            .map_or(0, |n| u16::from_be_bytes([n[0], n[1]]) as usize)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let (len, tail) = self.rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        self.left -= 1;
        if len < 0 {
            self.rest = tail;
            return Some(None);
        }
        let (value, tail) = tail.split_at_checked(len as usize)?;
        self.rest = tail;
        Some(Some(value))
    }
}

fn put_field(body: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(value) => {
            body.put_i32(value.len() as i32);
            body.put_slice(value);
        }
        None => body.put_i32(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::keyring::Keyring;
    use crate::policy::Policy;
    use crate::rewrite::Encryptor;

    const POLICY: &str = r#"
[[column]]
table = "t"
column = "secret"
reveal = { reader = "plaintext", masker = "masked" }
default = "deny"
"#;

    fn veil() -> Veil {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        let policy = Policy::from_str("t.toml", POLICY).unwrap();
        let (master, _) = MasterKey::generate().unwrap();
        Keyring::init(&path, &master, &policy.domains()).unwrap();
        Veil::new(policy, Keyring::load(&path, &master).unwrap())
    }

    fn row(fields: &[Option<&[u8]>]) -> Bytes {
        let mut body = BytesMut::new();
        body.put_u16(fields.len() as u16);
        for field in fields {
            put_field(&mut body, *field);
        }
        reply::frame_of(b'D', &body)
    }

    fn read(veil: &Veil, roles: &[&str], frame: Bytes) -> Result<Vec<Option<Vec<u8>>>, Bytes> {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let reader = Reader {
            roles: &roles,
            purpose: None,
            encoding: ClientEncoding::default(),
            trail: None,
        };
        let out = data_row(veil, &reader, frame)?;
        Ok(Fields::of(&out).map(|f| f.map(<[u8]>::to_vec)).collect())
    }

    #[test]
    fn each_action_and_untouched_rows() {
        let veil = veil();
        let column = veil.policy.column("public", "t", "secret").unwrap();
        let ciphertext = veil.encrypt(column, "top secret").unwrap();
        let frame = row(&[Some(b"plain"), None, Some(ciphertext.as_bytes())]);
        let plain = read(&veil, &["reader"], frame.clone()).unwrap();
        assert_eq!(
            plain,
            vec![Some(b"plain".to_vec()), None, Some(b"top secret".to_vec())]
        );
        let masked = read(&veil, &["masker"], frame.clone()).unwrap();
        assert_eq!(
            masked[2],
            Some(column.mask.apply("top secret").into_bytes())
        );
        let denied = read(&veil, &["nobody"], frame).unwrap_err();
        assert_eq!(reply::error_field(&denied, b'C'), Some(&b"42501"[..]));
        let message = reply::error_field(&denied, b'M').unwrap();
        assert!(String::from_utf8_lossy(message).contains("public.t.secret"));
        // A row without ciphertext is passed on as the same bytes.
        let untouched = row(&[Some(b"a"), Some(b"pgv1")]);
        let reader = Reader {
            roles: &[],
            purpose: None,
            encoding: ClientEncoding::default(),
            trail: None,
        };
        assert_eq!(
            data_row(&veil, &reader, untouched.clone()).unwrap(),
            untouched
        );
    }

    #[test]
    fn forged_or_damaged_ciphertext_is_passed_on_not_decrypted() {
        let veil = veil();
        let column = veil.policy.column("public", "t", "secret").unwrap();
        let mut ciphertext = veil.encrypt(column, "top secret").unwrap().into_bytes();
        let last = ciphertext.len() - 1;
        ciphertext[last] = if ciphertext[last] == b'A' { b'B' } else { b'A' };
        let out = read(&veil, &["reader"], row(&[Some(&ciphertext)])).unwrap();
        assert_eq!(out, vec![Some(ciphertext)]);
        let forged = b"pgv1:not-really".to_vec();
        assert_eq!(
            read(&veil, &["reader"], row(&[Some(&forged)])).unwrap(),
            vec![Some(forged)]
        );
    }
}
