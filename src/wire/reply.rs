//! Messages pgveil writes itself rather than relays.
//!
//! Errors are encoded with pgwire's message types. Their text never quotes
//! client data: a message names what was wrong, not the values involved.

use bytes::{Bytes, BytesMut};
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::Message;

use crate::wire::tags::{backend, error_field};

/// Severity of an error pgveil raises.
#[derive(Clone, Copy, Debug)]
pub enum Severity {
    /// The statement fails; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// The one-byte answer refusing SSLRequest and GSSENCRequest.
pub(crate) const REFUSE_ENCRYPTION: &[u8] = b"N";

/// The one-byte answer accepting an SSLRequest: the TLS handshake follows.
pub(crate) const ACCEPT_ENCRYPTION: &[u8] = b"S";

/// Encodes an ErrorResponse.
pub fn error(severity: Severity, code: &str, message: &str) -> Bytes {
    let fields = vec![
        (error_field::SEVERITY, severity.as_str().to_owned()),
        (
            error_field::SEVERITY_NONLOCALIZED,
            severity.as_str().to_owned(),
        ),
        (error_field::CODE, code.to_owned()),
        (error_field::MESSAGE, message.to_owned()),
    ];
    let mut buf = BytesMut::new();
    ErrorResponse::new(fields)
        .encode(&mut buf)
        .expect("an error message is far below the length limit");
    buf.freeze()
}

/// A field of an ErrorResponse or NoticeResponse frame, such as `b'C'`
/// (SQLSTATE) or `b'V'` (severity, not localized).
pub fn error_field(frame: &[u8], code: u8) -> Option<&[u8]> {
    frame
        .get(5..)?
        .split(|&b| b == 0)
        .take_while(|field| !field.is_empty())
        .find_map(|field| (field[0] == code).then(|| &field[1..]))
}

/// An ErrorResponse or NoticeResponse frame with only the fields whose
/// codes are in `keep`, in their order.
pub(crate) fn keep_fields(frame: &[u8], keep: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(frame.len());
    let fields = frame.get(5..).unwrap_or_default().split(|&b| b == 0);
    for field in fields.take_while(|field| !field.is_empty()) {
        if keep.contains(&field[0]) {
            body.extend_from_slice(field);
            body.push(0);
        }
    }
    body.push(0);
    frame_of(frame[0], &body)
}

const SASL_REQUEST: i32 = 10;

/// If `frame` is an AuthenticationSASL request, returns it with the
/// `-PLUS` (channel binding) mechanisms removed: channel binding ties
/// SCRAM to the TLS session, and a proxy sits between two sessions.
pub(crate) fn strip_channel_binding(frame: &[u8]) -> Option<Bytes> {
    let code = i32::from_be_bytes(frame.get(5..9)?.try_into().ok()?);
    if frame[0] != backend::AUTHENTICATION || code != SASL_REQUEST {
        return None;
    }
    let mut body = BytesMut::new();
    body.extend_from_slice(&SASL_REQUEST.to_be_bytes());
    for mechanism in frame[9..].split(|&b| b == 0).filter(|m| !m.is_empty()) {
        if !mechanism.ends_with(b"-PLUS") {
            body.extend_from_slice(mechanism);
            body.extend_from_slice(b"\0");
        }
    }
    body.extend_from_slice(b"\0");
    Some(frame_of(backend::AUTHENTICATION, &body))
}

/// Whether `frame`, a SASLInitialResponse (mechanism, length, data), opens
/// SCRAM with the gs2 flag `y`: "I support channel binding and think the
/// server does not". A server that does support it refuses such a login.
pub(crate) fn claims_channel_binding(frame: &[u8]) -> bool {
    let Some(body) = frame.get(5..) else {
        return false;
    };
    let Some(end) = body.iter().position(|&b| b == 0) else {
        return false;
    };
    // After the mechanism's name: the data's length (4 bytes), the data.
    body.get(end + 5) == Some(&b'y')
}

/// Wraps a body into a typed message.
pub fn frame_of(tag: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sqlstate;

    #[test]
    fn error_round_trips_its_severity() {
        let e = error(Severity::Fatal, sqlstate::PROTOCOL_VIOLATION, "bad");
        assert_eq!(e[0], b'E');
        assert_eq!(error_field(&e, b'V'), Some(&b"FATAL"[..]));
        assert_eq!(error_field(&e, b'C'), Some(&b"08P01"[..]));
    }

    #[test]
    fn keeps_only_the_fields_asked_for() {
        let mut body = Vec::new();
        for field in [
            "SERROR",
            "C23514",
            "Mviolates",
            "Dfailing row contains (x)",
            "npgveil_guard_email",
        ] {
            body.extend_from_slice(field.as_bytes());
            body.push(0);
        }
        body.push(0);
        let kept = keep_fields(&frame_of(b'E', &body), b"SCMn");
        assert_eq!(error_field(&kept, b'C'), Some(&b"23514"[..]));
        assert_eq!(error_field(&kept, b'n'), Some(&b"pgveil_guard_email"[..]));
        assert_eq!(error_field(&kept, b'D'), None);
        assert_eq!(
            kept.len(),
            5 + "SERROR C23514 Mviolates npgveil_guard_email ".len() + 1
        );
    }

    #[test]
    fn removes_plus_mechanisms() {
        let mut body = SASL_REQUEST.to_be_bytes().to_vec();
        body.extend_from_slice(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let out = strip_channel_binding(&frame_of(b'R', &body)).unwrap();
        let mut expected = SASL_REQUEST.to_be_bytes().to_vec();
        expected.extend_from_slice(b"SCRAM-SHA-256\0\0");
        assert_eq!(out, frame_of(b'R', &expected));
    }

    #[test]
    fn tells_a_scram_start_that_claims_channel_binding() {
        let initial = |data: &[u8]| {
            let mut body = b"SCRAM-SHA-256\0".to_vec();
            body.extend_from_slice(&(data.len() as i32).to_be_bytes());
            body.extend_from_slice(data);
            frame_of(b'p', &body)
        };
        assert!(claims_channel_binding(&initial(b"y,,n=,r=abc")));
        assert!(!claims_channel_binding(&initial(b"n,,n=,r=abc")));
        assert!(!claims_channel_binding(&initial(
            b"p=tls-server-end-point,,n=,r=a"
        )));
        assert!(!claims_channel_binding(&frame_of(b'p', b"password\0")));
        assert!(!claims_channel_binding(b"p"));
    }

    #[test]
    fn leaves_other_auth_requests_alone() {
        let md5 = frame_of(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
        assert!(strip_channel_binding(&md5).is_none());
    }
}
